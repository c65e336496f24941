/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched_hash.h - sh, dh and mh: a hash of the packet's client (sh, mh) or
 * destination (dh) address picks a bucket of a table the control plane
 * fills exactly as the kernel does (xdplb/sched.py), kept in sched_ring.
 */
#ifndef XDPLB_SCHED_HASH_H
#define XDPLB_SCHED_HASH_H

#include "hash.h"
#include "parse.h"
#include "sched_ring.h"
#include "service.h"

/* is_unavailable() of sh / mh, also dh's test: not available, weight 0 or
 * OVERLOAD. */
static __always_inline int hash_dest_unavailable(__u32 slot)
{
	struct dest *d = dest_get(slot);

	return !d || !d->weight || dest_overloaded(slot);
}

/* The client's bucket at offset off: mh's hash if mh, else sh's. */
static __always_inline __u32 hash_client(int mh, __u32 addr, __u16 port, __u32 off)
{
	return mh ? mh_hashkey(addr, port, off) : sh_hashkey(addr, port, off);
}

/* ip_vs_sh_schedule, or ip_vs_mh_schedule if mh (a constant: each program
 * keeps one): the client's bucket, with the port for sh-port / mh-port;
 * with sh-fallback / mh-fallback an unavailable destination's clients
 * probe the following offsets (sh: the whole table; mh: the first
 * XDPLB_MH_FALLBACK_PROBES). */
static __always_inline __u32 sched_hash(const struct service *svc, const struct pkt *p, int mh)
{
	__u32 size = mh ? XDPLB_MH_TAB_SIZE : XDPLB_SH_TAB_SIZE;
	__u32 probes = mh ? XDPLB_MH_FALLBACK_PROBES : XDPLB_SH_TAB_SIZE;
	__u32 addr = bpf_ntohl(p->key.saddr);
	__u16 port = (svc->flags & IP_VS_SVC_F_SCHED2) ? bpf_ntohs(p->key.sport) : 0;
	__u32 ihash = hash_client(mh, addr, port, 0);
	__u32 slot = sched_ring_slot(svc, ihash), off;

	if (!slot)
		return 0;
	if (!hash_dest_unavailable(slot))
		return slot;
	if (!(svc->flags & IP_VS_SVC_F_SCHED1))
		return 0;
	#pragma clang loop unroll(disable)
	for (off = 0; off < probes; off++) {
		slot = sched_ring_slot(svc, hash_client(mh, addr, port, (off + ihash) % size));
		if (!slot)
			return 0;
		if (!hash_dest_unavailable(slot))
			return slot;
	}
	return 0;
}

/* ip_vs_dh_schedule: the bucket of the packet's destination address. */
static __always_inline __u32 sched_dh(const struct service *svc, const struct pkt *p)
{
	__u32 slot = sched_ring_slot(svc, dh_hashkey(bpf_ntohl(p->key.daddr)));

	if (!slot || hash_dest_unavailable(slot))
		return 0;
	return slot;
}

#endif /* XDPLB_SCHED_HASH_H */
