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

/* The client's template <proto, client & netmask, 0, vaddr, vport (0 for a
 * port-zero service or FTP)> names the destination while it lives and its
 * destination is still in the service (a quiesced, weight-0 destination
 * keeps its clients unless expire_quiescent_template is on, as
 * ip_vs_check_template); otherwise the
 * scheduler picks one and a new template is made (persist_new). Each use
 * re-arms the template. Returns the slot, 0 for none; fills *tk. */
static __always_inline __u32 persist_lookup(const struct service *svc, const struct pkt *p,
					    struct conn_key *tk, __be16 svc_port, __u64 now)
{
	struct conn *t;
	struct dest *d;
	__u32 slot;

	tk->saddr = p->key.saddr & svc->netmask;
	tk->daddr = p->key.daddr;
	tk->dport = (p->key.dport == svc_port && svc_port != bpf_htons(21)) ? svc_port : 0;
	tk->proto = p->key.proto;
	t = conns.lookup(tk);
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

static __always_inline void persist_new(const struct service *svc, struct conn_key *tk,
					struct dest *d, __u32 slot, __u64 now)
{
	struct conn nt = {};

	nt.addr = d->addr;
	nt.port = d->port;
	nt.dir = XDPLB_DIR_TEMPLATE;
	nt.fwd = d->fwd;
	nt.dest_slot = slot;
	nt.dest_seq = d->seq;
	nt.svc_slot = svc->slot;
	nt.last_seen = now;
	conn_set_timeout(&nt, svc->timeout ? svc->timeout : 1);
	if (!conns.update(tk, &nt))
		dest_bind(slot, d, XDPLB_KIND_PERSIST);
}

#endif /* XDPLB_PERSIST_H */
