/* SPDX-License-Identifier: GPL-2.0 */
/*
 * forward.h - sending a connection's packet on (IPVS's ip_vs_xmit.c): the
 * egress from bpf_fib_lookup, cached in the entry and, for new connections,
 * per destination; the Masq rewrite; XDP_TX or a DEVMAP redirect.
 */
#ifndef XDPLB_FORWARD_H
#define XDPLB_FORWARD_H

#include <linux/if_ether.h>

#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "stats.h"

#ifndef AF_INET
#define AF_INET 2
#endif

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

/* Send on the egress cached in c. Returns a verdict. */
static __always_inline __u32 transmit(struct xdp_md *ctx, struct pkt *p, const struct conn *c)
{
	if (c->ifindex == ctx->ingress_ifindex) {
		set_macs(p->eth, c->smac, c->dmac);
		return VERDICT(XDP_TX, XDPLB_CNT_FWD);
	}
	/* An egress without xdplb attached is not in tx_ports: the stack
	 * forwards the (NATed) packet, so the MACs must still be ours. */
	if (tx_ports.redirect_map(c->ifindex, XDP_PASS) != XDP_REDIRECT)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	set_macs(p->eth, c->smac, c->dmac);
	return VERDICT(XDP_REDIRECT, XDPLB_CNT_FWD);
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

/* Rewrite and send by the FIB's answer rc for c. Returns a verdict. */
static __always_inline __u32 send(struct xdp_md *ctx, struct pkt *p, const struct conn *c, int rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		nat(p, c);
		return transmit(ctx, p, c);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel resolves the neighbour; Masq must reach it NATed. */
		nat(p, c);
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	}
	return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
}

/* Rewrite and send on a tracked connection. The first packet of each
 * direction that finds no cached egress asks the FIB and caches the answer
 * in the entry; the rest of the connection needs no helper call beyond the
 * redirect. Returns a verdict. */
static __always_inline __u32 forward(struct xdp_md *ctx, struct pkt *p, struct conn *c)
{
	if (!fwd_xdp(c->fwd))
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	if (c->ifindex) {
		nat(p, c);
		return transmit(ctx, p, c);
	}
	return send(ctx, p, c, fib_resolve(ctx, p, c));
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

#endif /* XDPLB_FORWARD_H */
