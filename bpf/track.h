/* SPDX-License-Identifier: GPL-2.0 */
/*
 * track.h - a packet of a connection (IPVS's ip_vs_in / ip_vs_out): the
 * first one, whose destination a scheduler picked (conn_new builds the
 * entry), and every later one from the client (handle_in) or, for Masq,
 * from the real server (handle_out). Each returns a verdict (stats.h).
 */
#ifndef XDPLB_TRACK_H
#define XDPLB_TRACK_H

#include "clock.h"
#include "conn.h"
#include "encap.h"
#include "fnat.h"
#include "forward.h"
#include "maps.h"
#include "parse.h"
#include "service.h"
#include "stats.h"
#include "tcp_state.h"

/* A client's packet on to its destination (Tunnel: encapsulated, by tail
 * call). */
static __always_inline __u32 send_in(struct xdp_md *ctx, struct pkt *p, const struct conn *c,
				     __u64 now, const int af)
{
	if (c->fwd == IP_VS_CONN_F_TUNNEL)
		return tunnel_call(ctx, c, af);
	return forward_in(ctx, p, c, now, af);
}

/* Client -> virtual service, on a tracked connection (destination d).
 * Fields are written only when they change: an unchanged entry keeps its
 * cache line clean on every CPU that reads it. */
static __always_inline __u32 handle_in(struct xdp_md *ctx, struct pkt *p, struct conn *c,
				       const struct dest *d, int assured, __u64 now, const int af)
{
	__u32 slot = c->dest_slot;
	int changed = 0, refreshed = 0;
	struct conn *moved;

	/* IPVS drops packets of connections whose destination went away (d:
	 * dest_of_conn, NULL then), unless expire_nodest_conn ends them. */
	if (!d)
		return drop(XDPLB_CNT_DEST_GONE);
	if (p->key.proto == IPPROTO_TCP) {
		__u8 old = c->state;
		__u8 st = tcp_next_state(tcp_dir_in(c->fwd), p->tcp_flags, old);

		if (st != old) {
			changed = 1;
			c->state = st;
			conn_set_timeout(c, conn_timeout(IPPROTO_TCP, st));
			dest_move(slot, old, st);
		}
	}
	if (stale(c->last_seen, now)) {
		/* the kernel re-reads the state's timeout on every packet */
		__u32 t = conn_timeout(p->key.proto, c->state);

		refreshed = 1;
		c->last_seen = now;
		if (conn_get_timeout(c) != t)
			conn_set_timeout(c, t);
	}
	if (conn_wants_move(p, c, assured, changed, refreshed)) {
		moved = conn_set_assured(p, c, !assured, af);
		if (moved)
			c = moved;
	}
	stats_add(c, 0, p->l3_len);
	return send_in(ctx, p, c, now, af);
}

/* Real server -> client: a reply on Masq connection c (key ik, found by
 * conn_reply_lookup). The state lives in the connection's one entry. */
static __always_inline __u32 handle_out(struct xdp_md *ctx, struct pkt *p, struct conn *c,
					const union conn_key_any *ik, const int af)
{
	__u64 now = now_ns();

	if (p->key.proto == IPPROTO_TCP) {
		__u8 old = c->state;
		__u8 st = tcp_next_state(TCP_DIR_OUTPUT, p->tcp_flags, old);

		if (st != old) {
			dest_move(c->dest_slot, old, st);
			c->state = st;
			conn_set_timeout(c, conn_timeout(IPPROTO_TCP, st));
		}
	}
	if (stale(c->last_seen, now))
		c->last_seen = now;
	/* ip_vs_out_stats: only while the destination is available */
	if (dest_get(c->dest_slot))
		stats_add(c, 1, p->l3_len);
	return forward_out(ctx, p, c, ik, af);
}

/* A new connection to a virtual service, to the destination in slot (the
 * scheduler's or the client's template's pick): build its one entry on the
 * stack complete, lend it a local address and port if it is source-NATed
 * (fnat.h: the mapping first, so its reply tuple is its own before anyone
 * can find the entry), insert it and send. Nothing is looked up again
 * after the insert. */
static __always_inline __u32 conn_new(struct xdp_md *ctx, struct pkt *p,
				      const struct service *svc, __be16 svc_port, __u64 now,
				      __u32 slot, const int af)
{
	__be32 fallback[4] = {};
	union conn_key_any mk = {};
	struct conn6 nc6 = {};
	struct conn *nc = &nc6.c;
	struct dest *d;

	d = dest_get(slot);
	if (!d)		/* gone since the pick */
		return no_dest(ctx, af);
	nc->fwd = d->fwd;
	nc->dest_slot = slot;
	nc->dest_seq = d->seq;
	nc->svc_slot = svc->slot;
	nc->last_seen = now;
	if (p->key.proto == IPPROTO_TCP)
		nc->state = tcp_next_state(tcp_dir_in(nc->fwd), p->tcp_flags, IP_VS_TCP_S_NONE);
	conn_set_timeout(nc, conn_timeout(p->key.proto, nc->state));
	/* ip_vs_sched_persist: the real port only for packets to the service
	 * port (a port-zero service keeps the client's destination port). */
	nc->port = (p->key.dport == svc_port && d->port) ? d->port : p->key.dport;
	nc->addr = d->addr;
	if (af == XDPLB_AF_INET6)
		__builtin_memcpy(nc6.addr6, d->addr6, 16);
	nc->dir = XDPLB_DIR_IN;
	if (fnat_wanted(ctx, p, svc, d, slot, now, fallback, af) &&
	    fnat_bind(p, &nc6, svc->slot, fallback, af))
		return drop(XDPLB_CNT_FNAT_NO_PORT);
	if (conn_table_put(pkt_conn_key(p, af), &nc6, af, 0)) {
		if (nc->lport)
			fnat_key(nc, p->key.proto, &mk, af);
		fnat_forget(&mk, af);
		return drop(XDPLB_CNT_CONN_FULL);
	}
	dest_bind(slot, d, conn_kind(p->key.proto, nc->state));
	stats_conn(nc->svc_slot, slot);
	stats_add(nc, 0, p->l3_len);
	return send_in(ctx, p, nc, now, af);
}

#endif /* XDPLB_TRACK_H */
