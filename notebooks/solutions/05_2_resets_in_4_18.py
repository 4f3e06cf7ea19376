# Exercise 2 of 05-nested-l1-l2: kvm_mmu_reset_context calls per round trip in 4.18 (VMX, EPT).
#
# The VM exit to L1: nested_vmx_load_cr3(host CR3) calls kvm_mmu_reset_context (one).
# The VM entry into L2: nested_ept_init_mmu_context unloads the roots with kvm_mmu_unload (not a
# reset_context call) and re-initialises the single MMU as shadow EPT, then
# nested_vmx_load_cr3(L2's CR3) calls kvm_mmu_reset_context again (two).
answer_2 = 2
