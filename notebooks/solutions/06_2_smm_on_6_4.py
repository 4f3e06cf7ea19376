# Exercise 2 of 06-who-resets-the-mmu: does an SMI tear down a TDP MMU tree on 6.4?
#
# The SMI still calls kvm_mmu_reset_context (twice: kvm_smm_changed and enter_smm), which drops
# the vCPU's reference to its root.  Before 6.4 that was the last reference and the tree went
# (5.10-5.17 on the vCPU's path, 5.18-6.3 in a worker).  Since edbdb43fc96b ("Preserve TDP MMU
# roots until they are explicitly invalidated") a new root starts with a second reference held
# by the TDP MMU itself, so the root survives and the VM entry in SMM allocates the SMM root;
# after RSM, the non-SMM root is found again by role.
answer_2 = "no"
