/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched_ring.h - rr and wrr: the control plane precomputes, per service,
 * the sequence of destinations the kernel's scheduler would pick: a prefix
 * (the picks until the scheduler's state starts to repeat) and a cycle
 * repeated forever. A new connection takes the next position with one
 * atomic add, so every CPU sees one global order, as with IPVS's lock.
 * The sched_ring map also holds the hash schedulers' tables (sched_hash.h).
 */
#ifndef XDPLB_SCHED_RING_H
#define XDPLB_SCHED_RING_H

#include "maps.h"
#include "service.h"

/* A ring or table index must leave the generation bit to ring_gen. */
#if XDPLB_MAX_RING > XDPLB_RING_GEN_BIT
#error "XDPLB_MAX_RING exceeds XDPLB_RING_GEN_BIT: ring indexes would reach the generation bit"
#endif

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

/* Entry idx of the service's live ring or table (0 = none, empty bucket). */
static __always_inline __u32 sched_ring_slot(const struct service *svc, __u32 idx)
{
	struct ring_key rk = {};
	__u32 *ds;

	sched_ring_key(&rk, svc, idx);
	ds = sched_ring.lookup(&rk);
	return ds ? *ds : 0;
}

/* rr / wrr: the next entry of the service's ring. An entry whose destination
 * is over its upper threshold is passed over (at most one cycle). */
static __always_inline __u32 sched_ring_pick(const struct service *svc)
{
	struct sched_pos *sp;
	__u32 slot = svc->slot;
	__u64 pos;
	int i;

	sp = sched_pos.lookup(&slot);
	if (!svc->ring_len || !sp)
		return 0;
	#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		pos = __sync_fetch_and_add(&sp->pos, 1);
		slot = sched_ring_slot(svc, sched_ring_index(svc, pos));
		if (!slot || !dest_overloaded(slot))
			return slot;
		if (i + 1 >= svc->ring_len)
			return 0;
	}
	return 0;
}

#endif /* XDPLB_SCHED_RING_H */
