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
#include "maps.h"
#include "parse.h"
#include "service.h"
#include "stats.h"

#define XDPLB_IP_DF		0x4000
#define XDPLB_ECN_MASK		0x03
#define XDPLB_ECN_CE		0x03
#define XDPLB_ECN_ECT_0		0x02

#define XDPLB_IPIP_LEN		sizeof(struct iphdr)
#define XDPLB_GUE_LEN		(sizeof(struct iphdr) + sizeof(struct udphdr) + \
				 sizeof(struct xdplb_guehdr))

/* udp_flow_src_port()'s default range (ip_local_port_range 32768..60999):
 * the outer source port is a hash of the client's flow inside it, so a
 * real server's NIC spreads tunnels over its queues (RSS), as the kernel's
 * and Katran's encapsulations do. */
#define XDPLB_TUN_SPORT_MIN	32768
#define XDPLB_TUN_SPORT_MAX	61000

/* The inner packet's fields the outer headers are made of, read before
 * bpf_xdp_adjust_head invalidates every packet pointer. */
struct inner_v4 {
	__u16 l3_len, l4_len;	/* host order */
	__be16 id, df;
	__u8 tos, ttl;
	__u16 l4_sum;		/* one's complement sum of the L4 segment; 0: unknown */
	__u16 l2_len;
	__be16 flow_port;	/* the outer UDP source port */
};

/* The IPv4 pseudo-header's sum (network-order words, as the packet's). */
static __always_inline __u64 pseudo_v4(__be32 saddr, __be32 daddr, __u8 proto, __u16 len)
{
	return (__u64)saddr + daddr + bpf_htons(proto) + bpf_htons(len);
}

/* What a valid L4 checksum says about its segment: pseudo-header + segment
 * sum to 0xffff, so the segment sums to ~pseudo-header (the kernel's local
 * checksum offload, lco_csum, uses the same identity). A UDP datagram
 * without checksum (0), or shorter than its IP payload (its checksum does
 * not cover the rest), says nothing: 0, unknown. */
static __always_inline __u16 l4_segment_sum(const struct pkt *p, __u16 l4_len)
{
	__u16 sum;

	if (p->key.proto == IPPROTO_UDP &&
	    (!*p->l4_check || p->l4->len != bpf_htons(l4_len)))
		return 0;
	sum = ~csum_fold64(pseudo_v4(p->key.saddr, p->key.daddr, p->key.proto, l4_len));
	return sum ? sum : 0xffff;	/* (one's complement zero either way) */
}

static __always_inline void inner_read(const struct pkt *p, struct inner_v4 *in)
{
	const struct iphdr *ip = p->ip;
	__u32 h = bpf_ntohl(p->key.saddr ^ p->key.daddr) ^
		  ((__u32)bpf_ntohs(p->key.sport) << 16 | bpf_ntohs(p->key.dport)) ^ p->key.proto;

	in->l3_len = p->l3_len;
	in->l4_len = p->l3_len - ip->ihl * 4;
	in->id = ip->id;
	in->df = ip->frag_off & bpf_htons(XDPLB_IP_DF);
	in->tos = ip->tos;
	in->ttl = ip->ttl;
	in->l4_sum = l4_segment_sum(p, in->l4_len);
	in->l2_len = (void *)ip - (void *)p->eth;
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
static __always_inline void outer_ipv4(struct iphdr *ip, const struct inner_v4 *in,
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

/* The outer UDP + GUE headers of a gue destination. With --tun-csum, the
 * UDP checksum from the inner packet's own checksums (its IP header sums to
 * zero, its segment to l4_sum): no pass over the payload. An inner UDP
 * datagram without checksum (or shorter than its IP payload) leaves the
 * outer one 0 (allowed over IPv4). --tun-remcsum sends the same: IPVS adds
 * the remote checksum offload option only to a packet whose checksum is
 * left to the hardware (CHECKSUM_PARTIAL), which a forwarded one never is. */
static __always_inline void outer_gue(struct udphdr *udp, struct xdplb_guehdr *gue,
				      const struct inner_v4 *in, const struct dest *d,
				      __be32 saddr, __be32 daddr)
{
	__u16 len = sizeof(*udp) + sizeof(*gue) + in->l3_len;
	__u64 sum;
	__u16 check;

	udp->source = in->flow_port;
	udp->dest = d->tun_port;
	udp->len = bpf_htons(len);
	udp->check = 0;
	gue->ver_c_hlen = 0;
	gue->proto = IPPROTO_IPIP;
	gue->flags = 0;
	if (!(d->tun_flags & (IP_VS_TUNNEL_ENCAP_FLAG_CSUM | IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM)) ||
	    !in->l4_sum)
		return;
	sum = pseudo_v4(saddr, daddr, IPPROTO_UDP, len) + udp->source + udp->dest + udp->len +
	      *(__u16 *)gue + gue->flags + in->l4_sum;
	check = ~csum_fold64(sum);
	udp->check = check ? check : 0xffff;
}

/* Grow the frame by hlen in front of the inner IP header and write the
 * outer headers there; the L2 header (with its VLAN tag) moves to the new
 * front. p then describes the outer packet's L2 and L3 only. 0 on success. */
static __always_inline int encap_v4(struct xdp_md *ctx, struct pkt *p, const struct inner_v4 *in,
				    const struct dest *d, __be32 saddr, __be32 daddr)
{
	int gue = d->tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GUE;
	__u32 hlen = gue ? XDPLB_GUE_LEN : XDPLB_IPIP_LEN;
	void *data, *data_end;
	struct iphdr *ip;

	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr) + XDPLB_GUE_LEN >
	    data_end) {
		bpf_xdp_adjust_head(ctx, hlen);	/* (no frame that parsed is this short) */
		return -1;
	}
	if (in->l2_len == sizeof(struct ethhdr))
		__builtin_memcpy(data, data + hlen, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, data + hlen,
				 sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr));
	ip = data + (in->l2_len == sizeof(struct ethhdr) ? sizeof(struct ethhdr) :
		     sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr));
	outer_ipv4(ip, in, saddr, daddr, gue ? IPPROTO_UDP : IPPROTO_IPIP, hlen + in->l3_len);
	if (gue)
		outer_gue((void *)(ip + 1), (void *)(ip + 1) + sizeof(struct udphdr), in, d,
			  saddr, daddr);
	p->eth = data;
	p->ip = ip;
	return 0;
}

/* A client's packet on Tunnel connection c goes on in the program at
 * new_conn[XDPLB_PROG_TUNNEL] (xdplb_tunnel), which encapsulates it: the
 * encapsulation is kept out of xdplb_main's verification budget. */
static __always_inline __u32 tunnel_call(struct xdp_md *ctx, const struct conn *c)
{
	__u32 zero = 0;
	struct tun_out *to = tun_out.lookup(&zero);

	if (!to)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	to->dest_slot = c->dest_slot;
	to->addr = c->addr;
	to->port = c->port;
	new_conn.call(ctx, XDPLB_PROG_TUNNEL);
	return drop(XDPLB_CNT_TAIL_CALL);
}

/* xdplb_tunnel: the packet p of the Tunnel connection in tun_out,
 * encapsulated towards its real server, on the destination's egress. Not
 * forwarded oversize: a packet that would exceed the egress device's MTU
 * once encapsulated is answered "fragmentation needed" if it has DF, else
 * passed untouched (counted tun_too_big). With the
 * neighbour unresolved the encapsulated packet goes to the stack. Returns
 * a verdict. */
static __always_inline __u32 tunnel_in(struct xdp_md *ctx, struct pkt *p, const struct tun_out *to,
				       __u64 now)
{
	__u32 slot = to->dest_slot, ifindex, mtu_len, overhead;
	struct dest *d = dests.lookup(&slot);
	struct egress *e = NULL;
	struct inner_v4 in = {};
	__be32 *src;
	int rc;

	if (!d)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	rc = dest_egress(ctx, p, slot, &to->addr, to->addr, to->port, now, &e, XDPLB_AF_INET);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !e)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	ifindex = e->ifindex;
	src = tun_src.lookup(&ifindex);
	if (!src || !*src)
		return VERDICT(XDP_PASS, XDPLB_CNT_TUN_NO_SRC);
	inner_read(p, &in);
	overhead = d->tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GUE ? XDPLB_GUE_LEN : XDPLB_IPIP_LEN;
	mtu_len = in.l3_len + overhead;
	if (bpf_check_mtu(ctx, ifindex, &mtu_len, 0, 0)) {
		/* mtu_len is now the device's MTU. As IPVS's tunnel xmit: a DF
		 * packet that no longer fits is answered "fragmentation needed"
		 * with the MTU left inside the tunnel (icmp.h). */
		if (ip_df(p->ip) && mtu_len > overhead + 68)
			return icmp_handoff(ctx, XDPLB_ICMP_JOB_TOO_BIG_IN, mtu_len - overhead,
					    IP_VS_CONN_F_TUNNEL, 0, 0, XDPLB_AF_INET);
		return VERDICT(XDP_PASS, XDPLB_CNT_TUN_TOO_BIG);
	}
	if (encap_v4(ctx, p, &in, d, *src, to->addr))
		return VERDICT(XDP_PASS, XDPLB_CNT_TUN_TOO_BIG);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, p, ifindex, e->smac, e->dmac);
}

#endif /* XDPLB_ENCAP_H */
