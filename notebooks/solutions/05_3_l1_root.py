# Exercise 3 of 05-nested-l1-l2: is L1's root still root_mmu's current root while L2 runs (5.19)?
#
# Entering L2 with nested EPT only switches vcpu->arch.mmu to guest_mmu and sets guest_mmu up;
# nothing frees or moves root_mmu's roots.  L1's root stays root_mmu's current root, which is
# why the VM exit's fast switch (kvm_mmu_new_pgd on root_mmu) hits "the current root".
answer_3 = "yes"
