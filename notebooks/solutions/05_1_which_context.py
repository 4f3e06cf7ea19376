# Exercise 1 of 05-nested-l1-l2: which context is loaded while L2 runs with nested EPT (5.19)?
#
# nested_ept_init_mmu_context sets vcpu->arch.mmu = &vcpu->arch.guest_mmu before setting it up
# as a shadow-EPT MMU (kvm_init_shadow_ept_mmu), and points walk_mmu at nested_mmu.  The roots
# loaded at VM entry are therefore guest_mmu's: the shadow of L1's EPT12 tables.
answer_1 = "guest_mmu"
