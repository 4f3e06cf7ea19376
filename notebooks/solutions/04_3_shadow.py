# Exercise 3 of 04-the-cr0-wp-storm: 6.4 without EPT (shadow paging), a WP-only toggle.
#
# The fast path of 01b31714bd90 is taken only when tdp_enabled.  Under shadow paging the shadow
# page entries encode the guest's WP (supervisor writes to read-only guest pages), so cr0_wp is
# part of the shadow root role and a toggle needs a root of the other role: kvm_post_set_cr0
# falls through to kvm_mmu_reset_context, as in every release before.
answer_3 = "yes"
