/* SPDX-License-Identifier: GPL-2.0 */
/*
 * decap.c - `xdplb decap IFNAME`: the real server's side of Tunnel
 * forwarding, for a kernel without the ipip, ip6_tunnel, sit and fou
 * modules. A frame to one of this host's addresses (decap_addrs for IPv4,
 * decap_addrs6 for IPv6) that carries one whole IPv4 or IPv6 packet, in
 * IP-in-IP (outer protocol / next header 4 or 41) or in GUE variant 0 over
 * UDP to one of the decap_ports (GUE protocol 4 or 41), loses its outer
 * headers: the Ethernet header (and a VLAN tag) moves up to the inner
 * packet, its protocol set to the inner packet's family, and the stack
 * gets it as if it had arrived so, for the VIP on the host's loopback.
 * Everything else passes untouched: outer fragments (IPv4 MF or offset; an
 * IPv6 fragment header, as any extension header, which xdplb never sends),
 * and any length that does not add up: the inner packet must fill the
 * outer payload (and GUE's UDP datagram) exactly. The outer UDP checksum is
 * not verified, nor required over IPv6: the inner packet's own checksums
 * protect it, as they do inside ipip.
 *
 * A program of its own, compiled from this file alone (xdplb/decap.py);
 * xdplb/decap.py fills its maps when it attaches it.
 */
#include <uapi/linux/bpf.h>

#include "gue.h"
#include "parse.h"

#define XDPLB_DECAP_ADDRS	256	/* per family */
#define XDPLB_DECAP_PORTS	16
/* The most bytes in front of an inner packet: an IPv4 header with options
 * (the IPv6 header is shorter), UDP, GUE with all its optional words. */
#define XDPLB_DECAP_HLEN_MAX	(60 + sizeof(struct udphdr) + sizeof(struct xdplb_guehdr) + 124)

BPF_TABLE("hash", __be32, __u8, decap_addrs, XDPLB_DECAP_ADDRS);
BPF_TABLE("hash", struct in6_addr, __u8, decap_addrs6, XDPLB_DECAP_ADDRS);
BPF_TABLE("hash", __be16, __u8, decap_ports, XDPLB_DECAP_PORTS);

/* A tunnel packet as its outer L3 header tells it. */
struct outer {
	__u32 hlen;	/* bytes from the outer L3 header to what it carries */
	__u32 len;	/* the outer packet's length, from its L3 header on */
	__u8 proto;	/* what it carries: IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP */
};

/* An unfragmented IPv4 packet to this host that lies in the frame, into o.
 * Non-zero otherwise. */
static __always_inline int outer_ipv4(struct iphdr *ip, void *data_end, struct outer *o)
{
	__u32 tot_len;

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return -1;
	tot_len = bpf_ntohs(ip->tot_len);
	asm volatile("%0 &= 0xffff" : "+r"(tot_len));	/* (as parse.h: the 6.1 verifier) */
	if ((void *)ip + tot_len > data_end)
		return -1;	/* truncated */
	if (ip->frag_off & bpf_htons(XDPLB_IP_MF | XDPLB_IP_OFFSET))
		return -1;
	if (!decap_addrs.lookup(&ip->daddr))
		return -1;
	o->hlen = ip->ihl * 4;
	o->len = tot_len;
	o->proto = ip->protocol;
	return 0;
}

/* An IPv6 packet to this host that lies in the frame, into o (proto: its
 * next header, so one with an extension header is no tunnel's). Non-zero
 * otherwise. */
static __always_inline int outer_ipv6(struct ipv6hdr *ip6, void *data_end, struct outer *o)
{
	__u32 payload_len;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return -1;
	payload_len = bpf_ntohs(ip6->payload_len);
	asm volatile("%0 &= 0xffff" : "+r"(payload_len));
	if ((void *)(ip6 + 1) + payload_len > data_end)
		return -1;	/* truncated */
	if (!decap_addrs6.lookup(&ip6->daddr))
		return -1;
	o->hlen = sizeof(*ip6);
	o->len = sizeof(*ip6) + payload_len;
	o->proto = ip6->nexthdr;
	return 0;
}

/* GUE to one of decap_ports behind the outer header at l3 (o->proto UDP):
 * o->hlen moved past UDP and GUE (options included), o->proto set to GUE's.
 * Non-zero if it is not GUE data of variant 0 filling the datagram. */
static __always_inline int gue(void *l3, void *data_end, struct outer *o)
{
	struct xdplb_guehdr *gue;
	struct udphdr *udp;

	if (o->hlen > 60)
		return -1;	/* (never: an IPv4 header; for the verifier) */
	udp = l3 + o->hlen;
	gue = (void *)(udp + 1);
	if ((void *)(gue + 1) > data_end)
		return -1;
	if (bpf_ntohs(udp->len) != o->len - o->hlen || !decap_ports.lookup(&udp->dest))
		return -1;
	if (gue->ver_c_hlen & XDPLB_GUE_VER_C)
		return -1;	/* a control message, or another version */
	o->hlen += sizeof(*udp) + sizeof(*gue) + (gue->ver_c_hlen & XDPLB_GUE_HLEN) * 4;
	o->proto = gue->proto;
	return 0;
}

/* The EtherType of the packet o carries behind the outer header at l3 if it
 * is one whole IPv4 or IPv6 packet filling the rest of o; 0 otherwise. */
static __always_inline __be16 inner_proto(void *l3, void *data_end, struct outer *o)
{
	__u32 len = o->len - o->hlen;	/* (o->len < o->hlen: huge, matching nothing) */
	void *inner;

	if (o->hlen > XDPLB_DECAP_HLEN_MAX)
		return 0;	/* (never; for the verifier) */
	inner = l3 + o->hlen;
	if (o->proto == IPPROTO_IPIP) {
		struct iphdr *ip = inner;

		if ((void *)(ip + 1) > data_end || ip->version != 4 ||
		    bpf_ntohs(ip->tot_len) != len)
			return 0;
		return bpf_htons(ETH_P_IP);
	}
	if (o->proto == IPPROTO_IPV6) {
		struct ipv6hdr *ip6 = inner;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6 ||
		    sizeof(*ip6) + bpf_ntohs(ip6->payload_len) != len)
			return 0;
		return bpf_htons(ETH_P_IPV6);
	}
	return 0;
}

/* Strip hlen bytes after the l2-byte L2 header: the header is kept aside,
 * the frame's head moves, the header is written back in front of the inner
 * packet with the inner packet's EtherType h_proto. A failed move leaves
 * the frame as it came. */
static __always_inline int strip(struct xdp_md *ctx, __u32 l2, __u32 hlen, __be16 h_proto)
{
	__u8 hdr[sizeof(struct ethhdr) + sizeof(struct xdplb_vlan_hdr)];
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth;

	if (data + sizeof(hdr) > data_end)
		return -1;
	__builtin_memcpy(hdr, data, sizeof(hdr));
	if (bpf_xdp_adjust_head(ctx, hlen))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(hdr) > data_end)
		return -1;	/* (the inner IP header is longer: never) */
	if (l2 == sizeof(struct ethhdr))
		__builtin_memcpy(data, hdr, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, hdr, sizeof(hdr));
	eth = data;
	if (l2 == sizeof(struct ethhdr))
		eth->h_proto = h_proto;
	else
		((struct xdplb_vlan_hdr *)(eth + 1))->encap_proto = h_proto;
	return 0;
}

int xdplb_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct outer o = {};
	__be16 proto = 0;
	void *l3;

	l3 = l3_header(data, data_end, &proto);
	if (!l3)
		return XDP_PASS;
	if (proto == bpf_htons(ETH_P_IP)) {
		if (outer_ipv4(l3, data_end, &o))
			return XDP_PASS;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (outer_ipv6(l3, data_end, &o))
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	if (o.proto == IPPROTO_UDP && gue(l3, data_end, &o))
		return XDP_PASS;
	proto = inner_proto(l3, data_end, &o);
	if (!proto)
		return XDP_PASS;	/* not one whole IP packet inside */
	strip(ctx, l3 - data, o.hlen, proto);	/* (failed: the frame is as it came) */
	return XDP_PASS;
}
