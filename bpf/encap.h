/* SPDX-License-Identifier: GPL-2.0 */
/*
 * encap.h - Tunnel forwarding (IPVS's ip_vs_tunnel_xmit): a client's packet
 * is put, unchanged, inside an outer IPv4 header to the real server (IP
 * protocol 4, ipip) or inside outer IPv4 + UDP to the destination's
 * --tun-port + a GUE header (version 0, protocol 4), then sent on the
 * destination's cached egress like Route's packets. It runs in a program of
 * its own, xdplb_tunnel, reached by tail call.
 *
 * The outer header copies what ip_vs_tunnel_xmit copies from the inner one:
 * DF, the DSCP with the ECN bits as INET_ECN_encapsulate() leaves them, the
 * TTL. Its source is the balancer's address on the egress interface
 * (tun_src, written by `xdplb attach`). Only the IPv4 outer writer exists
 * (outer_ipv4): an IPv6 one would sit beside it.
 */
#ifndef XDPLB_ENCAP_H
#define XDPLB_ENCAP_H

#include "forward.h"
#include "gue.h"
#include "icmp.h"
#include "icmp6.h"
#include "maps.h"
#include "parse.h"
#include "service.h"
#include "stats.h"

#define XDPLB_IP_DF		0x4000
#define XDPLB_ECN_MASK		0x03
#define XDPLB_ECN_CE		0x03
#define XDPLB_ECN_ECT_0		0x02

/* What each outer family adds: its IP header, and for GUE UDP + GUE. */
#define XDPLB_GUE_HDRS		(sizeof(struct udphdr) + sizeof(struct xdplb_guehdr))
#define XDPLB_IPIP_LEN		sizeof(struct iphdr)
#define XDPLB_GUE_LEN		(sizeof(struct iphdr) + XDPLB_GUE_HDRS)
#define XDPLB_IPIP6_LEN		sizeof(struct ipv6hdr)
#define XDPLB_GUE6_LEN		(sizeof(struct ipv6hdr) + XDPLB_GUE_HDRS)
#define XDPLB_IPV6_MIN_MTU	1280

/* udp_flow_src_port()'s default range (ip_local_port_range 32768..60999):
 * the outer source port is a hash of the client's flow inside it, so a
 * real server's NIC spreads tunnels over its queues (RSS), as the kernel's
 * and Katran's encapsulations do. */
#define XDPLB_TUN_SPORT_MIN	32768
#define XDPLB_TUN_SPORT_MAX	61000

/* The inner packet's fields the outer headers are made of, read before
 * bpf_xdp_adjust_head invalidates every packet pointer. */
struct inner {
	__u16 l3_len, l4_len;	/* host order */
	__be16 id, df;
	__u8 tos, ttl;		/* IPv6: traffic class, hop limit */
	__u8 proto;		/* the GUE / outer protocol: IPPROTO_IPIP or IPPROTO_IPV6 */
	__u8 pad;
	__u16 l4_sum;		/* one's complement sum of the L4 segment; 0: unknown */
	__u16 hdr_sum;		/* ... of an IPv6 packet's headers before it (an IPv4
				 * header with its checksum sums to zero) */
	__u16 l2_len;
	__be16 flow_port;	/* the outer UDP source port */
};

/* What a valid L4 checksum says about its segment: pseudo-header + segment
 * sum to 0xffff, so the segment sums to ~pseudo-header (the kernel's local
 * checksum offload, lco_csum, uses the same identity). A UDP datagram
 * without checksum (0), or shorter than its IP payload (its checksum does
 * not cover the rest), says nothing: 0, unknown. */
static __always_inline __u16 l4_segment_sum(const struct pkt *p, __u16 l4_len, const int af)
{
	__u16 sum;

	if (p->key.proto == IPPROTO_UDP &&
	    (!*p->l4_check || p->l4->len != bpf_htons(l4_len)))
		return 0;
	sum = ~csum_fold64(af == XDPLB_AF_INET6
				   ? pseudo_v6(p->key6.saddr, p->key6.daddr, l4_len, p->key.proto)
				   : pseudo_v4(p->key.saddr, p->key.daddr, p->key.proto, l4_len));
	return sum ? sum : 0xffff;	/* (one's complement zero either way) */
}

/* Does destination d's outer UDP header carry a checksum? (GUE with
 * --tun-csum or --tun-remcsum: only then are the inner sums read.) */
static __always_inline int tunnel_wants_csum(const struct dest *d)
{
	return d->tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GUE &&
	       (d->tun_flags & (IP_VS_TUNNEL_ENCAP_FLAG_CSUM | IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM));
}

/* The inner packet's fields; its checksum sums only when d's outer header
 * wants them (summing an IPv6 header costs about 70 ns: bench, tun6-*). */
static __always_inline void inner_read(struct xdp_md *ctx, const struct pkt *p,
				       struct inner *in, const struct dest *d, const int af)
{
	void *data = (void *)(long)ctx->data;
	__u32 h = bpf_ntohl(p->key.saddr ^ p->key.daddr) ^
		  ((__u32)bpf_ntohs(p->key.sport) << 16 | bpf_ntohs(p->key.dport)) ^ p->key.proto;
	__u32 l3_off;

	in->l3_len = p->l3_len;
	if (af == XDPLB_AF_INET6) {
		const struct ipv6hdr *ip6 = p->ip6;

		l3_off = (void *)ip6 - data;
		in->l4_len = p->l3_len - ((void *)p->l4 - (void *)ip6);
		in->df = bpf_htons(XDPLB_IP_DF);
		in->tos = (bpf_ntohs(*(__be16 *)ip6) >> 4) & 0xff;
		in->ttl = ip6->hop_limit;
		in->proto = IPPROTO_IPV6;
	} else {
		const struct iphdr *ip = p->ip;

		l3_off = (void *)ip - data;
		in->l4_len = p->l3_len - ip->ihl * 4;
		in->id = ip->id;
		in->df = ip->frag_off & bpf_htons(XDPLB_IP_DF);
		in->tos = ip->tos;
		in->ttl = ip->ttl;
		in->proto = IPPROTO_IPIP;
	}
	if (tunnel_wants_csum(d)) {
		in->l4_sum = l4_segment_sum(p, in->l4_len, af);
		if (af == XDPLB_AF_INET6) {
			in->hdr_sum = csum_span(ctx, l3_off, (void *)p->l4 - (void *)p->ip6);
			if (!in->hdr_sum)	/* headers too long to sum */
				in->l4_sum = 0;
		}
	}
	in->l2_len = l3_off;
	h *= 0x61C88647u;	/* hash_32's golden ratio: spreads the flow's bits */
	in->flow_port = bpf_htons(XDPLB_TUN_SPORT_MIN +
				  (__u16)(((__u64)h * (XDPLB_TUN_SPORT_MAX - XDPLB_TUN_SPORT_MIN)) >> 32));
}

/* INET_ECN_encapsulate(inner, inner): the inner TOS, but CE becomes ECT(0). */
static __always_inline __u8 outer_tos(__u8 tos)
{
	return (tos & XDPLB_ECN_MASK) == XDPLB_ECN_CE ? (tos & ~XDPLB_ECN_MASK) | XDPLB_ECN_ECT_0
						      : tos;
}

/* The outer IPv4 header. The ID: 0 with DF, as ip_select_ident() gives a
 * packet without socket; else the inner packet's own, unique enough for
 * the real server to reassemble the outer packet's fragments. */
static __always_inline void outer_ipv4(struct iphdr *ip, const struct inner *in,
				       __be32 saddr, __be32 daddr, __u8 proto, __u16 len)
{
	const __u32 *w = (const void *)ip;

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = outer_tos(in->tos);
	ip->tot_len = bpf_htons(len);
	ip->id = in->df ? 0 : in->id;
	ip->frag_off = in->df;
	ip->ttl = in->ttl;
	ip->protocol = proto;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = ~csum_fold64((__u64)w[0] + w[1] + w[2] + w[3] + w[4]);
}

/* The outer IPv6 header: the traffic class as outer_tos, no flow label
 * (ip_vs_tunnel_xmit_v6), the inner packet's hop limit. */
static __always_inline void outer_ipv6(struct ipv6hdr *ip6, const struct inner *in,
				       const __be32 *saddr, const __be32 *daddr, __u8 nexthdr,
				       __u16 payload_len)
{
	*(__be32 *)ip6 = bpf_htonl(0x60000000 | (__u32)outer_tos(in->tos) << 20);
	ip6->payload_len = bpf_htons(payload_len);
	ip6->nexthdr = nexthdr;
	ip6->hop_limit = in->ttl;
	__builtin_memcpy(&ip6->saddr, saddr, 16);
	__builtin_memcpy(&ip6->daddr, daddr, 16);
}

/* The outer UDP + GUE headers of a gue destination; pseudo: the outer
 * pseudo-header's sum. With --tun-csum, the UDP checksum from the inner
 * packet's own checksums (an IPv4 header sums to zero, an IPv6 one's sum
 * was taken, the segment sums to l4_sum): no pass over the payload. An
 * inner UDP datagram without checksum (or shorter than its IP payload)
 * leaves the outer one 0. --tun-remcsum sends the same: IPVS adds the
 * remote checksum offload option only to a packet whose checksum is left
 * to the hardware (CHECKSUM_PARTIAL), which a forwarded one never is.
 * Without either, 0, as IPVS sends it (udp_set_csum / udp6_set_csum with
 * nocheck) over both families. */
static __always_inline void outer_gue(struct udphdr *udp, struct xdplb_guehdr *gue,
				      const struct inner *in, const struct dest *d, __u64 pseudo)
{
	__u16 len = sizeof(*udp) + sizeof(*gue) + in->l3_len;
	__u64 sum;
	__u16 check;

	udp->source = in->flow_port;
	udp->dest = d->tun_port;
	udp->len = bpf_htons(len);
	udp->check = 0;
	gue->ver_c_hlen = 0;
	gue->proto = in->proto;
	gue->flags = 0;
	if (!tunnel_wants_csum(d) || !in->l4_sum)
		return;
	sum = pseudo + udp->source + udp->dest + udp->len + *(__u16 *)gue + gue->flags +
	      in->hdr_sum + in->l4_sum;
	check = ~csum_fold64(sum);
	udp->check = check ? check : 0xffff;
}

/* The outer headers' length for destination d (outer: its family, a
 * constant). */
static __always_inline __u32 tunnel_overhead(const struct dest *d, const int outer)
{
	int gue = d->tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GUE;

	if (outer == XDPLB_AF_INET6)
		return gue ? XDPLB_GUE6_LEN : XDPLB_IPIP6_LEN;
	return gue ? XDPLB_GUE_LEN : XDPLB_IPIP_LEN;
}

/* Grow the frame by hlen in front of the inner IP header and write the
 * outer headers there (from src to d, of family outer); the L2 header
 * (with its VLAN tag) moves to the new front, its protocol the outer
 * family's. p then describes the outer packet's L2 only. 0 on success. */
static __always_inline int encap(struct xdp_md *ctx, struct pkt *p, const struct inner *in,
				 const struct dest *d, const __be32 *src, __u32 hlen,
				 const int outer)
{
	int gue = d->tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GUE;
	__u32 l2 = in->l2_len == sizeof(struct ethhdr) ? sizeof(struct ethhdr)
						       : sizeof(struct ethhdr) +
							 sizeof(struct xdplb_vlan_hdr);
	__be16 *l3_proto;
	void *data, *data_end, *l3, *l4;

	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* room for the largest outer headers of this family: every frame
	 * that parsed has it once grown by hlen */
	if (data + sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr) +
	    (outer == XDPLB_AF_INET6 ? XDPLB_GUE6_LEN : XDPLB_GUE_LEN) > data_end) {
		bpf_xdp_adjust_head(ctx, hlen);	/* (no frame that parsed is this short) */
		return -1;
	}
	if (l2 == sizeof(struct ethhdr))
		__builtin_memcpy(data, data + hlen, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, data + hlen,
				 sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr));
	l3 = data + l2;
	l3_proto = l3 - sizeof(__be16);		/* h_proto, or the VLAN tag's */
	if (outer == XDPLB_AF_INET6) {
		*l3_proto = bpf_htons(ETH_P_IPV6);
		outer_ipv6(l3, in, src, d->addr6, gue ? IPPROTO_UDP : in->proto,
			   hlen - sizeof(struct ipv6hdr) + in->l3_len);
		l4 = l3 + sizeof(struct ipv6hdr);
		if (gue)
			outer_gue(l4, l4 + sizeof(struct udphdr), in, d,
				  pseudo_v6(src, d->addr6, hlen - sizeof(struct ipv6hdr) + in->l3_len,
					    IPPROTO_UDP));
	} else {
		*l3_proto = bpf_htons(ETH_P_IP);
		outer_ipv4(l3, in, src[0], d->addr, gue ? IPPROTO_UDP : in->proto,
			   hlen + in->l3_len);
		l4 = l3 + sizeof(struct iphdr);
		if (gue)
			outer_gue(l4, l4 + sizeof(struct udphdr), in, d,
				  pseudo_v4(src[0], d->addr, IPPROTO_UDP,
					    hlen - sizeof(struct iphdr) + in->l3_len));
	}
	p->eth = data;
	return 0;
}

/* A client's packet on Tunnel connection c goes on in the program at
 * new_conn[XDPLB_PROG_TUNNEL] (xdplb_tunnel; IPv6: xdplb_tunnel6), which
 * encapsulates it: the encapsulation is kept out of xdplb_main's
 * verification budget. */
static __always_inline __u32 tunnel_call(struct xdp_md *ctx, const struct conn *c, const int af)
{
	__u32 zero = 0;
	struct tun_out *to = tun_out.lookup(&zero);

	if (!to)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	to->dest_slot = c->dest_slot;
	to->addr = c->addr;
	to->port = c->port;
	new_conn.call(ctx, af == XDPLB_AF_INET6 ? XDPLB_PROG_TUNNEL6 : XDPLB_PROG_TUNNEL);
	return drop(XDPLB_CNT_TAIL_CALL);
}

/* The balancer's address on ifindex of the outer family (tun_src, tun_src6),
 * NULL if none is known. */
static __always_inline const __be32 *tunnel_source(__u32 ifindex, const int outer_af)
{
	if (outer_af == XDPLB_AF_INET6) {
		struct tun_src6 *s6 = tun_src6.lookup(&ifindex);

		return s6 && (s6->addr[0] | s6->addr[1] | s6->addr[2] | s6->addr[3]) ? s6->addr
										      : NULL;
	} else {
		__be32 *s = tun_src.lookup(&ifindex);

		return s && *s ? s : NULL;
	}
}

/* A DF packet (IPv6: any) that no longer fits once encapsulated is answered
 * as IPVS's tunnel xmit answers it, with the MTU left inside the tunnel:
 * "fragmentation needed" (IPv4, at least 68), "packet too big" (IPv6, at
 * least 1280); anything else passes untouched, counted tun_too_big. */
static __always_inline __u32 tunnel_too_big(struct xdp_md *ctx, struct pkt *p, __u32 mtu,
					    __u32 overhead, const int af)
{
	if (af == XDPLB_AF_INET6)
		return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_IN,
				    mtu > overhead + XDPLB_IPV6_MIN_MTU ? mtu - overhead
									 : XDPLB_IPV6_MIN_MTU,
				    IP_VS_CONN_F_TUNNEL, 0, 0, af);
	if (ip_df(p->ip) && mtu > overhead + 68)
		return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_IN, mtu - overhead,
				    IP_VS_CONN_F_TUNNEL, 0, 0, af);
	return VERDICT(XDP_PASS, XDPLB_CNT_TUN_TOO_BIG);
}

/* The packet p (of family af) of a Tunnel connection to destination d
 * (slot, of family outer, both constants), encapsulated towards it on its
 * egress. Not forwarded oversize (tunnel_too_big). With the neighbour
 * unresolved the encapsulated packet goes to the stack. Returns a
 * verdict. */
static __always_inline __u32 tunnel_send(struct xdp_md *ctx, struct pkt *p, const struct dest *d,
					 __u32 slot, __be16 port, __u64 now, const int af,
					 const int outer)
{
	__u32 ifindex, mtu_len, overhead = tunnel_overhead(d, outer);
	struct egress *e = NULL;
	struct inner in = {};
	const __be32 *src;
	int rc;

	rc = dest_egress(ctx, p, slot, outer == XDPLB_AF_INET6 ? d->addr6 : &d->addr, d->addr,
			 port, now, &e, outer);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !e)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	ifindex = e->ifindex;
	src = tunnel_source(ifindex, outer);
	if (!src)
		return VERDICT(XDP_PASS, XDPLB_CNT_TUN_NO_SRC);
	inner_read(ctx, p, &in, d, af);
	mtu_len = in.l3_len + overhead;
	if (bpf_check_mtu(ctx, ifindex, &mtu_len, 0, 0))
		return tunnel_too_big(ctx, p, mtu_len, overhead, af);	/* mtu_len: the MTU */
	if (encap(ctx, p, &in, d, src, overhead, outer))
		return VERDICT(XDP_PASS, XDPLB_CNT_TUN_TOO_BIG);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, ifindex, e->smac, e->dmac);
}

/* xdplb_tunnel (af: the inner packet's family): the packet p of the Tunnel
 * connection in tun_out, on to its destination, whose own family is the
 * outer header's. Returns a verdict. */
static __always_inline __u32 tunnel_in(struct xdp_md *ctx, struct pkt *p, const struct tun_out *to,
				       __u64 now, const int af)
{
	__u32 slot = to->dest_slot;
	struct dest *d = dests.lookup(&slot);

	/* the destination the connection was bound to (its address's tag) */
	if (!d || d->addr != to->addr)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	if (d->af == XDPLB_AF_INET6)
		return tunnel_send(ctx, p, d, slot, to->port, now, af, XDPLB_AF_INET6);
	return tunnel_send(ctx, p, d, slot, to->port, now, af, XDPLB_AF_INET);
}

#endif /* XDPLB_ENCAP_H */
