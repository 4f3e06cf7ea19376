# Exercise 3 of 08-check-your-kernel: KVM_SET_SREGS back to CR3 A, then a VM entry.
#
# __set_sregs_common sees CR3 change and calls kvm_mmu_reset_context, which unloads the current
# root and all prev_roots.  The next VM entry has no root, so kvm_mmu_load looks A's root up:
# a record, with created=false because A's root page is still in mmu_page_hash.  (The guest's
# own MOV CR3 to A would have hit prev_roots[0] and traced nothing.)
answer_3 = "yes"
