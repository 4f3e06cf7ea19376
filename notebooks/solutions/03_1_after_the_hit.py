# Exercise 1 of 03-the-prev-roots-cache: the cache is A | B C D and the guest switches to C.
#
# C sits in prev_roots[1].  cached_root_find_and_keep_current swaps as it walks the slots:
#   A | B C D  ->  B | A C D  (B tested: wrong PGD)  ->  C | A B D  (C tested: usable, stop)
# The old current root A ends up in front (the most recently used), B moves back one slot, and
# D, behind the hit, does not move.
answer_1 = "C | A B D"
