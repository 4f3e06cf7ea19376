# Exercise 3 of 02-cpu-role-vs-root-role: for how many of the 2,560 states does the shadow root
# word differ between 5.18 and 5.19?
#
# The only field that moves under shadow paging is efer_nx (#18): 5.19 forces it to 1.
#   - every state with EFER.NX = 0 differs: NX splits the states in two halves, 2560 / 2 = 1280;
#   - with NX = 1 and paging on, 5.18 already had efer_nx = 1: no difference;
#   - with NX = 1 and paging off, 5.18 left efer_nx at 0 (paging bits are set only with CR0.PG):
#     paging-off states are PG = 0 with WP 0/1 (2), any of the 64 CR4 combinations, LMA = 0,
#     SMM 0/1 and guest mode 0/1 (4): 2 * 64 * 4 = 512 with NX = 1.
answer_3 = 1280 + 512  # = 1792
