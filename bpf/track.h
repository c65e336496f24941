/* SPDX-License-Identifier: GPL-2.0 */
/*
 * track.h - a packet of a connection (IPVS's ip_vs_in / ip_vs_out): the
 * first one, whose destination a scheduler picked (conn_new builds the
 * entries), and every later one from the client (handle_in) or, for Masq,
 * from the real server (handle_out). Each returns a verdict (stats.h).
 */
#ifndef XDPLB_TRACK_H
#define XDPLB_TRACK_H

#include "clock.h"
#include "conn.h"
#include "forward.h"
#include "maps.h"
#include "parse.h"
#include "service.h"
#include "stats.h"
#include "tcp_state.h"

/* The IN entry of a Masq connection went back to a state a reply ACK moves:
 * tell the OUT entry, whose copy lets the reply path skip the IN lookup. */
static __always_inline void out_state_sync(const struct pkt *p, const struct conn *c, __u8 state)
{
	struct conn_key ok = {};
	struct conn *o;
	int assured;

	conn_out_key(&ok, &p->key, c->addr, c->port);
	o = conn_lookup(&ok, &assured);
	if (o)
		o->state = state;
}

/* Client -> virtual service, on a tracked connection. Fields are written
 * only when they change: an unchanged entry keeps its cache line clean on
 * every CPU that reads it. */
static __always_inline __u32 handle_in(struct xdp_md *ctx, struct pkt *p, struct conn *c,
				       int assured, __u64 now)
{
	__u32 slot = c->dest_slot;
	int changed = 0, refreshed = 0;
	struct conn *moved;

	/* IPVS drops packets of connections whose destination went away. */
	if (!dest_of_conn(c))
		return drop(XDPLB_CNT_DEST_GONE);
	if (p->key.proto == IPPROTO_TCP) {
		__u8 old = c->state;
		__u8 st = tcp_next_state(tcp_dir_in(c->fwd), p->tcp_flags, old);

		if (st != old) {
			changed = 1;
			c->state = st;
			conn_set_timeout(c, conn_timeout(IPPROTO_TCP, st));
			dest_move(slot, old, st);
			if (c->fwd == IP_VS_CONN_F_MASQ && tcp_reply_ack_keeps(old) &&
			    !tcp_reply_ack_keeps(st))
				out_state_sync(p, c, st);
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
		moved = conn_set_assured(p, c, !assured);
		if (moved)
			c = moved;
	}
	stats_add(c, 0, p->l3_len);
	return forward(ctx, p, c);
}

/* Real server -> client: the reply of a Masq connection. The state lives in
 * the client's (IN) entry; the OUT entry keeps a copy, so the IN entry is
 * looked up only when the segment can move the state, and once per
 * last_seen grain to keep its last_seen (listings) and LRU age fresh. */
static __always_inline __u32 handle_out(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	__u64 now = now_ns();
	int tcp = p->key.proto == IPPROTO_TCP;
	int refresh = stale(c->last_seen, now);

	if (refresh)
		c->last_seen = now;
	if (refresh || (tcp && !((p->tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_FIN | XDPLB_TCP_RST |
						    XDPLB_TCP_ACK)) == XDPLB_TCP_ACK &&
				    tcp_reply_ack_keeps(c->state)))) {
		struct conn_key ik = {};
		struct conn *in;
		int assured;

		conn_in_key(&ik, &p->key, c);
		in = conn_lookup(&ik, &assured);
		if (in) {
			if (tcp) {
				__u8 st = tcp_next_state(TCP_DIR_OUTPUT, p->tcp_flags, in->state);

				if (in->state != st) {
					dest_move(in->dest_slot, in->state, st);
					in->state = st;
					conn_set_timeout(in, conn_timeout(IPPROTO_TCP, st));
				}
				if (c->state != st)
					c->state = st;
			}
			if (refresh || stale(in->last_seen, now))
				in->last_seen = now;
		}
	}
	/* ip_vs_out_stats: only while the destination is available */
	if (dest_get(c->dest_slot))
		stats_add(c, 1, p->l3_len);
	return forward(ctx, p, c);
}

/* A new connection to a virtual service, to the destination in slot (the
 * scheduler's or the client's template's pick): build the entries on the
 * stack complete (state, egress), insert them and send. Nothing is looked
 * up again after the insert. */
static __always_inline __u32 conn_new(struct xdp_md *ctx, struct pkt *p, struct service *svc,
				      __be16 svc_port, __u64 now, __u32 slot)
{
	struct conn_key ok = {};
	struct conn nc = {};
	struct dest *d;
	int rc = 0;

	d = dest_get(slot);
	if (!d)
		return drop(XDPLB_CNT_NO_DEST);
	nc.fwd = d->fwd;
	nc.dest_slot = slot;
	nc.dest_seq = d->seq;
	nc.svc_slot = svc->slot;
	nc.last_seen = now;
	if (p->key.proto == IPPROTO_TCP)
		nc.state = tcp_next_state(tcp_dir_in(nc.fwd), p->tcp_flags, IP_VS_TCP_S_NONE);
	conn_set_timeout(&nc, conn_timeout(p->key.proto, nc.state));
	/* ip_vs_sched_persist: the real port only for packets to the service
	 * port (a port-zero service keeps the client's destination port). */
	nc.port = (p->key.dport == svc_port && d->port) ? d->port : p->key.dport;
	if (nc.fwd == IP_VS_CONN_F_MASQ) {
		/* The reply entry: its egress is resolved by the first reply. */
		conn_out_key(&ok, &p->key, d->addr, nc.port);
		nc.addr = p->key.daddr;
		nc.port = p->key.dport;
		nc.dir = XDPLB_DIR_OUT;
		if (conns.update(&ok, &nc))
			return drop(XDPLB_CNT_CONN_FULL);
		nc.port = ok.sport;
	}
	nc.addr = d->addr;
	nc.dir = XDPLB_DIR_IN;
	if (fwd_xdp(nc.fwd))
		rc = egress_new(ctx, p, &nc, now);
	if (conns.update(&p->key, &nc)) {
		if (nc.fwd == IP_VS_CONN_F_MASQ)
			conns.delete(&ok);
		return drop(XDPLB_CNT_CONN_FULL);
	}
	dest_bind(slot, d, conn_kind(p->key.proto, nc.state));
	stats_conn(nc.svc_slot, slot);
	stats_add(&nc, 0, p->l3_len);
	if (!fwd_xdp(nc.fwd))
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return send(ctx, p, &nc, rc);
}

#endif /* XDPLB_TRACK_H */
