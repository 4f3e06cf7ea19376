# Exercise 1 of 08-check-your-kernel: MOV CR3 round robin over four address spaces, twice.
#
# The guest starts in A, so its root is the current one.  The switches to B, C and D miss
# (nothing cached yet for them): each leaves the new root invalid and the next VM entry looks
# it up, which is a kvm_mmu_get_page record.  After that the four roots fill root and the three
# prev_roots, and every switch hits (fast_pgd_switch finds the root in prev_roots[2], the least
# recently used one): no lookup at all, so nothing is traced.
answer_1 = 3
