"""cffi builder (API mode) for the KVM binding: compiled at install time against
<linux/kvm.h>, so the compiler checks every struct layout and reads every ioctl
number; nothing here is a hand-counted size or a magic number.

Structs are declared partially (`...;`): only the fields plugvm uses, at the
offsets the compiler finds.
"""

from cffi import FFI

ffibuilder = FFI()

_IOCTLS = """
KVM_GET_API_VERSION KVM_CREATE_VM KVM_CHECK_EXTENSION KVM_GET_VCPU_MMAP_SIZE KVM_GET_SUPPORTED_CPUID
KVM_GET_MSR_INDEX_LIST
KVM_SET_USER_MEMORY_REGION KVM_CREATE_VCPU KVM_SET_TSS_ADDR KVM_SET_IDENTITY_MAP_ADDR KVM_CREATE_IRQCHIP
KVM_CREATE_PIT2 KVM_IRQ_LINE KVM_IOEVENTFD KVM_IRQFD KVM_SET_GSI_ROUTING KVM_SIGNAL_MSI KVM_ENABLE_CAP
KVM_RUN KVM_GET_REGS KVM_SET_REGS KVM_GET_SREGS KVM_SET_SREGS KVM_SET_CPUID2 KVM_GET_MSRS KVM_SET_MSRS
KVM_GET_LAPIC KVM_SET_LAPIC KVM_GET_FPU KVM_SET_FPU KVM_GET_MP_STATE KVM_SET_MP_STATE KVM_GET_CLOCK KVM_SET_CLOCK
""".split()

_CONSTANTS = """
KVM_API_VERSION
KVM_EXIT_UNKNOWN KVM_EXIT_EXCEPTION KVM_EXIT_IO KVM_EXIT_HYPERCALL KVM_EXIT_DEBUG KVM_EXIT_HLT KVM_EXIT_MMIO
KVM_EXIT_IRQ_WINDOW_OPEN KVM_EXIT_SHUTDOWN KVM_EXIT_FAIL_ENTRY KVM_EXIT_INTR KVM_EXIT_NMI KVM_EXIT_INTERNAL_ERROR
KVM_EXIT_SYSTEM_EVENT KVM_EXIT_IOAPIC_EOI KVM_EXIT_X86_RDMSR KVM_EXIT_X86_WRMSR KVM_EXIT_IO_IN KVM_EXIT_IO_OUT
KVM_INTERNAL_ERROR_EMULATION KVM_INTERNAL_ERROR_SIMUL_EX KVM_INTERNAL_ERROR_DELIVERY_EV
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
KVM_SYSTEM_EVENT_SHUTDOWN KVM_SYSTEM_EVENT_RESET KVM_SYSTEM_EVENT_CRASH
KVM_CAP_IRQCHIP KVM_CAP_USER_MEMORY KVM_CAP_SET_TSS_ADDR KVM_CAP_EXT_CPUID KVM_CAP_NR_VCPUS KVM_CAP_MAX_VCPUS
KVM_CAP_MAX_VCPU_ID KVM_CAP_PIT2 KVM_CAP_IOEVENTFD KVM_CAP_IRQFD KVM_CAP_IRQ_ROUTING KVM_CAP_SIGNAL_MSI
KVM_CAP_IMMEDIATE_EXIT KVM_CAP_EXIT_ON_EMULATION_FAILURE KVM_CAP_INTERNAL_ERROR_DATA KVM_CAP_X2APIC_API
KVM_CAP_SET_IDENTITY_MAP_ADDR KVM_CAP_READONLY_MEM KVM_CAP_TSC_DEADLINE_TIMER
KVM_PIT_SPEAKER_DUMMY KVM_MEM_READONLY KVM_IOEVENTFD_FLAG_PIO KVM_IOEVENTFD_FLAG_DATAMATCH
KVM_IOEVENTFD_FLAG_DEASSIGN KVM_IRQFD_FLAG_DEASSIGN KVM_IRQ_ROUTING_IRQCHIP KVM_IRQ_ROUTING_MSI
KVM_IRQCHIP_PIC_MASTER KVM_IRQCHIP_PIC_SLAVE KVM_IRQCHIP_IOAPIC KVM_APIC_REG_SIZE
KVM_MP_STATE_RUNNABLE KVM_MP_STATE_UNINITIALIZED KVM_MP_STATE_INIT_RECEIVED KVM_MP_STATE_HALTED
KVM_MP_STATE_SIPI_RECEIVED
""".split()

CDEF = "".join(f"#define {name} ...\n" for name in _IOCTLS + _CONSTANTS) + """
struct kvm_userspace_memory_region { uint32_t slot; uint32_t flags; uint64_t guest_phys_addr;
                                     uint64_t memory_size; uint64_t userspace_addr; };
struct kvm_regs { uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
                  uint64_t rip, rflags; };
struct kvm_segment { uint64_t base; uint32_t limit; uint16_t selector; uint8_t type; uint8_t present, dpl, db,
                     s, l, g, avl; uint8_t unusable; ...; };
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs { struct kvm_segment cs, ds, es, fs, gs, ss; struct kvm_segment tr, ldt; struct kvm_dtable gdt, idt;
                   uint64_t cr0, cr2, cr3, cr4, cr8; uint64_t efer; uint64_t apic_base; ...; };
struct kvm_fpu { uint8_t fpr[8][16]; uint16_t fcw; uint16_t fsw; uint8_t ftwx; uint16_t last_opcode; uint64_t last_ip;
                 uint64_t last_dp; uint8_t xmm[16][16]; uint32_t mxcsr; ...; };
struct kvm_cpuid_entry2 { uint32_t function; uint32_t index; uint32_t flags; uint32_t eax; uint32_t ebx; uint32_t ecx;
                          uint32_t edx; ...; };
struct kvm_cpuid2 { uint32_t nent; struct kvm_cpuid_entry2 entries[]; ...; };
struct kvm_msr_entry { uint32_t index; uint64_t data; ...; };
struct kvm_msrs { uint32_t nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; };
struct kvm_lapic_state { char regs[...]; };
struct kvm_pit_config { uint32_t flags; ...; };
struct kvm_clock_data { uint64_t clock; uint32_t flags; ...; };
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_ioeventfd { uint64_t datamatch; uint64_t addr; uint32_t len; int32_t fd; uint32_t flags; ...; };
struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_enable_cap { uint32_t cap; uint32_t flags; unsigned long long args[4]; ...; };
struct kvm_msi { uint32_t address_lo; uint32_t address_hi; uint32_t data; uint32_t flags; uint32_t devid; ...; };
struct kvm_mp_state { uint32_t mp_state; };
struct kvm_irq_routing_irqchip { uint32_t irqchip; uint32_t pin; };
struct kvm_irq_routing_msi { uint32_t address_lo; uint32_t address_hi; uint32_t data; uint32_t devid; };
struct kvm_irq_routing_entry { uint32_t gsi; uint32_t type; uint32_t flags;
                               union { struct kvm_irq_routing_irqchip irqchip; struct kvm_irq_routing_msi msi; uint32_t pad[8]; } u;
                               ...; };
struct kvm_irq_routing { uint32_t nr; uint32_t flags; struct kvm_irq_routing_entry entries[]; };

struct kvm_run_io { uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset; };
struct kvm_run_mmio { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; };
struct kvm_run_internal { uint32_t suberror; uint32_t ndata; unsigned long long data[16]; };
struct kvm_run_emulation_failure { uint32_t suberror; uint32_t ndata; uint64_t flags; uint8_t insn_size;
                                   uint8_t insn_bytes[15]; };
struct kvm_run_system_event { uint32_t type; uint32_t ndata; unsigned long long data[16]; };
struct kvm_run_fail_entry { uint64_t hardware_entry_failure_reason; uint32_t cpu; };
struct kvm_run_hw { uint64_t hardware_exit_reason; };

/* Offsets into struct kvm_run, computed by the compiler (see SOURCE). */
extern const size_t plugvm_run_exit_reason, plugvm_run_immediate_exit, plugvm_run_union;

int plugvm_ioctl(int fd, unsigned long request, void *arg);
int plugvm_ioctl_int(int fd, unsigned long request, unsigned long arg);
"""

# The union members of struct kvm_run are anonymous in the header; they are
# reached through these typedefs, whose layouts the compiler checks against the
# header's own members below.
SOURCE = """
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

#define PLUGVM_MEMBER(tag, member) \\
    struct kvm_run_##tag { __typeof__(((struct kvm_run *)0)->member) m; }
struct kvm_run_io { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; };
struct kvm_run_mmio { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; };
struct kvm_run_internal { __u32 suberror; __u32 ndata; __u64 data[16]; };
struct kvm_run_emulation_failure { __u32 suberror; __u32 ndata; __u64 flags; __u8 insn_size; __u8 insn_bytes[15]; };
struct kvm_run_system_event { __u32 type; __u32 ndata; __u64 data[16]; };
struct kvm_run_fail_entry { __u64 hardware_entry_failure_reason; __u32 cpu; };
struct kvm_run_hw { __u64 hardware_exit_reason; };
_Static_assert(sizeof(struct kvm_run_io) == sizeof(((struct kvm_run *)0)->io), "io");
_Static_assert(sizeof(struct kvm_run_mmio) == sizeof(((struct kvm_run *)0)->mmio), "mmio");
_Static_assert(sizeof(struct kvm_run_internal) == sizeof(((struct kvm_run *)0)->internal), "internal");
_Static_assert(offsetof(struct kvm_run, io) == offsetof(struct kvm_run, mmio), "union");
_Static_assert(offsetof(struct kvm_run, emulation_failure.insn_bytes) - offsetof(struct kvm_run, emulation_failure)
               == offsetof(struct kvm_run_emulation_failure, insn_bytes), "emulation_failure");
_Static_assert(offsetof(struct kvm_run, system_event.data) - offsetof(struct kvm_run, system_event)
               == offsetof(struct kvm_run_system_event, data), "system_event");

const size_t plugvm_run_exit_reason = offsetof(struct kvm_run, exit_reason);
const size_t plugvm_run_immediate_exit = offsetof(struct kvm_run, immediate_exit);
const size_t plugvm_run_union = offsetof(struct kvm_run, io);

int plugvm_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int plugvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
"""

ffibuilder.cdef(CDEF)
ffibuilder.set_source("plugvm.kvm._kvm", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
