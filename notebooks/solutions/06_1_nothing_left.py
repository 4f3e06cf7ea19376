# Exercise 1 of 06-who-resets-the-mmu: which caller's trigger no longer resets anything on 5.17
# once the guest has run (EPT, TDP MMU)?
#
# kvm_mmu_after_set_cpuid still unloads every root when it runs.  But from 5.17,
# kvm_vcpu_ioctl_set_cpuid2 on a vCPU that has already entered the guest (last_vmentry_cpu !=
# -1) only checks that the new table equals the old one (kvm_cpuid_check_equal) and returns:
# the call that would reset the MMU is never reached.
answer_1 = "kvm_mmu_after_set_cpuid"
