# Exercise 2 of 04-the-cr0-wp-storm: 6.4 on AMD (NPT, TDP MMU), the guest clears CR0.WP.
#
# fb509f76acc8 (guest-owned CR0.WP) is VMX-only: SVM can only intercept CR0 writes as a whole,
# so the write exits.  kvm_post_set_cr0 then sees that WP is the only changed bit and that
# tdp_enabled is true (01b31714bd90): it calls kvm_init_mmu to refresh the CPU role and the
# permission bitmasks, and returns without unloading anything.
answer_2 = "exit, then kvm_init_mmu only"
