/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched.h - ring-based scheduling. The control plane precomputes, per
 * service, the sequence of destinations the kernel's scheduler would pick:
 * a prefix (the picks until the scheduler's state starts to repeat) and a
 * cycle repeated forever. A new connection takes the next position with one
 * atomic add, so every CPU sees one global order, as with IPVS's lock.
 * Map access lives in xdplb.c: bcc only rewrites map calls there.
 */
#ifndef XDPLB_SCHED_H
#define XDPLB_SCHED_H

#include "xdplb.h"

/* Ring index of the n-th connection scheduled since ring_base. */
static __always_inline __u32 sched_ring_index(const struct service *svc, __u64 pos)
{
	__u64 n = pos - svc->ring_base;
	__u32 prefix = svc->ring_prefix;
	__u32 cycle;

	if (n < prefix)
		return (__u32)n;
	if (svc->ring_len <= prefix)	/* no cycle: stay on the last entry */
		return svc->ring_len - 1;
	cycle = svc->ring_len - prefix;
	return prefix + (__u32)((n - prefix) % cycle);
}

static __always_inline void sched_ring_key(struct ring_key *rk, const struct service *svc,
					   __u32 index)
{
	rk->svc_slot = svc->slot;
	rk->index = svc->ring_gen | index;
}

#endif /* XDPLB_SCHED_H */
