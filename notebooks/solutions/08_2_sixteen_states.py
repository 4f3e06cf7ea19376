# Exercise 2 of 08-check-your-kernel: how many root role words do the 16 states give?
#
# Under shadow paging (5.19+) root_role.efer_nx is always 1, so EFER.NX never shows in a root
# role: 8 (WP, SMEP, SMAP) states are left.  SMEP and SMAP enter the page role only as
# smep_andnot_wp and smap_andnot_wp, i.e. when WP is clear.  With WP set, the four SMEP/SMAP
# states share one word (0x3704); with WP clear each has its own (0x1704, 0x5704, 0x9704,
# 0xd704).  1 + 4 = 5.
answer_2 = 5
