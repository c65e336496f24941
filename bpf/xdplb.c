/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdplb.c - the XDP data path: parse -> conn lookup -> schedule -> rewrite
 * -> forward -> count. One program for every interface of the host.
 *
 * Every map access is in this file: bcc rewrites map calls in the main file
 * only, so the headers hold the map-free logic.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>

#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "sched.h"
#include "conn.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* One global counter per frame: every frame ends in exactly one of them,
 * so XDPLB_CNT_RX is their sum and is not counted here (xdplb/maps.py). */
static __always_inline void count(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += 1;
}

/* bpf_ktime_get_coarse_ns(), which only moves on a tick, costs ~13 ns a
 * call here; bpf_jiffies64() is inlined by the verifier to one load. So the
 * coarse time is read once per jiffy per CPU and kept in a per-CPU cache. */
static __always_inline __u64 now_ns(void)
{
	__u64 j = bpf_jiffies64();
	__u32 zero = 0;
	struct clock *clk = clock.lookup(&zero);

	if (!clk)
		return bpf_ktime_get_coarse_ns();
	if (clk->jiffies != j) {
		clk->ns = bpf_ktime_get_coarse_ns();
		clk->jiffies = j;
	}
	return clk->ns;
}

static __always_inline int pass(void)
{
	count(XDPLB_CNT_PASS);
	return XDP_PASS;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

static __always_inline void stats_bump(struct ip_vs_stats *s, int out, __u16 bytes)
{
	if (!s)
		return;
	if (out) {
		s->outpkts++;
		s->outbytes += bytes;
	} else {
		s->inpkts++;
		s->inbytes += bytes;
	}
}

/* ip_vs_in_stats() / ip_vs_out_stats(): the service and the destination. */
static __always_inline void stats_add(const struct conn *c, int out, __u16 bytes)
{
	__u32 slot = c->svc_slot;

	stats_bump(svc_stats.lookup(&slot), out, bytes);
	slot = c->dest_slot;
	stats_bump(dest_stats.lookup(&slot), out, bytes);
}

static __always_inline void stats_conn(__u32 svc_slot, __u32 dest_slot)
{
	struct ip_vs_stats *s;

	s = svc_stats.lookup(&svc_slot);
	if (s)
		s->conns++;
	s = dest_stats.lookup(&dest_slot);
	if (s)
		s->conns++;
}

/* Masq and Route have an XDP path; Tunnel / local node go to the stack. */
static __always_inline int fwd_xdp(__u8 fwd)
{
	return fwd == IP_VS_CONN_F_MASQ || fwd == IP_VS_CONN_F_DROUTE;
}

static __always_inline void nat(struct pkt *p, const struct conn *c)
{
	if (c->fwd != IP_VS_CONN_F_MASQ)
		return;
	if (c->dir == XDPLB_DIR_IN)
		nat_dst(p, c->addr, c->port);
	else
		nat_src(p, c->addr, c->port);
}

static __always_inline int transmit(struct xdp_md *ctx, struct pkt *p, const struct conn *c)
{
	if (c->ifindex == ctx->ingress_ifindex) {
		set_macs(p->eth, c->smac, c->dmac);
		count(XDPLB_CNT_FWD);
		return XDP_TX;
	}
	/* An egress without xdplb attached is not in tx_ports: the stack
	 * forwards the (NATed) packet, so the MACs must still be ours. */
	if (tx_ports.redirect_map(c->ifindex, XDP_PASS) != XDP_REDIRECT) {
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	set_macs(p->eth, c->smac, c->dmac);
	count(XDPLB_CNT_FWD);
	return XDP_REDIRECT;
}

/* Ask the FIB for the egress of c's direction; on success it is stored in c
 * (the map entry, or a new entry still on the stack). */
static __always_inline int fib_resolve(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET;
	fib.tos = p->ip->tos;
	fib.l4_protocol = p->key.proto;
	fib.tot_len = p->l3_len;
	fib.ifindex = ctx->ingress_ifindex;
	if (c->dir == XDPLB_DIR_IN) {
		/* Route keeps the VIP in the header but goes to the real server. */
		fib.ipv4_src = p->key.saddr;
		fib.ipv4_dst = c->addr;
		fib.sport = p->key.sport;
		fib.dport = c->port;
	} else {
		fib.ipv4_src = c->addr;
		fib.ipv4_dst = p->key.daddr;
		fib.sport = c->port;
		fib.dport = p->key.dport;
	}

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(c->smac, fib.smac, ETH_ALEN);
		__builtin_memcpy(c->dmac, fib.dmac, ETH_ALEN);
		c->ifindex = fib.ifindex;
	}
	return rc;
}

/* Rewrite and send by the FIB's answer rc for c. */
static __always_inline int send(struct xdp_md *ctx, struct pkt *p, const struct conn *c, int rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		nat(p, c);
		return transmit(ctx, p, c);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel resolves the neighbour; Masq must reach it NATed. */
		nat(p, c);
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	count(XDPLB_CNT_NO_ROUTE);
	return XDP_PASS;
}

/* Rewrite and send on a tracked connection. The first packet of each
 * direction that finds no cached egress asks the FIB and caches the answer
 * in the entry; the rest of the connection needs no helper call beyond the
 * redirect. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	if (!fwd_xdp(c->fwd)) {
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	if (c->ifindex) {
		nat(p, c);
		return transmit(ctx, p, c);
	}
	return send(ctx, p, c, fib_resolve(ctx, p, c));
}

/* The IN entry of a Masq connection went back to a state a reply ACK moves:
 * tell the OUT entry, whose copy lets the reply path skip the IN lookup. */
static __always_inline void out_state_sync(const struct pkt *p, const struct conn *c, __u8 state)
{
	struct conn_key ok = {};
	struct conn *o;

	conn_out_key(&ok, &p->key, c->addr, c->port);
	o = conns.lookup(&ok);
	if (o)
		o->state = state;
}

/* Client -> virtual service, on a tracked connection. Fields are written
 * only when they change: an unchanged entry keeps its cache line clean on
 * every CPU that reads it. */
static __always_inline int handle_in(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	__u32 slot = c->dest_slot;
	struct dest *d = dests.lookup(&slot);
	__u64 now;

	/* IPVS drops packets of connections whose destination went away. */
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE) || d->svc_slot != c->svc_slot)
		return drop(XDPLB_CNT_DEST_GONE);
	if (p->key.proto == IPPROTO_TCP) {
		__u8 old = c->state;
		__u8 st = tcp_next_state(tcp_dir_in(c->fwd), p->tcp_flags, old);

		if (st != old) {
			c->state = st;
			if (c->fwd == IP_VS_CONN_F_MASQ && tcp_reply_ack_keeps(old) &&
			    !tcp_reply_ack_keeps(st))
				out_state_sync(p, c, st);
		}
	}
	now = now_ns();
	if (stale(c->last_seen, now))
		c->last_seen = now;
	stats_add(c, 0, p->l3_len);
	return forward(ctx, p, c);
}

/* Real server -> client: the reply of a Masq connection. The state lives in
 * the client's (IN) entry; the OUT entry keeps a copy, so the IN entry is
 * looked up only when the segment can move the state, and once per
 * last_seen grain to keep its last_seen (listings) and LRU age fresh. */
static __always_inline int handle_out(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	__u64 now = now_ns();
	int tcp = p->key.proto == IPPROTO_TCP;
	int refresh = stale(c->last_seen, now);
	struct dest *d;
	__u32 slot;

	if (refresh)
		c->last_seen = now;
	if (refresh || (tcp && !((p->tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_FIN | XDPLB_TCP_RST |
						    XDPLB_TCP_ACK)) == XDPLB_TCP_ACK &&
				    tcp_reply_ack_keeps(c->state)))) {
		struct conn_key ik = {};
		struct conn *in;

		conn_in_key(&ik, &p->key, c);
		in = conns.lookup(&ik);
		if (in) {
			if (tcp) {
				__u8 st = tcp_next_state(TCP_DIR_OUTPUT, p->tcp_flags, in->state);

				if (in->state != st)
					in->state = st;
				if (c->state != st)
					c->state = st;
			}
			if (refresh || stale(in->last_seen, now))
				in->last_seen = now;
		}
	}
	slot = c->dest_slot;
	d = dests.lookup(&slot);
	if (d && (d->flags & XDPLB_DEST_F_AVAILABLE))
		stats_add(c, 1, p->l3_len);
	return forward(ctx, p, c);
}

/* Egress towards a new connection's destination: from the per-CPU cache
 * when it holds a fresh answer for this destination and ingress, else from
 * the FIB (and cached). Ignores source-based routing, as IPVS's own
 * per-destination route cache does. */
static __always_inline int egress_new(struct xdp_md *ctx, struct pkt *p, struct conn *nc, __u64 now)
{
	__u32 idx = nc->dest_slot & (XDPLB_EGRESS_SLOTS - 1);
	struct egress *e = egress_cache.lookup(&idx);
	int rc;

	if (e && e->dest_slot == nc->dest_slot && e->addr == nc->addr &&
	    e->ingress == ctx->ingress_ifindex && now - e->stamp < XDPLB_EGRESS_TTL_NS) {
		nc->ifindex = e->ifindex;
		__builtin_memcpy(nc->smac, e->smac, ETH_ALEN);
		__builtin_memcpy(nc->dmac, e->dmac, ETH_ALEN);
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	rc = fib_resolve(ctx, p, nc);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && e) {
		e->stamp = now;
		e->dest_slot = nc->dest_slot;
		e->addr = nc->addr;
		e->ingress = ctx->ingress_ifindex;
		e->ifindex = nc->ifindex;
		__builtin_memcpy(e->smac, nc->smac, ETH_ALEN);
		__builtin_memcpy(e->dmac, nc->dmac, ETH_ALEN);
	}
	return rc;
}

/* A new connection to a virtual service: pick the destination from the
 * service's ring, build its entries on the stack complete (state, egress),
 * insert them and send. Nothing is looked up again after the insert. */
static __always_inline int conn_new(struct xdp_md *ctx, struct pkt *p, struct service *svc)
{
	struct conn_key ok = {};
	struct conn nc = {};
	struct ring_key rk = {};
	struct sched_pos *sp;
	struct dest *d;
	__u32 slot, *ds;
	__u64 pos, now;
	int rc = 0;

	slot = svc->slot;
	sp = sched_pos.lookup(&slot);
	if (!svc->ring_len || !sp)
		return drop(XDPLB_CNT_NO_DEST);
	pos = __sync_fetch_and_add(&sp->pos, 1);
	sched_ring_key(&rk, svc, sched_ring_index(svc, pos));
	ds = sched_ring.lookup(&rk);
	if (!ds)
		return drop(XDPLB_CNT_NO_DEST);
	slot = *ds;
	d = dests.lookup(&slot);
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE))
		return drop(XDPLB_CNT_NO_DEST);

	now = now_ns();
	nc.fwd = d->fwd;
	nc.dest_slot = slot;
	nc.svc_slot = svc->slot;
	nc.last_seen = now;
	if (p->key.proto == IPPROTO_TCP)
		nc.state = tcp_next_state(tcp_dir_in(nc.fwd), p->tcp_flags, IP_VS_TCP_S_NONE);
	if (nc.fwd == IP_VS_CONN_F_MASQ) {
		/* The reply entry: its egress is resolved by the first reply. */
		conn_out_key(&ok, &p->key, d->addr, d->port);
		nc.addr = p->key.daddr;
		nc.port = p->key.dport;
		nc.dir = XDPLB_DIR_OUT;
		if (conns.update(&ok, &nc))
			return drop(XDPLB_CNT_CONN_FULL);
	}
	nc.addr = d->addr;
	nc.port = d->port;
	nc.dir = XDPLB_DIR_IN;
	if (fwd_xdp(nc.fwd))
		rc = egress_new(ctx, p, &nc, now);
	if (conns.update(&p->key, &nc)) {
		if (nc.fwd == IP_VS_CONN_F_MASQ)
			conns.delete(&ok);
		return drop(XDPLB_CNT_CONN_FULL);
	}
	stats_conn(nc.svc_slot, slot);
	stats_add(&nc, 0, p->l3_len);
	if (!fwd_xdp(nc.fwd)) {
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	return send(ctx, p, &nc, rc);
}

int xdplb_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct svc_key sk = {};
	struct service *svc;
	struct pkt p = {};
	struct conn *c;

	if (parse_pkt(data, data_end, &p) < 0)
		return pass();

	c = conns.lookup(&p.key);
	if (c) {
		if (c->dir == XDPLB_DIR_OUT)
			return handle_out(ctx, &p, c);
		return handle_in(ctx, &p, c);
	}

	sk.addr = p.key.daddr;
	sk.port = p.key.dport;
	sk.proto = p.key.proto;
	svc = services.lookup(&sk);
	if (!svc)
		return pass();
	/* IPVS schedules TCP only on a SYN. */
	if (p.key.proto == IPPROTO_TCP &&
	    (p.tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_ACK | XDPLB_TCP_RST)) != XDPLB_TCP_SYN)
		return pass();
	return conn_new(ctx, &p, svc);
}
