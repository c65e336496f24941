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

static __always_inline void count(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += 1;
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

/* Rewrite and send. The first packet of a connection (or of its replies)
 * asks the FIB for the egress and caches it in the entry; the rest of the
 * connection then needs no helper call beyond the redirect. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	if (c->fwd != IP_VS_CONN_F_MASQ && c->fwd != IP_VS_CONN_F_DROUTE) {
		/* Tunnel / local node: no XDP path yet, the stack decides. */
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	if (c->ifindex) {
		nat(p, c);
		return transmit(ctx, p, c);
	}

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

/* Client -> virtual service, on a tracked connection. */
static __always_inline int handle_in(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	__u32 slot = c->dest_slot;
	struct dest *d = dests.lookup(&slot);

	/* IPVS drops packets of connections whose destination went away. */
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE) || d->svc_slot != c->svc_slot)
		return drop(XDPLB_CNT_DEST_GONE);
	if (p->key.proto == IPPROTO_TCP)
		c->state = tcp_next_state(tcp_dir_in(c->fwd), p->tcp_flags, c->state);
	c->last_seen = bpf_ktime_get_coarse_ns();
	stats_add(c, 0, p->l3_len);
	return forward(ctx, p, c);
}

/* Real server -> client: the reply of a Masq connection. The state lives in
 * the client's (IN) entry. */
static __always_inline int handle_out(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	struct conn_key ik = {};
	struct conn *in;
	struct dest *d;
	__u32 slot;

	conn_in_key(&ik, &p->key, c);
	in = conns.lookup(&ik);
	if (in) {
		if (p->key.proto == IPPROTO_TCP)
			in->state = tcp_next_state(TCP_DIR_OUTPUT, p->tcp_flags, in->state);
		in->last_seen = bpf_ktime_get_coarse_ns();
	}
	slot = c->dest_slot;
	d = dests.lookup(&slot);
	if (d && (d->flags & XDPLB_DEST_F_AVAILABLE))
		stats_add(c, 1, p->l3_len);
	return forward(ctx, p, c);
}

/* A new connection to a virtual service: pick the destination from the
 * service's ring and insert its entries. Returns the IN entry, or NULL when
 * the packet must be dropped (the reason is counted). */
static __always_inline struct conn *conn_schedule(struct pkt *p, struct service *svc)
{
	struct conn_key ok = {};
	struct conn nc = {};
	struct ring_key rk = {};
	struct sched_pos *sp;
	struct dest *d;
	struct conn *c;
	__u32 slot, *ds;
	__u64 pos;

	slot = svc->slot;
	sp = sched_pos.lookup(&slot);
	if (!svc->ring_len || !sp) {
		count(XDPLB_CNT_NO_DEST);
		return NULL;
	}
	pos = __sync_fetch_and_add(&sp->pos, 1);
	sched_ring_key(&rk, svc, sched_ring_index(svc, pos));
	ds = sched_ring.lookup(&rk);
	if (!ds) {
		count(XDPLB_CNT_NO_DEST);
		return NULL;
	}
	slot = *ds;
	d = dests.lookup(&slot);
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE)) {
		count(XDPLB_CNT_NO_DEST);
		return NULL;
	}

	nc.fwd = d->fwd;
	nc.dest_slot = slot;
	nc.svc_slot = svc->slot;
	nc.last_seen = bpf_ktime_get_coarse_ns();
	if (d->fwd == IP_VS_CONN_F_MASQ) {
		conn_out_key(&ok, &p->key, d);
		nc.addr = p->key.daddr;
		nc.port = p->key.dport;
		nc.dir = XDPLB_DIR_OUT;
		if (conns.update(&ok, &nc)) {
			count(XDPLB_CNT_CONN_FULL);
			return NULL;
		}
	}
	nc.addr = d->addr;
	nc.port = d->port;
	nc.dir = XDPLB_DIR_IN;
	if (conns.update(&p->key, &nc) || !(c = conns.lookup(&p->key))) {
		if (d->fwd == IP_VS_CONN_F_MASQ)
			conns.delete(&ok);
		count(XDPLB_CNT_CONN_FULL);
		return NULL;
	}
	stats_conn(svc->slot, slot);
	return c;
}

int xdplb_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct svc_key sk = {};
	struct service *svc;
	struct pkt p = {};
	struct conn *c;

	count(XDPLB_CNT_RX);
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
	c = conn_schedule(&p, svc);
	if (!c)
		return XDP_DROP;
	return handle_in(ctx, &p, c);
}
