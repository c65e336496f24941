/* SPDX-License-Identifier: GPL-2.0 */
/*
 * frag.h - fragments of TCP and UDP, IPv4's and IPv6's (af, a constant,
 * says which: frags or frags6). IPVS never sees one: the stack reassembles
 * a datagram before IPVS handles it. Here only the first fragment carries
 * the ports: it is balanced as a whole packet would be (xdplb_frag and
 * xdplb_frag6 run balance() on it) and, once sent on, what was done is
 * recorded under the key the receiver reassembles by. Each later fragment
 * finds that record and gets the same rewrite of its IP header and the
 * same egress, so the real server that got the first fragment gets the
 * whole datagram and reassembles it. A later fragment without a record is
 * passed untouched: it may not be ours at all, and the stack never sends
 * it to a real server.
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

/* The datagram of a fragment, as the receiver's reassembly keys it. */
static __always_inline void frag_key_of(const struct pkt *p, union frag_key_any *k, const int af)
{
	if (af == XDPLB_AF_INET6) {
		__builtin_memcpy(k->v6.saddr, p->key6.saddr, 16);
		__builtin_memcpy(k->v6.daddr, p->key6.daddr, 16);
		k->v6.id = p->fh->identification;
		k->v6.proto = p->fh->nexthdr;
		return;
	}
	k->v4.saddr = p->key.saddr;
	k->v4.daddr = p->key.daddr;
	k->v4.id = p->ip->id;
	k->v4.proto = p->key.proto;
}

/* Where a fragment's data starts in its datagram's fragmented data, in bytes. */
static __always_inline __u32 frag_offset(const struct pkt *p, const int af)
{
	if (af == XDPLB_AF_INET6)
		return bpf_ntohs(p->fh->frag_off) & XDPLB_IP6_OFFSET;
	return (bpf_ntohs(p->ip->frag_off) & XDPLB_IP_OFFSET) * 8;
}

/* Where the fragmented data starts: after the IPv4 header, or after the
 * IPv6 fragment header. */
static __always_inline void *frag_data(const struct pkt *p, const int af)
{
	if (af == XDPLB_AF_INET6)
		return p->fh + 1;
	return (void *)p->ip + p->ip->ihl * 4;
}

/* A later fragment's share of its datagram's L3 length: its fragmented data. */
static __always_inline __u16 frag_data_len(const struct pkt *p, const int af)
{
	void *l3 = af == XDPLB_AF_INET6 ? (void *)p->ip6 : (void *)p->ip;

	return p->l3_len - (frag_data(p, af) - l3);
}

/* The L4 header of a packet with ports: what a later fragment must not
 * overlap (it starts the fragmented data: parse_pkt6 takes no header
 * between an IPv6 fragment header and TCP/UDP). (Bounded again: the
 * verifier does not tie p's protocol to the header parse_pkt checked.) */
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

/* The addresses a later fragment's header gets, into r6 (the record of af:
 * one word, or four): the destination's (a reply: the source's; none for
 * Route) and, source-NATed, the other one. */
static __always_inline void frag_rec_addr(struct frag_rec6 *r6, const void *k,
					 const struct conn *c, int out, const int af)
{
	if (af == XDPLB_AF_INET6) {
		const struct conn_key6 *k6 = k;

		if (out)
			__builtin_memcpy(r6->addr6, k6->daddr, 16);
		else if (fwd_dnat(c->fwd))
			__builtin_memcpy(r6->addr6, conn_raddr(c, af), 16);
		if (c->lport)	/* source-NATed: the client's, the local address */
			__builtin_memcpy(r6->addr2_6, out ? k6->saddr
							  : ((const struct conn6 *)c)->laddr6, 16);
		return;
	}
	if (out)
		r6->r.addr = ((const struct conn_key *)k)->daddr;	/* the virtual service's */
	else if (fwd_dnat(c->fwd))
		r6->r.addr = c->addr;
	if (c->lport)		/* source-NATed: the client's, the local address */
		r6->r.addr2 = out ? ((const struct conn_key *)k)->saddr : c->laddr;
}

/* A first fragment's verdict on connection k (of af; out: the reply of a
 * Masq connection): when it was sent on, by XDP or rewritten to the stack,
 * record what was done for the later fragments. Returns the verdict. */
static __always_inline __u32 frag_note(struct xdp_md *ctx, const struct pkt *p, __u32 verdict,
				       const void *k, int out, const int af)
{
	__u32 why = verdict >> 8, ingress = ctx->ingress_ifindex;
	struct frag_work *w;
	struct frag_rec6 *r6;
	struct frag_rec *r;
	struct conn *c;
	__u32 zero = 0;
	int assured;

	if (why != XDPLB_CNT_FWD && why != XDPLB_CNT_TO_STACK)
		return verdict;		/* dropped or untouched: so are the rest */
	w = frag_work.lookup(&zero);
	if (!w)
		return verdict;
	__builtin_memset(w, 0, sizeof(*w));
	r6 = &w->rec;
	r = &r6->r;
	/* parse_pkt6 set it for a first fragment; said again for Debian 12's
	 * clang and 6.1 verifier, which lose that in xdplb_conn6 */
	if (af == XDPLB_AF_INET6 && !p->fh)
		return verdict;
	c = conn_lookup((void *)k, &assured, af);
	if (!c)
		return verdict;
	frag_rec_addr(r6, k, c, out, af);
	r->out = out;
	r->ifindex = frag_egress(ingress, verdict, c, out);
	if (r->ifindex) {
		__builtin_memcpy(r->smac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(r->dmac, p->eth->h_dest, ETH_ALEN);
	}
	r->svc_slot = c->svc_slot;
	/* handle_out counts a reply only while its destination is available */
	if (!out || dest_get(c->dest_slot))
		r->dest_slot = c->dest_slot;
	r->l4_len = l4_hdr_len(p, (void *)(long)ctx->data_end);
	r->stamp = now_ns();
	frag_key_of(p, &w->key, af);
	if (af == XDPLB_AF_INET6)
		frags6.update(&w->key.v6, r6);
	else
		frags.update(&w->key.v4, r);
	return verdict;
}

/* balance()'s verdict on a packet with ports, noted when it is a first
 * fragment: frag is a constant, so xdplb_main compiles none of it. */
static __always_inline __u32 frag_noted(struct xdp_md *ctx, const struct pkt *p, __u32 verdict,
					const void *k, int out, const int frag, const int af)
{
	return frag ? frag_note(ctx, p, verdict, k, out, af) : verdict;
}

/* The IP header's share of a NAT (rewrite.h): addr (of af; zero: none)
 * over the source (src) or the destination. A later fragment has no L4
 * header, and the L4 checksum, over the whole datagram, was updated in the
 * first fragment. IPv6 has no header checksum. */
static __always_inline void frag_nat_addr(struct pkt *p, const __be32 *addr, int src,
					  const int af)
{
	struct iphdr *ip = p->ip;
	__be32 *field;

	if (af == XDPLB_AF_INET6) {
		if (!(addr[0] | addr[1] | addr[2] | addr[3]))
			return;
		field = src ? p->ip6->saddr.in6_u.u6_addr32 : p->ip6->daddr.in6_u.u6_addr32;
		__builtin_memcpy(field, addr, 16);
		return;
	}
	if (!addr[0])
		return;
	field = src ? &ip->saddr : &ip->daddr;
	ip->check = csum_apply(ip->check, csum_diff4(*field, addr[0]));
	*field = addr[0];
}

/* r's rewrite of a later fragment: the destination (a reply: the source)
 * and, source-NATed, the other address. */
static __always_inline void frag_nat(struct pkt *p, const struct frag_rec *r, const int af)
{
	const struct frag_rec6 *r6 = (const struct frag_rec6 *)r;

	if (af == XDPLB_AF_INET6) {
		frag_nat_addr(p, r6->addr6, r->out, af);
		frag_nat_addr(p, r6->addr2_6, !r->out, af);
	} else {
		frag_nat_addr(p, &r->addr, r->out, af);
		frag_nat_addr(p, &r->addr2, !r->out, af);
	}
}

/* The record of a later fragment's datagram (key k of af), or NULL. */
static __always_inline struct frag_rec *frag_rec_get(union frag_key_any *k, const int af)
{
	if (af == XDPLB_AF_INET6)
		return (struct frag_rec *)frags6.lookup(&k->v6);
	return frags.lookup(&k->v4);
}

/* A later fragment (offset > 0): what its first fragment got, or passed
 * untouched without a live record. Counted as IPVS counts the reassembled
 * datagram, one packet of its whole L3 length: the first fragment was the
 * packet (less IPv6's fragment header, which reassembly removes), a later
 * one adds its fragmented data. Returns a verdict. */
static __always_inline __u32 frag_follow(struct xdp_md *ctx, struct pkt *p, const int af)
{
	union frag_key_any fk = {};
	struct frag_rec *r;

	frag_key_of(p, &fk, af);
	r = frag_rec_get(&fk, af);
	/* signed: another CPU's clock cache may be a tick ahead */
	if (!r || (__s64)(now_ns() - r->stamp) > (__s64)XDPLB_FRAG_TTL_NS)
		return VERDICT(XDP_PASS, XDPLB_CNT_FRAG_UNTRACKED);
	if (frag_offset(p, af) < r->l4_len)
		return drop(XDPLB_CNT_FRAG_OVERLAP);
	if (r->dest_slot)
		stats_count(r->svc_slot, r->dest_slot, r->out, 0, frag_data_len(p, af));
	frag_nat(p, r, af);
	if (!r->ifindex)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, r->ifindex, r->smac, r->dmac);
}

#endif /* XDPLB_FRAG_H */
