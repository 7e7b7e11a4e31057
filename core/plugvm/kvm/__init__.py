"""The only layer that touches /dev/kvm: one class per KVM file-descriptor level.

- Kvm (system.py): /dev/kvm itself — capabilities, supported CPUID, VM creation.
- Vm (vm.py): memory slots, the in-kernel irqchip and PIT, irqfd/ioeventfd, vCPU creation.
- Vcpu (vcpu.py): registers, CPUID, MSRs, LAPIC, and KVM_RUN decoded into typed exits (exits.py).
"""

from plugvm.kvm.errors import KvmError
from plugvm.kvm.system import Kvm

__all__ = ["Kvm", "KvmError"]
