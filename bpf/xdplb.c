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

/* --- live destination counts (dest_conns) and thresholds ---------------- */

#define XDPLB_KIND_INACTIVE	0
#define XDPLB_KIND_ACTIVE	1
#define XDPLB_KIND_PERSIST	2

static __always_inline __u32 timeout_of(__u32 idx)
{
	__u32 *t = timeouts.lookup(&idx);

	if (t && *t)
		return *t;
	return default_timeout(idx);
}

static __always_inline __u32 conn_timeout(__u8 proto, __u8 state)
{
	return timeout_of(proto == IPPROTO_UDP ? XDPLB_TMO_UDP : state);
}

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

static __always_inline int dest_valid(const struct dest *d, __u32 svc_slot)
{
	return d && (d->flags & XDPLB_DEST_F_AVAILABLE) && d->svc_slot == svc_slot;
}

/* --- the two connection tables (conns, conns_assured: see xdplb.h) -------- */

/* The entry of k: assured first (where established traffic finds it), then
 * the LRU. *assured says which table holds it. */
static __always_inline struct conn *conn_lookup(struct conn_key *k, int *assured)
{
	struct conn *c = conns_assured.lookup(k);

	*assured = c != NULL;
	return c ? c : conns.lookup(k);
}

/* Move the entry c of k to the other table: copied in first, then deleted,
 * so a concurrent lookup finds one or the other. Non-zero: the insert
 * failed and the entry stays where it was. */
static __always_inline int conn_move(struct conn_key *k, struct conn *c, int to_assured)
{
	struct conn copy = *c;

	if (to_assured) {
		if (conns_assured.update(k, &copy))
			return -1;
		conns.delete(k);
	} else {
		if (conns.update(k, &copy))
			return -1;
		conns_assured.delete(k);
	}
	return 0;
}

/* Should a connection change table, at this packet from its client?
 * TCP is assured when ESTABLISHED and goes back to the LRU once it has
 * closed (its TIME_WAIT / CLOSE entry only catches stragglers); UDP is
 * assured once it outlives a last_seen grain. A failed move is retried at
 * the next state change or refresh, not on every packet. */
static __always_inline int conn_wants_move(const struct pkt *p, const struct conn *c,
					   int assured, int changed, int refreshed)
{
	if (p->key.proto != IPPROTO_TCP)
		return !assured && refreshed;
	if (assured)
		return c->state == IP_VS_TCP_S_TIME_WAIT || c->state == IP_VS_TCP_S_CLOSE;
	return (changed || refreshed) && c->state == IP_VS_TCP_S_ESTABLISHED;
}

/* Move the connection of p (IN entry c, and a Masq connection's reply
 * entry) to the other table. Returns the IN entry in its new table, or
 * NULL if it could not move (it is still c; a reply entry that moved alone
 * is found by conn_lookup all the same). */
static __always_inline struct conn *conn_set_assured(struct pkt *p, struct conn *c,
						     int to_assured)
{
	struct conn_key ok = {};
	struct conn *o;

	if (c->fwd == IP_VS_CONN_F_MASQ) {
		conn_out_key(&ok, &p->key, c->addr, c->port);
		o = to_assured ? conns.lookup(&ok) : conns_assured.lookup(&ok);
		if (o && conn_move(&ok, o, to_assured))
			goto failed;
	}
	if (conn_move(&p->key, c, to_assured))
		goto failed;
	return to_assured ? conns_assured.lookup(&p->key) : conns.lookup(&p->key);
failed:
	if (to_assured)
		count(XDPLB_CNT_ASSURE_FULL);
	return NULL;
}

/* An IN entry idle past its timeout: the kernel's timer would have removed
 * it. Uncount it (once: the first CPU to flag it does) and delete it and
 * its reply entry; the packet is then handled as if there were none. */
static __always_inline void conn_expire(struct pkt *p, struct conn *c, int assured)
{
	struct conn_key ok = {};
	__u32 slot = c->dest_slot;
	struct dest *d;

	if (!__sync_lock_test_and_set(&c->last_seen, 0))
		return;		/* another CPU expired it */
	d = dests.lookup(&slot);
	if (dest_valid(d, c->svc_slot) && (!c->dest_seq || c->dest_seq == d->seq))
		dest_unbind(slot, d, conn_kind(p->key.proto, c->state));
	if (c->fwd == IP_VS_CONN_F_MASQ) {
		conn_out_key(&ok, &p->key, c->addr, c->port);
		conns.delete(&ok);	/* in either table: it may have moved alone */
		conns_assured.delete(&ok);
	}
	if (assured)
		conns_assured.delete(&p->key);
	else
		conns.delete(&p->key);
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
	int assured;

	conn_out_key(&ok, &p->key, c->addr, c->port);
	o = conn_lookup(&ok, &assured);
	if (o)
		o->state = state;
}

/* Client -> virtual service, on a tracked connection. Fields are written
 * only when they change: an unchanged entry keeps its cache line clean on
 * every CPU that reads it. */
static __always_inline int handle_in(struct xdp_md *ctx, struct pkt *p, struct conn *c,
				     int assured, __u64 now)
{
	__u32 slot = c->dest_slot;
	struct dest *d = dests.lookup(&slot);
	int changed = 0, refreshed = 0;
	struct conn *moved;

	/* IPVS drops packets of connections whose destination went away (a
	 * slot since reused by another destination has another seq). */
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE) || d->svc_slot != c->svc_slot ||
	    (c->dest_seq && c->dest_seq != d->seq))
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

/* --- schedulers ---------------------------------------------------------- */

/* rr / wrr: the next entry of the service's ring. An entry whose destination
 * is over its upper threshold is passed over (at most one cycle). */
static __always_inline __u32 sched_ring_pick(const struct service *svc)
{
	struct ring_key rk = {};
	struct sched_pos *sp;
	struct dest_conns *dc;
	__u32 slot = svc->slot, *ds;
	__u64 pos;
	int i;

	sp = sched_pos.lookup(&slot);
	if (!svc->ring_len || !sp)
		return 0;
	#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		pos = __sync_fetch_and_add(&sp->pos, 1);
		sched_ring_key(&rk, svc, sched_ring_index(svc, pos));
		ds = sched_ring.lookup(&rk);
		if (!ds)
			return 0;
		slot = *ds;
		dc = dest_conns.lookup(&slot);
		if (!dc || !dc->overload)
			return slot;
		if (i + 1 >= svc->ring_len)
			return 0;
	}
	return 0;
}

/* Entry idx of a hash scheduler's table (0 = empty bucket). */
static __always_inline __u32 table_slot(const struct service *svc, __u32 idx)
{
	struct ring_key rk = {};
	__u32 *ds;

	sched_ring_key(&rk, svc, idx);
	ds = sched_ring.lookup(&rk);
	return ds ? *ds : 0;
}

/* is_unavailable() of sh / mh: weight <= 0 or OVERLOAD. */
static __always_inline int dest_unavailable(__u32 slot)
{
	struct dest *d = dests.lookup(&slot);
	struct dest_conns *dc;

	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE) || !d->weight)
		return 1;
	dc = dest_conns.lookup(&slot);
	return dc && dc->overload;
}

/* ip_vs_sh_schedule (with sh-port, sh-fallback). */
static __always_inline __u32 sched_sh(const struct service *svc, const struct pkt *p)
{
	__be16 port = (svc->flags & IP_VS_SVC_F_SCHED2) ? p->key.sport : 0;
	__u32 ihash = sh_hashkey(p->key.saddr, port, 0);
	__u32 slot = table_slot(svc, ihash), off;

	if (!slot)
		return 0;
	if (!dest_unavailable(slot))
		return slot;
	if (!(svc->flags & IP_VS_SVC_F_SCHED1))
		return 0;
	#pragma clang loop unroll(disable)
	for (off = 0; off < XDPLB_SH_TAB_SIZE; off++) {
		__u32 roff = (off + ihash) % XDPLB_SH_TAB_SIZE;

		slot = table_slot(svc, sh_hashkey(p->key.saddr, port, roff));
		if (!slot)
			return 0;
		if (!dest_unavailable(slot))
			return slot;
	}
	return 0;
}

/* ip_vs_dh_schedule: hash of the packet's destination address. */
static __always_inline __u32 sched_dh(const struct service *svc, const struct pkt *p)
{
	__u32 slot = table_slot(svc, xdplb_hash_32(bpf_ntohl(p->key.daddr), 8));

	if (!slot || dest_unavailable(slot))
		return 0;
	return slot;
}

/* ip_vs_mh_schedule (with mh-port, mh-fallback). */
static __always_inline __u32 sched_mh(const struct service *svc, const struct pkt *p)
{
	__be16 port = (svc->flags & IP_VS_SVC_F_SCHED2) ? p->key.sport : 0;
	__u32 ihash = mh_hashkey(p->key.saddr, port, 0);
	__u32 slot = table_slot(svc, ihash), off;

	if (!slot)
		return 0;
	if (!dest_unavailable(slot))
		return slot;
	if (!(svc->flags & IP_VS_SVC_F_SCHED1))
		return 0;
	#pragma clang loop unroll(disable)
	for (off = 0; off < XDPLB_MH_FALLBACK_PROBES; off++) {
		__u32 roff = (off + ihash) % XDPLB_MH_TAB_SIZE;

		slot = table_slot(svc, mh_hashkey(p->key.saddr, port, roff));
		if (!slot)
			return 0;
		if (!dest_unavailable(slot))
			return slot;
	}
	return 0;
}

static __always_inline __s64 nonneg(__s64 v)
{
	return v < 0 ? 0 : v;
}

/* lc, wlc, sed, nq, fo, ovf: one walk of the destination list in kernel
 * order, with the live counts; ties keep the earlier destination. Every
 * scheduler is one form, its parameters in the service (so the verifier
 * walks one loop, not one per scheduler):
 * skip overloaded destinations (and, for lc nq ovf, weight 0; for ovf,
 * active > weight), overhead = a * active + b * inactive + c, and the first
 * candidate with weight > 0 is replaced by a later one when
 * loh * weight > doh * lweight (lc compares with every weight = 1; fo and
 * ovf with every overhead = 1, which keeps the highest weight). The running
 * minimum lives in the per-CPU sched_out value, not in registers, for the
 * same reason (no per-path knowledge of it carried between iterations). */
static __always_inline __u32 sched_list(const struct service *svc)
{
	__u32 slot = svc->slot, zero = 0;
	struct svc_dests *l = svc_dests.lookup(&slot);
	struct sched_out *acc = sched_out.lookup(&zero);
	int i;

	if (!l || !acc)
		return 0;
	acc->least = 0;
	acc->lw = 0;
	acc->loh = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		struct dest_conns *dc;
		__u32 s = l->d[i].slot, w = l->d[i].weight, we;
		__u64 act, doh;
		/* re-read every iteration (volatile): a flag the verifier learnt
		 * in one iteration would split every later one in two */
		__u32 f = *(volatile __u8 *)&svc->list_flags;

		if (!s)
			break;
		dc = dest_conns.lookup(&s);
		if (!dc || dc->overload)
			continue;
		act = nonneg(dc->active);
		if (((f & XDPLB_LIST_F_SKIP_ZERO) && !w) ||
		    ((f & XDPLB_LIST_F_SKIP_OVER) && act > w))
			continue;
		if ((f & XDPLB_LIST_F_IDLE) && !act) {
			acc->least = s;
			break;
		}
		doh = *(volatile __u16 *)&svc->list_a * act +
		      *(volatile __u8 *)&svc->list_b * nonneg(dc->inactive) +
		      *(volatile __u8 *)&svc->list_c;
		we = (f & XDPLB_LIST_F_UNIT) ? 1 : w;
		if (acc->least ? acc->loh * we > doh * acc->lw : we > 0) {
			acc->least = s;
			acc->lw = we;
			acc->loh = doh;
		}
	}
	return acc->least;
}

/* lblc / lblcr's is_overloaded(): more active connections than weight while
 * some destination of the service is below half its weight. */
static __always_inline int lblc_overloaded(const struct service *svc, __u32 slot, __u32 weight)
{
	struct dest_conns *dc = dest_conns.lookup(&slot);
	struct svc_dests *l;
	__u32 s = svc->slot;
	int i;

	if (!dc || nonneg(dc->active) <= (__s64)weight)
		return 0;
	l = svc_dests.lookup(&s);
	if (!l)
		return 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		s = l->d[i].slot;
		if (!s)
			break;
		dc = dest_conns.lookup(&s);
		if (dc && nonneg(dc->active) * 2 < (__s64)l->d[i].weight)
			return 1;
	}
	return 0;
}

/* A cached destination lblc / lblcr may use: AVAILABLE and weight > 0. */
static __always_inline struct dest *lblc_dest(const struct service *svc, __u32 slot)
{
	struct dest *d = dests.lookup(&slot);

	if (!dest_valid(d, svc->slot) || !d->weight)
		return 0;
	return d;
}

/* ip_vs_lblc_schedule / ip_vs_lblcr_schedule, keyed on the packet's
 * destination address. */
static __always_inline __u32 sched_lblc(const struct service *svc, const struct pkt *p, __u64 now,
					int lblcr)
{
	struct lblc_key k = {};
	struct lblc_ent *en, ne = {};
	struct dest *d;
	__u32 slot;

	k.svc_slot = svc->slot;
	k.addr = p->key.daddr;
	en = lblc.lookup(&k);
	if (en && !lblcr) {
		slot = en->slot[0];
		d = lblc_dest(svc, slot);
		if (d && !lblc_overloaded(svc, slot, d->weight)) {
			en->last_used = now;
			return slot;
		}
	} else if (en) {
		struct sched_out *acc;
		__u32 zero = 0, i, least;

		/* ip_vs_dest_set_min and ip_vs_dest_set_max over the set (its
		 * unused members are 0), running values in map memory (see
		 * sched_list) */
		acc = sched_out.lookup(&zero);
		if (!acc)
			return 0;
		en->last_used = now;
		acc->least = acc->lw = acc->loh = 0;
		acc->most = acc->mw = acc->moh = acc->mi = 0;
#pragma clang loop unroll(disable)
		for (i = 0; i < XDPLB_LBLCR_SET; i++) {
			struct dest_conns *dc;
			__u64 doh, w;

			slot = *(volatile __u32 *)&en->slot[i];
			if (!slot)
				break;
			d = dests.lookup(&slot);
			dc = dest_conns.lookup(&slot);
			if (!d || !dc)
				continue;
			w = *(volatile __u32 *)&d->weight;
			doh = (nonneg(dc->active) << 8) + nonneg(dc->inactive);
			if (w && (!acc->most || acc->moh * w < doh * acc->mw)) {
				acc->most = slot;
				acc->mi = i;
				acc->mw = w;
				acc->moh = doh;
			}
			if (dc->overload || !(d->flags & XDPLB_DEST_F_AVAILABLE))
				continue;
			if (acc->least ? acc->loh * w > doh * acc->lw : w > 0) {
				acc->least = slot;
				acc->lw = w;
				acc->loh = doh;
			}
		}
		least = acc->least;
		if (en->n > 1 && now - en->last_mod > XDPLB_LBLCR_EXPIRATION_NS && acc->most) {
			/* ip_vs_dest_set_erase of the most loaded member */
#pragma clang loop unroll(disable)
			for (i = 0; i + 1 < XDPLB_LBLCR_SET; i++) {
				if (i >= acc->mi)
					en->slot[i] = *(volatile __u32 *)&en->slot[i + 1];
			}
			en->slot[XDPLB_LBLCR_SET - 1] = 0;
			en->n = en->n - 1;
			en->last_mod = now;
		}
		if (least) {
			d = dests.lookup(&least);
			if (d && !lblc_overloaded(svc, least, d->weight))
				return least;
		}
		slot = sched_list(svc);
		if (!slot)
			return 0;
		/* ip_vs_dest_set_insert(check): at the head unless present (a
		 * full set keeps its members) */
#pragma clang loop unroll(disable)
		for (i = 0; i < XDPLB_LBLCR_SET; i++) {
			if (*(volatile __u32 *)&en->slot[i] == slot)
				return slot;
		}
		if (en->slot[XDPLB_LBLCR_SET - 1])
			return slot;
#pragma clang loop unroll(disable)
		for (i = XDPLB_LBLCR_SET - 1; i > 0; i--)
			en->slot[i] = *(volatile __u32 *)&en->slot[i - 1];
		en->slot[0] = slot;
		en->n = en->n + 1;
		en->last_mod = now;
		return slot;
	}
	slot = sched_list(svc);
	if (!slot)
		return 0;
	ne.n = 1;
	ne.slot[0] = slot;
	ne.last_used = now;
	ne.last_mod = now;
	lblc.update(&k, &ne);
	return slot;
}

/* Scheduler families: one tail-called program each (see new_conn in maps.h). */
#define XDPLB_FAM_RING	0
#define XDPLB_FAM_LIST	1
#define XDPLB_FAM_SH	2
#define XDPLB_FAM_DH	3
#define XDPLB_FAM_MH	4
#define XDPLB_FAM_LBLC	5
#define XDPLB_FAM_LBLCR	6

/* The destination slot the service's scheduler picks, 0 for none (fam is a
 * constant: each program keeps only its own scheduler). */
static __always_inline __u32 sched_pick(const struct service *svc, const struct pkt *p, __u64 now,
					int fam)
{
	switch (fam) {
	case XDPLB_FAM_RING:
		return sched_ring_pick(svc);
	case XDPLB_FAM_SH:
		return svc->ring_len ? sched_sh(svc, p) : 0;
	case XDPLB_FAM_DH:
		return svc->ring_len ? sched_dh(svc, p) : 0;
	case XDPLB_FAM_MH:
		return svc->ring_len ? sched_mh(svc, p) : 0;
	case XDPLB_FAM_LBLC:
		return sched_lblc(svc, p, now, 0);
	case XDPLB_FAM_LBLCR:
		return sched_lblc(svc, p, now, 1);
	default:
		return sched_list(svc);
	}
}

/* ip_vs_sched_persist: the client's template <proto, client & netmask, 0,
 * vaddr, vport (0 for a port-zero service or FTP)> names the destination
 * while it lives and its destination is still in the service (a quiesced,
 * weight-0 destination keeps its clients: expire_quiescent_template = 0);
 * otherwise the scheduler picks one and a new template is made
 * (persist_new). Each use re-arms the template. */
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
	if (t->svc_slot == svc->slot && !conn_expired(t, now) && dest_valid(d, svc->slot) &&
	    d->seq == t->dest_seq) {
		if (stale(t->last_seen, now))
			t->last_seen = now;
		return slot;
	}
	if (__sync_lock_test_and_set(&t->last_seen, 0) && dest_valid(d, t->svc_slot) &&
	    d->seq == t->dest_seq)
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

/* A new connection to a virtual service: pick the destination with the
 * service's scheduler (through its template if persistent), build the
 * entries on the stack complete (state, egress), insert them and send.
 * Nothing is looked up again after the insert. */
static __always_inline int conn_new(struct xdp_md *ctx, struct pkt *p, struct service *svc,
				    __be16 svc_port, __u64 now, __u32 slot)
{
	struct conn_key ok = {};
	struct conn nc = {};
	struct dest *d;
	int rc = 0;

	d = dests.lookup(&slot);
	if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE))
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
	if (!fwd_xdp(nc.fwd)) {
		count(XDPLB_CNT_TO_STACK);
		return XDP_PASS;
	}
	return send(ctx, p, &nc, rc);
}

/* conn_reuse_mode (sysctl[XDPLB_SYSCTL_CONN_REUSE_MODE], 1 with xdplbadm as in
 * the kernel): a new SYN on a TIME_WAIT or CLOSE entry ends it and is
 * scheduled as a new connection. */
static __always_inline int conn_reuse(const struct pkt *p, const struct conn *c)
{
	__u32 idx = XDPLB_SYSCTL_CONN_REUSE_MODE, *mode;

	if ((p->tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_ACK | XDPLB_TCP_RST)) != XDPLB_TCP_SYN ||
	    p->key.proto != IPPROTO_TCP ||
	    (c->state != IP_VS_TCP_S_TIME_WAIT && c->state != IP_VS_TCP_S_CLOSE))
		return 0;
	mode = sysctl.lookup(&idx);
	return mode && *mode;
}

/* The service of a packet: its address and port, else a port-zero (all
 * ports) service of its address. *port: the service's port. */
static __always_inline struct service *svc_find(const struct pkt *p, __be16 *port)
{
	struct svc_key sk = {};
	struct service *svc;

	sk.addr = p->key.daddr;
	sk.port = p->key.dport;
	sk.proto = p->key.proto;
	svc = services.lookup(&sk);
	if (svc) {
		*port = sk.port;
		return svc;
	}
	sk.port = 0;
	*port = 0;
	return services.lookup(&sk);
}

/* A new connection, first half: the scheduler of the service's family
 * (through the client's template if persistent) picks the destination;
 * xdplb_conn builds the connection. */
static __always_inline int sched_prog(struct xdp_md *ctx, int fam)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct conn_key tk = {};
	struct sched_out *so;
	struct service *svc;
	struct pkt p = {};
	struct dest *d;
	__be16 port = 0;
	__u32 slot = 0, zero = 0;
	__u64 now = now_ns();
	int persist;

	if (parse_pkt(data, data_end, &p) < 0)
		return pass();
	svc = svc_find(&p, &port);
	so = sched_out.lookup(&zero);
	if (!svc || !so)
		return pass();
	persist = svc->flags & IP_VS_SVC_F_PERSISTENT;
	if (persist)
		slot = persist_lookup(svc, &p, &tk, port, now);
	if (!slot) {
		slot = sched_pick(svc, &p, now, fam);
		if (!slot)
			return drop(XDPLB_CNT_NO_DEST);
		d = dests.lookup(&slot);
		if (!d || !(d->flags & XDPLB_DEST_F_AVAILABLE))
			return drop(XDPLB_CNT_NO_DEST);
		if (persist)
			persist_new(svc, &tk, d, slot, now);
	}
	so->dest_slot = slot;
	new_conn.call(ctx, XDPLB_PROG_CONN);
	return drop(XDPLB_CNT_NO_DEST);
}

int xdplb_new_ring(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_RING); }
int xdplb_new_list(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_LIST); }
int xdplb_new_sh(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_SH); }
int xdplb_new_dh(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_DH); }
int xdplb_new_mh(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_MH); }
int xdplb_new_lblc(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_LBLC); }
int xdplb_new_lblcr(struct xdp_md *ctx) { return sched_prog(ctx, XDPLB_FAM_LBLCR); }

/* A new connection, second half: build the entries and send. */
int xdplb_conn(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sched_out *so;
	struct service *svc;
	struct pkt p = {};
	__be16 port = 0;
	__u32 zero = 0;

	if (parse_pkt(data, data_end, &p) < 0)
		return pass();
	svc = svc_find(&p, &port);
	so = sched_out.lookup(&zero);
	if (!svc || !so)
		return pass();
	return conn_new(ctx, &p, svc, port, now_ns(), so->dest_slot);
}

int xdplb_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct service *svc;
	struct pkt p = {};
	struct conn *c;
	__be16 port;
	__u64 now;
	int assured;

	if (parse_pkt(data, data_end, &p) < 0)
		return pass();

	c = conn_lookup(&p.key, &assured);
	if (c) {
		if (c->dir == XDPLB_DIR_OUT)
			return handle_out(ctx, &p, c);
		if (c->dir == XDPLB_DIR_IN) {
			now = now_ns();
			if (!conn_expired(c, now) && !conn_reuse(&p, c))
				return handle_in(ctx, &p, c, assured, now);
			conn_expire(&p, c, assured);
		}
		/* expired, reused, or a template's key: as if untracked */
	}

	svc = svc_find(&p, &port);
	if (!svc)
		return pass();
	/* IPVS schedules TCP only on a SYN. */
	if (p.key.proto == IPPROTO_TCP &&
	    (p.tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_ACK | XDPLB_TCP_RST)) != XDPLB_TCP_SYN)
		return pass();
	if (!ip_csum_ok(p.ip, data_end))
		return pass();
	new_conn.call(ctx, svc->sched);
	return drop(XDPLB_CNT_NO_DEST);	/* no program for this scheduler */
}
