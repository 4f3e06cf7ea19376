# Exercise 2 of 02-cpu-role-vs-root-role: under EPT in 5.19, does root_role.word change when the
# guest clears CR0.WP?
#
# kvm_calc_tdp_mmu_root_page_role sets cr0_wp = 1 and efer_nx = 1 in every TDP root role (#14),
# so the guest's WP only reaches cpu_role.base.cr0_wp.  The root role word stays 0x00003784 and
# the current EPT root still fits.  (In 5.18 the word went from 0x00003784 to 0x00001784.)
answer_2 = "yes"
