# Exercise 1 of 01-what-is-a-role: the 5.19 shadow root role of the 64-bit guest with
# CR0.WP off and CR4.SMAP on.
#
# Start from the root role with WP on, 0x00003704 (level 4, access 7, efer_nx, cr0_wp), then:
#   cr0_wp         bit 13: 1 -> 0   (-0x2000)
#   smap_andnot_wp bit 15: 0 -> 1   (+0x8000): SMAP is on and WP is off
#   smep_andnot_wp bit 14: stays 0, SMEP is off
#   efer_nx        bit 12: stays 1, forced to 1 in every 5.19 shadow root role
answer_1 = 0x3704 - 0x2000 + 0x8000  # = 0x00009704
