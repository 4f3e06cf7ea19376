# Exercise 1 of 04-the-cr0-wp-storm: 1,000 CR0.WP toggles on 5.10 with the TDP MMU, one vCPU.
#
# Every toggle changes CR0.WP, so kvm_set_cr0 calls kvm_mmu_reset_context, which unloads the
# only root.  It was the vCPU's last reference, so kvm_tdp_mmu_free_root zaps and frees the
# tree.  The MMU's new role differs in cr0_wp (5.10's TDP root role still carries it), so at
# the VM entry no root of that role exists and a new one is allocated.  One root per toggle:
answer_1 = 1000
