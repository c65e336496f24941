/* SPDX-License-Identifier: GPL-2.0 */
/*
 * frag.h - IPv4 fragments of TCP and UDP. IPVS never sees one: the stack
 * reassembles a datagram before IPVS handles it. Here only the first
 * fragment carries the ports: it is balanced as a whole packet would be
 * (xdplb_frag runs balance() on it) and, once sent on, what was done is
 * recorded in frags (xdplb.h) under the key the receiver reassembles by.
 * Each later fragment finds that record and gets the same rewrite of its
 * IP header and the same egress, so the real server that got the first
 * fragment gets the whole datagram and reassembles it. A later fragment
 * without a record is passed untouched: it may not be ours at all, and
 * the stack never sends it to a real server.
 */
#ifndef XDPLB_FRAG_H
#define XDPLB_FRAG_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "clock.h"
#include "conn.h"
#include "forward.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "stats.h"

/* The datagram of an IPv4 fragment, as the receiver's reassembly keys it. */
static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *k)
{
	k->saddr = p->key.saddr;
	k->daddr = p->key.daddr;
	k->id = p->ip->id;
	k->proto = p->key.proto;
}

/* Where a fragment's data starts in its datagram, in bytes. */
static __always_inline __u32 frag_offset(const struct iphdr *ip)
{
	return (bpf_ntohs(ip->frag_off) & XDPLB_IP_OFFSET) * 8;
}

/* The L4 header of a packet with ports: what a later fragment must not
 * overlap. (Bounded again: the verifier does not tie p's protocol to the
 * header parse_pkt checked.) */
static __always_inline __u8 l4_hdr_len(const struct pkt *p, const void *data_end)
{
	const struct tcphdr *tcp = (const void *)p->l4;

	if (p->key.proto != IPPROTO_TCP)
		return sizeof(struct udphdr);
	if ((const void *)(tcp + 1) > data_end)
		return 0xff;	/* not reached: parse_pkt checked it */
	return tcp->doff * 4;
}

/* The egress a first fragment just left by, from the verdict and what the
 * sending used: XDP_TX goes back out of the ingress, a redirect to the
 * destination's cached egress (client -> real server) or the connection's
 * (a Masq reply). 0: the stack got it (rewritten). */
static __always_inline __u32 frag_egress(__u32 ingress, __u32 verdict, const struct conn *c,
					 int out)
{
	__u32 idx = c->dest_slot & (XDPLB_EGRESS_SLOTS - 1);
	struct egress *e;

	if ((verdict & 0xff) == XDP_PASS)
		return 0;
	if ((verdict & 0xff) == XDP_TX)
		return ingress;
	if (out)
		return c->ifindex;
	e = egress_cache.lookup(&idx);
	return e ? e->ifindex : 0;
}

/* A first fragment's verdict on connection k (out: the reply of a Masq
 * connection): when it was sent on, by XDP or rewritten to the stack,
 * record what was done for the later fragments. Returns the verdict. */
static __always_inline __u32 frag_note(struct xdp_md *ctx, const struct pkt *p, __u32 verdict,
				       struct conn_key *k, int out)
{
	__u32 why = verdict >> 8, ingress = ctx->ingress_ifindex;
	struct frag_key fk = {};
	struct frag_rec r = {};
	struct conn *c;
	int assured;

	if (why != XDPLB_CNT_FWD && why != XDPLB_CNT_TO_STACK)
		return verdict;		/* dropped or untouched: so are the rest */
	c = conn_lookup(k, &assured, XDPLB_AF_INET);
	if (!c)
		return verdict;
	if (out)
		r.addr = k->daddr;	/* the virtual service's */
	else if (fwd_dnat(c->fwd))
		r.addr = c->addr;
	if (c->lport)		/* source-NATed: the client's, the local address */
		r.addr2 = out ? k->saddr : c->laddr;
	r.out = out;
	r.ifindex = frag_egress(ingress, verdict, c, out);
	if (r.ifindex) {
		__builtin_memcpy(r.smac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(r.dmac, p->eth->h_dest, ETH_ALEN);
	}
	r.svc_slot = c->svc_slot;
	/* handle_out counts a reply only while its destination is available */
	if (!out || dest_get(c->dest_slot))
		r.dest_slot = c->dest_slot;
	r.l4_len = l4_hdr_len(p, (void *)(long)ctx->data_end);
	r.stamp = now_ns();
	frag_key_of(p, &fk);
	frags.update(&fk, &r);
	return verdict;
}

/* balance()'s verdict on a packet with ports, noted when it is a first
 * fragment: frag is a constant, so xdplb_main compiles none of it. */
static __always_inline __u32 frag_noted(struct xdp_md *ctx, const struct pkt *p, __u32 verdict,
					struct conn_key *k, int out, const int frag)
{
	return frag ? frag_note(ctx, p, verdict, k, out) : verdict;
}

/* The IP header's share of a NAT (rewrite.h): a later fragment has no L4
 * header, and the L4 checksum, over the whole datagram, was updated in the
 * first fragment. */
static __always_inline void frag_nat(struct iphdr *ip, __be32 *field, __be32 addr)
{
	ip->check = csum_apply(ip->check, csum_diff4(*field, addr));
	*field = addr;
}

/* A later fragment (offset > 0): what its first fragment got, or passed
 * untouched without a live record. Counted as IPVS counts the reassembled
 * datagram, one packet of its whole L3 length: the first fragment was the
 * packet, a later one adds its payload. Returns a verdict. */
static __always_inline __u32 frag_follow(struct xdp_md *ctx, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	struct frag_key fk = {};
	struct frag_rec *r;

	frag_key_of(p, &fk);
	r = frags.lookup(&fk);
	/* signed: another CPU's clock cache may be a tick ahead */
	if (!r || (__s64)(now_ns() - r->stamp) > (__s64)XDPLB_FRAG_TTL_NS)
		return VERDICT(XDP_PASS, XDPLB_CNT_FRAG_UNTRACKED);
	if (frag_offset(ip) < r->l4_len)
		return drop(XDPLB_CNT_FRAG_OVERLAP);
	if (r->dest_slot)
		stats_count(r->svc_slot, r->dest_slot, r->out, 0, p->l3_len - ip->ihl * 4);
	if (r->addr)
		frag_nat(ip, r->out ? &ip->saddr : &ip->daddr, r->addr);
	if (r->addr2)
		frag_nat(ip, r->out ? &ip->daddr : &ip->saddr, r->addr2);
	if (!r->ifindex)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, r->ifindex, r->smac, r->dmac);
}

#endif /* XDPLB_FRAG_H */
