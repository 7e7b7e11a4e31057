/* virtio-blk reads and writes in C (virtio 1.2 §5.2.6), over the core's C chain walk.
 *
 * Only the requests Linux sends on the hot path are served here: IN and OUT whose header
 * is a buffer of its own and whose status is the chain's last, one-byte buffer. Every
 * other request (FLUSH, GET_ID, an unknown type, another shape) is handed back, popped
 * but unanswered, to device.py, which serves it exactly as it serves every request
 * without this module. The checks are device.py's: a range that is not whole sectors
 * inside the image, a write to a read-only disk or to a protected sector 0, is IOERR.
 *
 * The queue is reached only through struct vq_api (plugvm.virtio.c_ring documents ABI 1).
 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#define SECTOR 512u
#define T_IN 0u
#define T_OUT 1u
#define S_OK 0u
#define S_IOERR 1u
#define HEADER_SIZE 16u
/* A request's data in one preadv/pwritev: IOV_MAX buffers, plus the header and status. */
#define MAX_BUFFERS (1024 + 2)

static int in_range(const struct blk_disk *disk, uint64_t sector, uint64_t length)
{
	if (length % SECTOR || sector > disk->size / SECTOR)
		return 0;
	return length <= disk->size - sector * SECTOR;
}

static uint64_t total(const struct iovec *iov, uint32_t n)
{
	uint64_t sum = 0;

	for (uint32_t i = 0; i < n; i++)
		sum += iov[i].iov_len;
	return sum;
}

/* Returns the status; *written is the bytes put into the guest's data buffers. */
static uint8_t serve(struct blk_disk *disk, uint32_t type, uint64_t sector, struct iovec *data, uint32_t count,
		     uint32_t *written)
{
	uint64_t length = total(data, count);
	int out = type == T_OUT;
	ssize_t done = 0;

	*written = 0;
	if (!in_range(disk, sector, length) || (out && (disk->readonly || (disk->protect_sector0 && sector == 0))))
		return S_IOERR;
	if (count) {
		off_t offset = (off_t)(sector * SECTOR);
		done = out ? pwritev(disk->fd, data, (int)count, offset) : preadv(disk->fd, data, (int)count, offset);
	}
	if (done < 0) {
		disk->error = errno;
		return S_IOERR;
	}
	if (out) {
		disk->write_ops++;
		disk->write_bytes += (uint64_t)done;
		return (uint64_t)done == length ? S_OK : S_IOERR;
	}
	disk->read_ops++;
	disk->read_bytes += (uint64_t)done;
	*written = (uint32_t)done;
	return S_OK;
}

int blk_serve(void *ring, const struct vq_api *api, struct blk_disk *disk)
{
	struct iovec iov[MAX_BUFFERS];

	for (;;) {
		uint16_t head;
		uint32_t n, nread, type, written;
		uint64_t sector;
		int rc = api->pop(ring, iov, NULL, MAX_BUFFERS, &head, &n, &nread);

		if (rc <= 0)
			return rc;                 /* 0: nothing more; -1: the guest broke the queue */
		if (rc == 2 || nread == 0 || iov[0].iov_len != HEADER_SIZE || n == nread || iov[n - 1].iov_len != 1) {
			disk->handed_back = head;  /* another shape: device.py serves it */
			return 1;
		}
		/* The header is guest memory the guest may rewrite: copied once, then decoded. */
		uint8_t header[HEADER_SIZE];
		memcpy(header, iov[0].iov_base, HEADER_SIZE);
		type = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 |
		       (uint32_t)header[3] << 24;
		memcpy(&sector, header + 8, 8);   /* le64: plugvm runs on x86-64 */
		uint8_t *status = iov[n - 1].iov_base;
		uint8_t answer;
		if (type == T_IN)
			answer = serve(disk, type, sector, iov + nread, n - nread - 1, &written);
		else if (type == T_OUT && nread == n - 1)   /* OUT with no writable data: its data is readable */
			answer = serve(disk, type, sector, iov + 1, nread - 1, &written);
		else {
			disk->handed_back = head;
			return 1;
		}
		*status = answer;
		api->push(ring, head, written + 1);
	}
}
