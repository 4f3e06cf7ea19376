# Exercise 2 of 01-what-is-a-role: which fields differ among the 5.19 role words that print
# as "l1 8-byte q0 direct wux nxe ad"?
#
# The tracepoint does not print cr0_wp, smep_andnot_wp, smap_andnot_wp, guest_mode,
# passthrough, is_mirror or smm.  For a TDP page in 5.19:
#   cr0_wp = 1 and efer_nx = 1 always (kvm_calc_tdp_mmu_root_page_role forces them);
#   smep_andnot_wp, smap_andnot_wp and passthrough are never set in a TDP role;
#   is_mirror does not exist before 6.14.
# What is left open is whether the vCPU was in SMM and whether it was running L2.
answer_2 = {"smm", "guest_mode"}
