/* SPDX-License-Identifier: GPL-2.0 */
/*
 * service.h - virtual services and their destinations as the data path sees
 * them: the service of a packet, whether a destination is still valid, and
 * a destination's live connection counts (dest_conns) with its thresholds.
 */
#ifndef XDPLB_SERVICE_H
#define XDPLB_SERVICE_H

#include "maps.h"
#include "parse.h"
#include "tcp_state.h"

/* The service at the packet's destination address, protocol and port
 * (af a constant: IPv4's services or IPv6's services6). */
static __always_inline struct service *svc_at(const struct pkt *p, __be16 port, const int af)
{
	if (af == XDPLB_AF_INET6) {
		struct svc_key6 sk = {};

		__builtin_memcpy(sk.addr, p->key6.daddr, 16);
		sk.port = port;
		sk.proto = p->key.proto;
		return services6.lookup(&sk);
	} else {
		struct svc_key sk = {};

		sk.addr = p->key.daddr;
		sk.port = port;
		sk.proto = p->key.proto;
		return services.lookup(&sk);
	}
}

/* The service of a packet: its address and port, else a port-zero (all
 * ports) service of its address. *port: the service's port. */
static __always_inline struct service *svc_find(const struct pkt *p, __be16 *port, const int af)
{
	struct service *svc = svc_at(p, p->key.dport, af);

	*port = svc ? p->key.dport : 0;
	return svc ? svc : svc_at(p, 0, af);
}

/* "Is this destination still valid", in two steps, each written once here.
 * Available: IPVS's IP_VS_DEST_F_AVAILABLE, a destination of some service:
 * what a scheduler's pick and the stats of a reply need. */
static __always_inline int dest_available(const struct dest *d)
{
	return d && (d->flags & XDPLB_DEST_F_AVAILABLE);
}

/* Valid for an entry bound to it: available, of service svc_slot and,
 * unless seq is 0, the very destination the connection or template was
 * bound to (seqs are never reused, slots are: a removed destination's slot
 * may hold a newer one). seq 0: any, for an entry written by hand. */
static __always_inline int dest_valid(const struct dest *d, __u32 svc_slot, __u32 seq)
{
	return dest_available(d) && d->svc_slot == svc_slot && (!seq || d->seq == seq);
}

/* The destination in slot if available, else NULL. */
static __always_inline struct dest *dest_get(__u32 slot)
{
	struct dest *d = dests.lookup(&slot);

	return dest_available(d) ? d : NULL;
}

/* The destination connection entry c was bound to, if still valid, else NULL. */
static __always_inline struct dest *dest_of_conn(const struct conn *c)
{
	__u32 slot = c->dest_slot;
	struct dest *d = dests.lookup(&slot);

	return dest_valid(d, c->svc_slot, c->dest_seq) ? d : NULL;
}

/* IP_VS_DEST_F_OVERLOAD: set at u_threshold, cleared below l_threshold. */
static __always_inline int dest_overloaded(__u32 slot)
{
	struct dest_conns *dc = dest_conns.lookup(&slot);

	return dc && dc->overload;
}

/* Which live count an entry adds to. */
#define XDPLB_KIND_INACTIVE	0
#define XDPLB_KIND_ACTIVE	1
#define XDPLB_KIND_PERSIST	2

static __always_inline int conn_kind(__u8 proto, __u8 state)
{
	return proto == IPPROTO_TCP && tcp_state_active(state) ? XDPLB_KIND_ACTIVE
							       : XDPLB_KIND_INACTIVE;
}

/* ip_vs_bind_dest: count the entry, then OVERLOAD at u_threshold. */
static __always_inline void dest_bind(__u32 slot, const struct dest *d, int kind)
{
	struct dest_conns *dc = dest_conns.lookup(&slot);

	if (!dc)
		return;
	if (kind == XDPLB_KIND_PERSIST)
		__sync_fetch_and_add(&dc->persist, 1);
	else if (kind == XDPLB_KIND_ACTIVE)
		__sync_fetch_and_add(&dc->active, 1);
	else
		__sync_fetch_and_add(&dc->inactive, 1);
	if (d->u_threshold && (__s64)dc->active + dc->inactive >= (__s64)d->u_threshold &&
	    !dc->overload)
		dc->overload = 1;
}

/* ip_vs_unbind_dest: uncount, then clear OVERLOAD below the lower threshold
 * (l_threshold, else 3/4 of u_threshold). */
static __always_inline void dest_unbind(__u32 slot, const struct dest *d, int kind)
{
	struct dest_conns *dc = dest_conns.lookup(&slot);
	__s64 total;

	if (!dc)
		return;
	if (kind == XDPLB_KIND_PERSIST)
		__sync_fetch_and_add(&dc->persist, -1);
	else if (kind == XDPLB_KIND_ACTIVE)
		__sync_fetch_and_add(&dc->active, -1);
	else
		__sync_fetch_and_add(&dc->inactive, -1);
	if (!dc->overload)
		return;
	total = (__s64)dc->active + dc->inactive;
	if (d->l_threshold) {
		if (total < (__s64)d->l_threshold)
			dc->overload = 0;
	} else if (d->u_threshold) {
		if (total * 4 < (__s64)d->u_threshold * 3)
			dc->overload = 0;
	} else {
		dc->overload = 0;
	}
}

/* set_tcp_state: move the connection between activeconns and inactconns. */
static __always_inline void dest_move(__u32 slot, __u8 old, __u8 st)
{
	struct dest_conns *dc;
	int a = tcp_state_active(st);

	if (tcp_state_active(old) == a)
		return;
	dc = dest_conns.lookup(&slot);
	if (!dc)
		return;
	if (a) {
		__sync_fetch_and_add(&dc->active, 1);
		__sync_fetch_and_add(&dc->inactive, -1);
	} else {
		__sync_fetch_and_add(&dc->inactive, 1);
		__sync_fetch_and_add(&dc->active, -1);
	}
}

#endif /* XDPLB_SERVICE_H */
