"""Per-vCPU setup: CPUID, MSRs and the local APIC's LINT pins."""
