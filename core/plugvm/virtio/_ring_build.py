"""cffi builder (API mode) for the C chain walk (ring.c): compiled at install time,
as the KVM binding is (setup.py), into plugvm.virtio._ring. Only plugvm.virtio.c_ring
imports the result."""

from pathlib import Path

from cffi import FFI

# The types ring.c and c_ring.py share. struct vq_api is the ABI a plugin's C is given
# (c_ring.py says what it may rely on); its layout changes only with VQ_ABI.
CDEF = """
struct vq_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct vq_region { uint64_t gpa; uint64_t size; uint8_t *hva; };
struct vq {
    struct vq_desc *desc;        /* the descriptor table */
    uint16_t *avail;             /* flags, idx, ring[size], used_event */
    uint16_t *used;              /* flags, idx, {id, len}[size], avail_event */
    uint32_t size;               /* a power of two, at most 32768 */
    uint32_t event_idx;          /* VIRTIO_F_EVENT_IDX negotiated */
    uint32_t notify;             /* kicks asked for (SplitQueue.set_notification) */
    uint16_t next_avail, next_used;
    struct vq_region *regions;   /* guest RAM, for the duration of one call */
    uint32_t nregions;
    char error[256];             /* why vq_pop returned -1 */
};
struct iovec { void *iov_base; size_t iov_len; };
typedef int (*vq_pop_fn)(void *ring, struct iovec *iov, uint64_t *gpas, uint32_t max, uint16_t *head,
                         uint32_t *n, uint32_t *nread);
typedef void (*vq_push_fn)(void *ring, uint16_t head, uint32_t written);
struct vq_api { uint32_t abi; vq_pop_fn pop; vq_push_fn push; };

int vq_pop(void *ring, struct iovec *iov, uint64_t *gpas, uint32_t max, uint16_t *head, uint32_t *n,
           uint32_t *nread);
void vq_push(void *ring, uint16_t head, uint32_t written);
const struct vq_api *vq_api_table(void);
#define VQ_ABI ...
"""

HEADER = "#include <stdarg.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <sys/uio.h>\n" + "\n".join(
    line for line in CDEF.splitlines() if not line.startswith(("struct iovec", "#define"))) + "\n"

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("plugvm.virtio._ring", HEADER + (Path(__file__).parent / "ring.c").read_text(),
                      extra_compile_args=["-O2", "-Wall", "-Werror", "-std=gnu11"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
