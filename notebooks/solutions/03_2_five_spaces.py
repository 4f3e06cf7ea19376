# Exercise 2 of 03-the-prev-roots-cache: round robin over five address spaces, 500 MOV CR3.
#
# The cache holds the current root and three previous ones: four address spaces.  In a round
# robin over five, the address space needed next is the one used longest ago, i.e. the least
# recently used root, and that is exactly the one the previous miss evicted (prev_roots[2]).
# So every switch misses, from the first round to the last.
answer_2 = 0
