# Exercise 1 of 02-cpu-role-vs-root-role: 5.19 shadow root_role of a 32-bit guest without PAE
# (CR4 = 0, EFER = 0, CR0.WP = 1).
#
# kvm_calc_cpu_role gives the guest's own mode: level 2, has_4_byte_gpte 1, access 7,
# cr0_wp 1, efer_nx 0 (NX is off).  kvm_init_shadow_mmu then
#   raises the level to 3 (#15: a PAE-style root for guests that are not 64-bit), and
#   forces efer_nx to 1 (#18: the guest's NX stays in cpu_role).
#   level 3            bits 0-3   0x0003
#   has_4_byte_gpte 1  bit 4      0x0010
#   access 7           bits 8-10  0x0700
#   efer_nx 1          bit 12     0x1000
#   cr0_wp 1           bit 13     0x2000
answer_1 = 0x3 | 0x10 | 0x700 | 0x1000 | 0x2000  # = 0x00003713
