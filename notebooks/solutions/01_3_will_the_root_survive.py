# Exercise 3 of 01-what-is-a-role: after CR0.WP goes off and on again under shadow paging,
# is the old root page found again?
#
# With WP back on, kvm_calc_cpu_role and kvm_init_shadow_mmu compute the same root role word
# as before, 0x00003704, for the same gfn (CR3 did not change).  Dropping the vCPU's reference
# to a root does not free the shadow page: it stays in kvm->arch.mmu_page_hash, so the lookup
# by (gfn, role) finds it and the tracepoint says "existing".
answer_3 = "yes"
