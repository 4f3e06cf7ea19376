# Exercise 3 of 03-the-prev-roots-cache: MOV CR3 back to A after a CR0.WP toggle (5.19, shadow).
#
# Clearing CR0.WP changes a role bit, so kvm_post_set_cr0 calls kvm_mmu_reset_context, which
# starts with kvm_mmu_unload: the current root AND all three prev_roots of root_mmu and guest_mmu
# are freed.  Setting WP again does the same.  When the guest switches back to A the cache is
# empty: a miss.  A's shadow page is still in mmu_page_hash (root_count 0), so kvm_mmu_load finds
# it again at the VM entry, but the fast switch itself cannot.
answer_3 = "no"
