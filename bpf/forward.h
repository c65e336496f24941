/* SPDX-License-Identifier: GPL-2.0 */
/*
 * forward.h - sending a connection's packet on (IPVS's ip_vs_xmit.c): the
 * egress from bpf_fib_lookup, cached per destination for the client's
 * packets and in the entry for a Masq connection's replies; the Masq
 * rewrite; XDP_TX or a DEVMAP redirect. A packet over the egress MTU goes
 * to xdplb_icmp (icmp.h).
 */
#ifndef XDPLB_FORWARD_H
#define XDPLB_FORWARD_H

#include <linux/if_ether.h>

#include "conn.h"
#include "icmp.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "stats.h"


/* Masq, full-NAT and Route have an XDP path here (Tunnel's is encap.h's);
 * local node goes to the stack. */
static __always_inline int fwd_xdp(__u8 fwd)
{
	return fwd == IP_VS_CONN_F_MASQ || fwd == IP_VS_CONN_F_DROUTE ||
	       fwd == XDPLB_CONN_F_FULLNAT;
}

/* Does c's client-side packet get its destination rewritten (Masq and
 * full-NAT)? */
static __always_inline int fwd_dnat(__u8 fwd)
{
	return fwd == IP_VS_CONN_F_MASQ || fwd == XDPLB_CONN_F_FULLNAT;
}

/* Send on a resolved egress. Returns a verdict. */
static __always_inline __u32 transmit(struct xdp_md *ctx, struct pkt *p, __u32 ifindex,
				      const __u8 *smac, const __u8 *dmac)
{
	if (ifindex == ctx->ingress_ifindex) {
		set_macs(p->eth, smac, dmac);
		return VERDICT(XDP_TX, XDPLB_CNT_FWD);
	}
	/* An egress without xdplb attached is not in tx_ports: the stack
	 * forwards the (NATed) packet, so the MACs must still be ours. */
	if (tx_ports.redirect_map(ifindex, XDP_PASS) != XDP_REDIRECT)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	set_macs(p->eth, smac, dmac);
	return VERDICT(XDP_REDIRECT, XDPLB_CNT_FWD);
}

/* Ask the FIB for the egress of p sent as src:sport -> dst:dport
 * (addresses of af: one word, or four). */
static __always_inline int fib_ask(struct xdp_md *ctx, const struct pkt *p, const __be32 *src,
				   __be16 sport, const __be32 *dst, __be16 dport,
				   struct bpf_fib_lookup *fib, const int af)
{
	fib->family = af;
	fib->l4_protocol = p->key.proto;
	fib->tot_len = 0;	/* no MTU check: the answer carries the MTU (icmp.h) */
	fib->ifindex = ctx->ingress_ifindex;
	fib->sport = sport;
	fib->dport = dport;
	/* (a tunnel's outer family may differ from the packet's: p->ip6 or
	 * p->ip is then NULL) */
	if (af == XDPLB_AF_INET6) {
		/* the traffic class and flow label, as the kernel's flowi6 */
		if (p->ip6)
			fib->flowinfo = *(__be32 *)p->ip6 & bpf_htonl(0x0fffffff);
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	} else {
		if (p->ip)
			fib->tos = p->ip->tos;
		fib->ipv4_src = src[0];
		fib->ipv4_dst = dst[0];
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* The egress towards destination slot (addr:port; addr of af, its tag the
 * first word or the fold), for p from a client: from the per-CPU cache
 * when it holds a fresh answer for this destination and ingress, else from
 * the FIB (and cached). Ignores source-based routing, as IPVS's own
 * per-destination route cache does. Returns the FIB's code; *e is the
 * egress on success. */
static __always_inline int dest_egress(struct xdp_md *ctx, struct pkt *p, __u32 slot,
				       const __be32 *addr, __be32 tag, __be16 port, __u64 now,
				       struct egress **e, const int af)
{
	__u32 idx = slot & (XDPLB_EGRESS_SLOTS - 1);
	struct bpf_fib_lookup fib = {};
	struct egress *c = egress_cache.lookup(&idx);
	int rc;

	if (!c)
		return BPF_FIB_LKUP_RET_NOT_FWDED;
	*e = c;
	if (c->dest_slot == slot && c->addr == tag && c->ingress == ctx->ingress_ifindex &&
	    now - c->stamp < XDPLB_EGRESS_TTL_NS)
		return BPF_FIB_LKUP_RET_SUCCESS;
	/* Route keeps the VIP in the header but goes to the real server. */
	rc = fib_ask(ctx, p, af == XDPLB_AF_INET6 ? p->key6.saddr : &p->key.saddr, p->key.sport,
		     addr, port, &fib, af);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		c->stamp = now;
		c->dest_slot = slot;
		c->addr = tag;
		c->ingress = ctx->ingress_ifindex;
		c->ifindex = fib.ifindex;
		c->mtu = fib.mtu_result ? fib.mtu_result : 0xffff;
		__builtin_memcpy(c->smac, fib.smac, ETH_ALEN);
		__builtin_memcpy(c->dmac, fib.dmac, ETH_ALEN);
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* the egress without its MACs, for this packet only (Tunnel's
		 * outer source is the egress's address): stamp 0 is never fresh */
		c->stamp = 0;
		c->ifindex = fib.ifindex;
	}
	return rc;
}

/* A client's packet on connection c (a new one's entry may still be on the
 * stack): NAT for Masq (and the source too when source-NATed: full-NAT,
 * hairpin), then on to the destination. With no neighbour
 * entry yet the kernel resolves it (Masq must reach it NATed); with no
 * route the packet is passed untouched. Returns a verdict. */
static __always_inline __u32 forward_in(struct xdp_md *ctx, struct pkt *p, const struct conn *c,
					__u64 now, const int af)
{
	const __be32 *raddr = conn_raddr(c, af);
	struct egress *e = NULL;
	int rc;

	if (!fwd_xdp(c->fwd))
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	rc = dest_egress(ctx, p, c->dest_slot, raddr, c->addr, c->port, now, &e, af);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	/* (a source-NATed packet cannot go to the stack to be fragmented: it
	 * comes from one of its own addresses, a martian) */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && e && p->l3_len > e->mtu)
		return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_IN, e->mtu,
				    c->lport ? XDPLB_CONN_F_FULLNAT : c->fwd, c->addr, c->port, af);
	if (fwd_dnat(c->fwd))
		nat_dst(p, raddr, c->port, af);
	if (c->lport)
		nat_src(p, conn_laddr(c, af), c->lport, af);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || !e)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, e->ifindex, e->smac, e->dmac);
}

/* The egress of Masq or full-NAT connection c's replies (p, from the real
 * server, as the virtual service ik would send it) towards the client (ik's
 * source): cached in the entry, asked of the FIB by the first reply that
 * finds none. Returns the FIB's code. */
static __always_inline int reply_egress(struct xdp_md *ctx, const struct pkt *p, struct conn *c,
					const union conn_key_any *ik, const int af)
{
	const __be32 *vaddr = af == XDPLB_AF_INET6 ? ik->v6.daddr : &ik->v4.daddr;
	const __be32 *caddr = af == XDPLB_AF_INET6 ? ik->v6.saddr : &ik->v4.saddr;
	__be16 vport = af == XDPLB_AF_INET6 ? ik->v6.dport : ik->v4.dport;
	__be16 cport = af == XDPLB_AF_INET6 ? ik->v6.sport : ik->v4.sport;
	struct bpf_fib_lookup fib = {};
	int rc;

	if (c->ifindex)
		return BPF_FIB_LKUP_RET_SUCCESS;
	rc = fib_ask(ctx, p, vaddr, vport, caddr, cport, &fib, af);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(c->smac, fib.smac, ETH_ALEN);
		__builtin_memcpy(c->dmac, fib.dmac, ETH_ALEN);
		c->ifindex = fib.ifindex;
	}
	return rc;
}

/* A real server's reply on Masq or source-NATed connection c (key ik):
 * un-NAT to the virtual service (and, source-NATed, to the client's
 * address and port) and send towards the client, on the egress the entry
 * caches. Returns a verdict. */
static __always_inline __u32 forward_out(struct xdp_md *ctx, struct pkt *p, struct conn *c,
					 const union conn_key_any *ik, const int af)
{
	const __be32 *vaddr = af == XDPLB_AF_INET6 ? ik->v6.daddr : &ik->v4.daddr;
	__be16 vport = af == XDPLB_AF_INET6 ? ik->v6.dport : ik->v4.dport;
	int rc = reply_egress(ctx, p, c, ik, af);
	__u32 mtu;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	mtu = rc == BPF_FIB_LKUP_RET_SUCCESS ? reply_too_big(ctx, p, c->ifindex) : 0;
	if (mtu) {
		/* IPv6: the stack answers the real server "packet too big"; not
		 * for a reply to a local address (source-NATed), which it would
		 * take as its own: answered here, from that address */
		if (af == XDPLB_AF_INET6 && c->lport)
			return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_IN, mtu, XDPLB_CONN_F_FULLNAT,
					    0, 0, af);
		if (af == XDPLB_AF_INET6)
			return VERDICT(XDP_PASS, XDPLB_CNT_TOO_BIG);
		return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_OUT, mtu,
				    c->lport ? XDPLB_CONN_F_FULLNAT : c->fwd, vaddr[0], vport, af);
	}
	nat_src(p, vaddr, vport, af);
	if (c->lport)
		nat_dst(p, af == XDPLB_AF_INET6 ? ik->v6.saddr : &ik->v4.saddr,
			af == XDPLB_AF_INET6 ? ik->v6.sport : ik->v4.sport, af);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, c->ifindex, c->smac, c->dmac);
}

#endif /* XDPLB_FORWARD_H */
