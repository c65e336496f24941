/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rewrite.h - NAT rewrites with incremental checksum updates (RFC 1624,
 * HC' = ~(~HC + ~m + m')), and the MAC rewrite every forwarded frame gets.
 * Header fields stay in network byte order: one's complement sums do not
 * care about byte order as long as every word is read the same way.
 */
#ifndef XDPLB_REWRITE_H
#define XDPLB_REWRITE_H

#include "parse.h"

static __always_inline __u32 csum_diff4(__be32 from, __be32 to)
{
	__u32 nf = ~(__u32)from;

	return (nf & 0xffff) + (nf >> 16) + ((__u32)to & 0xffff) + ((__u32)to >> 16);
}

static __always_inline __u32 csum_diff2(__be16 from, __be16 to)
{
	return (__u16)~from + (__u32)(__u16)to;
}

/* Apply an accumulated ~m + m' to a checksum field. */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	__u32 s = (__u16)~check + diff;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* The L4 checksum covers the pseudo-header, so an address change enters
 * both checksums. UDP's 0 means "no checksum" and must stay 0; a computed 0
 * is sent as 0xffff (RFC 768). */
static __always_inline void l4_csum_update(struct pkt *p, __u32 diff)
{
	__u16 old = *p->l4_check;

	if (p->key.proto == IPPROTO_UDP) {
		if (!old)
			return;
		old = csum_apply(old, diff);
		*p->l4_check = old ? old : 0xffff;
		return;
	}
	*p->l4_check = csum_apply(old, diff);
}

/* An address field (IPv4: one word; IPv6: four) rewritten to addr:
 * returns the change's ~m + m'. An IPv6 header has no checksum of its own. */
static __always_inline __u32 addr_rewrite(struct pkt *p, __be32 *field, const __be32 *addr,
					  const int af)
{
	__u32 d = csum_diff4(field[0], addr[0]);

	if (af == XDPLB_AF_INET6) {
		d += csum_diff4(field[1], addr[1]) + csum_diff4(field[2], addr[2]) +
		     csum_diff4(field[3], addr[3]);
		__builtin_memcpy(field, addr, 16);
		return d;
	}
	p->ip->check = csum_apply(p->ip->check, d);
	field[0] = addr[0];
	return d;
}

/* Masq, client -> real server: daddr:dport -> addr:port (addr: one word for
 * IPv4, four for IPv6; af a constant). */
static __always_inline void nat_dst(struct pkt *p, const __be32 *addr, __be16 port, const int af)
{
	__be32 *field = af == XDPLB_AF_INET6 ? p->ip6->daddr.in6_u.u6_addr32 : &p->ip->daddr;
	__u32 d = addr_rewrite(p, field, addr, af);

	l4_csum_update(p, d + csum_diff2(p->key.dport, port));
	p->l4->dest = port;
}

/* Masq, real server -> client: saddr:sport -> addr:port. */
static __always_inline void nat_src(struct pkt *p, const __be32 *addr, __be16 port, const int af)
{
	__be32 *field = af == XDPLB_AF_INET6 ? p->ip6->saddr.in6_u.u6_addr32 : &p->ip->saddr;
	__u32 d = addr_rewrite(p, field, addr, af);

	l4_csum_update(p, d + csum_diff2(p->key.sport, port));
	p->l4->source = port;
}

static __always_inline void set_macs(struct ethhdr *eth, const __u8 *smac, const __u8 *dmac)
{
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
}

#endif /* XDPLB_REWRITE_H */
