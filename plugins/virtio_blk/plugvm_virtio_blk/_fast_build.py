"""cffi builder (API mode) for blk.c, compiled at install time (setup.py) into
plugvm_virtio_blk._fast. It needs nothing of plugvm to build: the queue is reached
through the vq_api ABI that plugvm.virtio.c_ring documents, declared here."""

from pathlib import Path

from cffi import FFI

CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
typedef int (*vq_pop_fn)(void *ring, struct iovec *iov, uint64_t *gpas, uint32_t max, uint16_t *head,
                         uint32_t *n, uint32_t *nread);
typedef void (*vq_push_fn)(void *ring, uint16_t head, uint32_t written);
struct vq_api { uint32_t abi; vq_pop_fn pop; vq_push_fn push; };
struct blk_disk {
    int fd;
    int readonly;
    int protect_sector0;
    uint64_t size;                 /* bytes */
    uint64_t read_ops, read_bytes, write_ops, write_bytes;
    int error;                     /* errno of the last failed preadv/pwritev, for device.py to log */
    uint16_t handed_back;          /* the head blk_serve() returned 1 for */
};
int blk_serve(void *ring, const struct vq_api *api, struct blk_disk *disk);
"""

# ABI 1 of plugvm.virtio.c_ring; CRing.abi is checked against it before this module is used.
VQ_ABI = 1

HEADER = "#include <stdint.h>\n#include <sys/uio.h>\n" + "\n".join(
    line for line in CDEF.splitlines() if not line.startswith("struct iovec")) + "\n"

ffibuilder = FFI()
ffibuilder.cdef(CDEF + "#define VQ_ABI ...\n")
ffibuilder.set_source("plugvm_virtio_blk._fast", HEADER + f"#define VQ_ABI {VQ_ABI}\n" +
                      (Path(__file__).parent / "blk.c").read_text(),
                      extra_compile_args=["-O2", "-Wall", "-Werror", "-std=gnu11"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
