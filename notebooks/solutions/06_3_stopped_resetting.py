# Exercise 3 of 06-who-resets-the-mmu: which of Sean's numbered callers stopped resetting on 6.4?
#
# Number 7, kvm_post_set_cr0.  On 6.4 with EPT the guest owns CR0.WP, so clearing it does not
# exit at all (fb509f76acc8); with NPT it exits and kvm_post_set_cr0 calls kvm_init_mmu only
# (01b31714bd90).  The others (CR4 role bits, EFER, INIT, SMM, VM-Fail) still reset; on the TDP
# MMU the reset is merely cheap now.  (2, CPUID, stopped resetting a running guest in 5.17
# already, by refusing the change.)
answer_3 = 7
