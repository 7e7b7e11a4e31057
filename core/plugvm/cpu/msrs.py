"""MSRs set on every vCPU before it first runs, as cloud-hypervisor does (arch/src/x86_64/regs.rs)."""

MSR_IA32_MISC_ENABLE = 0x1A0
MISC_ENABLE_FAST_STRING = 1 << 0
MSR_MTRR_DEF_TYPE = 0x2FF
MTRR_ENABLE = 1 << 11
MTRR_TYPE_WRBACK = 6

BOOT_MSRS = {
    MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING,
    # Without MTRRs enabled, Linux treats all RAM as uncached; default it to write-back.
    MSR_MTRR_DEF_TYPE: MTRR_ENABLE | MTRR_TYPE_WRBACK,
}
