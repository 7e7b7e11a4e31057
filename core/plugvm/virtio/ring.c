/* The split virtqueue's chain walk in C (virtio 1.2 §2.7), for devices whose per-request
 * Python was the floor (bench/blk.py: ~4 µs a request against preadv's ~1.2 µs).
 *
 * The rules are queue.py's _walk() and pop(), one for one, with the same messages; the
 * virtqueue tests run every case against both (tests/unit/test_virtqueue.py). Guest
 * addresses become host pointers only through translate(), against the RAM regions
 * the caller (c_ring.py) lists for the duration of one call.
 *
 * Compiled by cffi at install time into plugvm.virtio._ring (_ring_build.py). A plugin's
 * own C reaches vq_pop and vq_push through struct vq_api (vq_api_table()), so that it
 * needs neither this file nor a link against it: only the ABI number and the two
 * function types, which c_ring.py documents.
 */

#define VQ_ABI 1

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4
#define MAX_QUEUE_SIZE 32768u
#define MAX_INDIRECT_DESCS MAX_QUEUE_SIZE
#define MAX_CHAIN_BYTES 0xFFFFFFFFull

static int fail(struct vq *q, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(q->error, sizeof(q->error), format, args);
	va_end(args);
	return -1;
}

/* The host address of guest [gpa, +len), or NULL unless it lies wholly in one region
 * (GuestMemory.view's rule; written so that no sum can overflow). */
static uint8_t *translate(const struct vq *q, uint64_t gpa, uint64_t len)
{
	for (uint32_t i = 0; i < q->nregions; i++) {
		const struct vq_region *r = &q->regions[i];

		if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len)
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

static int not_in_ram(struct vq *q, unsigned head, const char *what, uint64_t gpa, uint64_t len)
{
	return fail(q, "descriptor chain from head %u: %sguest range [0x%llx, +0x%llx) is not in guest RAM", head,
		    what, (unsigned long long)gpa, (unsigned long long)len);
}

/* Walk the chain from `head`: its buffers in iov[] (readable ones first, *nread of them),
 * their guest addresses in gpas[] when it is not NULL. Returns 1, or 2 when the chain is
 * valid but has more than `max` buffers (iov[] then holds the first `max`), or -1. */
static int walk(struct vq *q, unsigned head, struct iovec *iov, uint64_t *gpas, uint32_t max, uint32_t *n_out,
		uint32_t *nread_out)
{
	/* The descriptors are guest memory the guest may rewrite under us: each is read
	 * once, into locals, and only the locals are checked and used. */
	volatile const struct vq_desc *table = q->desc;
	uint32_t table_len = q->size, index = head, count = 0, n = 0, nread = 0;
	uint64_t total = 0;
	int indirect = 0, wrote = 0, overflow = 0;

	if (head >= table_len)
		return fail(q, "avail ring head %u is not below the queue size %u", head, table_len);
	for (;;) {
		if (++count > table_len)   /* every descriptor at most once, else it loops (§2.7.5.2) */
			return fail(q, "descriptor chain from head %u is longer than its table (%u)", head, table_len);
		uint64_t addr = table[index].addr;
		uint32_t len = table[index].len;
		uint16_t flags = table[index].flags, next = table[index].next;

		if (flags & F_INDIRECT) {
			if (indirect)
				return fail(q, "descriptor chain from head %u: nested indirect table", head);
			if (flags & F_NEXT)
				return fail(q, "descriptor chain from head %u: an indirect descriptor has NEXT set", head);
			if (len == 0 || len % 16 || len > 16 * MAX_INDIRECT_DESCS)
				return fail(q, "descriptor chain from head %u: bad indirect table length 0x%x", head, len);
			table = (volatile const struct vq_desc *)translate(q, addr, len);
			if (table == NULL)
				return fail(q, "descriptor chain from head %u: indirect table: guest range [0x%llx, +0x%x) "
					    "is not in guest RAM", head, (unsigned long long)addr, len);
			table_len = len / 16;
			index = count = 0;
			indirect = 1;
			continue;
		}
		if (flags & F_WRITE)
			wrote = 1;
		else if (wrote)
			return fail(q, "descriptor chain from head %u: a readable buffer follows a writable one", head);
		if (len) {
			total += len;
			if (total > MAX_CHAIN_BYTES)
				return fail(q, "descriptor chain from head %u is longer than 2^32 bytes", head);
			uint8_t *host = translate(q, addr, len);
			if (host == NULL)
				return not_in_ram(q, head, "", addr, len);
			if (n < max) {
				iov[n].iov_base = host;
				iov[n].iov_len = len;
				if (gpas)
					gpas[n] = addr;
				n++;
				if (!wrote)
					nread++;
			} else {
				overflow = 1;      /* still checked to its end: the caller walks it again */
			}
		}
		if (!(flags & F_NEXT))
			break;
		index = next;
		if (index >= table_len)
			return fail(q, "descriptor chain from head %u: next %u is not below %u", head, index, table_len);
	}
	*n_out = n;
	*nread_out = nread;
	return overflow ? 2 : 1;
}

int vq_pop(void *ring, struct iovec *iov, uint64_t *gpas, uint32_t max, uint16_t *head, uint32_t *n,
	   uint32_t *nread)
{
	struct vq *q = ring;
	volatile uint16_t *avail = q->avail, *used = q->used;
	uint16_t last = q->next_avail;
	uint16_t idx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);

	if (idx == last) {
		if (!(q->event_idx && q->notify))
			return 0;
		/* Our last avail_event store must be visible before we conclude the ring is
		 * empty, or a driver that read the old avail_event would skip its kick. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		idx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);
		if (idx == last)
			return 0;
	}
	if ((uint16_t)(idx - last) > q->size)
		return fail(q, "avail.idx %u is more than the queue size %u ahead of %u", idx, q->size, last);
	unsigned first = avail[2 + (last & (q->size - 1))];
	int rc = walk(q, first, iov, gpas, max, n, nread);
	if (rc < 0)
		return rc;                 /* not taken: the queue is broken, next_avail stays */
	q->next_avail = last = (uint16_t)(last + 1);
	if (q->event_idx && q->notify)
		used[2 + 4 * q->size] = last;
	*head = (uint16_t)first;
	return rc;
}

void vq_push(void *ring, uint16_t head, uint32_t written)
{
	struct vq *q = ring;
	volatile uint32_t *elements = (volatile uint32_t *)(q->used + 2);
	uint32_t slot = 2 * (q->next_used & (q->size - 1));

	elements[slot] = head;
	elements[slot + 1] = written;
	q->next_used = (uint16_t)(q->next_used + 1);
	/* The element is stored before the index (a release store). */
	__atomic_store_n(&q->used[1], q->next_used, __ATOMIC_RELEASE);
}

static const struct vq_api api = { VQ_ABI, vq_pop, vq_push };

const struct vq_api *vq_api_table(void)
{
	return &api;
}
