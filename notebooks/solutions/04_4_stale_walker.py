# Exercise 4 of 04-the-cr0-wp-storm: guest-owned CR0.WP without the refresh fix.
#
# With fb509f76acc8 the guest's "clear CR0.WP" does not exit, so KVM's cpu_role (and the
# permission bitmask built from it) still says WP = 1.  When KVM emulates a supervisor write to
# a read-only page, permission_fault() checks it with WP = 1 and reports a fault: KVM injects a
# #PF that the CPU, running with WP = 0, would not raise.  cf9f4c0eb169 re-reads CR0.WP first
# (kvm_mmu_refresh_passthrough_bits).
answer_4 = "yes"
