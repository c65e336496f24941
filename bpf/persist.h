/* SPDX-License-Identifier: GPL-2.0 */
/*
 * persist.h - persistence (-p): IPVS's connection templates
 * (ip_vs_sched_persist), kept in the conns LRU as XDPLB_DIR_TEMPLATE entries.
 */
#ifndef XDPLB_PERSIST_H
#define XDPLB_PERSIST_H

#include "clock.h"
#include "conn.h"
#include "maps.h"
#include "parse.h"
#include "service.h"

/* An IPv6 client's network: addr under a prefix of plen (1..128) bits.
 * Without a branch: each branch here would double the states the verifier
 * carries into a scheduler's loop. */
static __always_inline void client_net6(__be32 *net, const __be32 *addr, __u32 plen)
{
	int i;

	#pragma unroll
	for (i = 0; i < 4; i++) {
		__s64 x = (__s64)plen - 32 * i;
		__s64 y, bits;

		y = x & ~(x >> 63);			/* max(x, 0) */
		bits = 32 + ((y - 32) & ((y - 32) >> 63));	/* min(y, 32) */
		net[i] = addr[i] & bpf_htonl((__u32)(~0ULL << (32 - bits)));
	}
}

/* The key of p's client's template: <proto, client & netmask, 0, vaddr,
 * vport (0 for a port-zero service or FTP)>. */
static __always_inline void persist_key(const struct service *svc, const struct pkt *p,
					union conn_key_any *tk, __be16 svc_port, const int af)
{
	__be16 dport = (p->key.dport == svc_port && svc_port != bpf_htons(21)) ? svc_port : 0;

	if (af == XDPLB_AF_INET6) {
		client_net6(tk->v6.saddr, p->key6.saddr, svc->netmask);
		__builtin_memcpy(tk->v6.daddr, p->key6.daddr, 16);
		tk->v6.dport = dport;
		tk->v6.proto = p->key.proto;
	} else {
		tk->v4.saddr = p->key.saddr & svc->netmask;
		tk->v4.daddr = p->key.daddr;
		tk->v4.dport = dport;
		tk->v4.proto = p->key.proto;
	}
}

/* The client's template names the destination while it lives and its
 * destination is still in the service (a quiesced, weight-0 destination
 * keeps its clients unless expire_quiescent_template is on, as
 * ip_vs_check_template); otherwise the
 * scheduler picks one and a new template is made (persist_new). Each use
 * re-arms the template. Returns the slot, 0 for none. */
static __always_inline __u32 persist_lookup(const struct service *svc, const struct pkt *p,
					    __be16 svc_port, __u64 now, const int af)
{
	union conn_key_any tk = {};
	struct conn *t;
	struct dest *d;
	__u32 slot;

	persist_key(svc, p, &tk, svc_port, af);
	t = conn_table_get(&tk, af, 0);
	if (!t || t->dir != XDPLB_DIR_TEMPLATE)
		return 0;
	slot = t->dest_slot;
	d = dests.lookup(&slot);
	if (t->svc_slot == svc->slot && !conn_expired(t, now) &&
	    dest_valid(d, svc->slot, t->dest_seq) &&
	    !(d->weight == 0 && vs_sysctl(XDPLB_SYSCTL_EXPIRE_QUIESCENT_TEMPLATE))) {
		if (stale(t->last_seen, now))
			t->last_seen = now;
		return slot;
	}
	if (__sync_lock_test_and_set(&t->last_seen, 0) && dest_valid(d, t->svc_slot, t->dest_seq))
		dest_unbind(slot, d, XDPLB_KIND_PERSIST);
	return 0;
}

/* A new template for p's client, naming d. Made in xdplb_conn, not in the
 * scheduler's program: a key live across a scheduler's loop multiplies the
 * states the verifier walks it with. */
static __always_inline void persist_new(const struct service *svc, const struct pkt *p,
					__be16 svc_port, struct dest *d, __u32 slot, __u64 now,
					const int af)
{
	union conn_key_any tk = {};
	struct conn6 nt = {};

	persist_key(svc, p, &tk, svc_port, af);
	nt.c.addr = d->addr;
	if (af == XDPLB_AF_INET6)
		__builtin_memcpy(nt.addr6, d->addr6, 16);
	nt.c.port = d->port;
	nt.c.dir = XDPLB_DIR_TEMPLATE;
	nt.c.fwd = d->fwd;
	nt.c.dest_slot = slot;
	nt.c.dest_seq = d->seq;
	nt.c.svc_slot = svc->slot;
	nt.c.last_seen = now;
	conn_set_timeout(&nt.c, svc->timeout ? svc->timeout : 1);
	if (!conn_table_put(&tk, &nt, af, 0))
		dest_bind(slot, d, XDPLB_KIND_PERSIST);
}

#endif /* XDPLB_PERSIST_H */
