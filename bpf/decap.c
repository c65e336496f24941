/* SPDX-License-Identifier: GPL-2.0 */
/*
 * decap.c - `xdplb decap IFNAME`: the real server's side of Tunnel
 * forwarding, for a kernel without the ipip and fou modules. An IPv4 frame
 * to one of this host's addresses (decap_addrs) that carries an IPv4 packet
 * in IP-in-IP (protocol 4) or in GUE variant 0 over UDP to one of the
 * decap_ports loses its outer headers: the Ethernet header (and a VLAN tag)
 * moves up to the inner packet, its protocol set to the inner packet's, and
 * the stack gets it as if it had arrived so, for the VIP on the host's
 * loopback. Everything else passes untouched, as do outer fragments. The
 * outer UDP checksum is not verified: the inner packet's own checksums
 * protect it, as they do inside ipip.
 *
 * A program of its own, compiled from this file alone (xdplb/decap.py);
 * xdplb/decap.py fills its two maps when it attaches it.
 */
#include <uapi/linux/bpf.h>

#include "gue.h"
#include "parse.h"

#define XDPLB_DECAP_ADDRS	256
#define XDPLB_DECAP_PORTS	16

BPF_TABLE("hash", __be32, __u8, decap_addrs, XDPLB_DECAP_ADDRS);
BPF_TABLE("hash", __be16, __u8, decap_ports, XDPLB_DECAP_PORTS);

/* Bytes in front of the inner packet after the outer IPv4 header ip, which
 * parse checked lies in the frame: its own length, plus UDP and GUE's for
 * GUE on one of decap_ports; 0 when the frame is not a tunnel's. */
static __always_inline __u32 outer_len(struct iphdr *ip, void *data_end)
{
	__u32 hlen = ip->ihl * 4;
	struct xdplb_guehdr *gue;
	struct udphdr *udp;

	if (ip->protocol == IPPROTO_IPIP)
		return hlen;
	if (ip->protocol != IPPROTO_UDP)
		return 0;
	udp = (void *)ip + hlen;
	gue = (void *)(udp + 1);
	if ((void *)(gue + 1) > data_end)
		return 0;
	if (!decap_ports.lookup(&udp->dest))
		return 0;
	if ((gue->ver_c_hlen & XDPLB_GUE_VER_C) || gue->proto != IPPROTO_IPIP)
		return 0;
	return hlen + sizeof(*udp) + sizeof(*gue) + (gue->ver_c_hlen & XDPLB_GUE_HLEN) * 4;
}

/* Strip hlen bytes after the l2-byte L2 header: the header is kept aside,
 * the frame's head moves, the header is written back in front of the inner
 * packet. A failed move leaves the frame as it came. */
static __always_inline int strip(struct xdp_md *ctx, __u32 l2, __u32 hlen)
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
		return -1;	/* (the inner IPv4 header is longer: never) */
	if (l2 == sizeof(struct ethhdr))
		__builtin_memcpy(data, hdr, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, hdr, sizeof(hdr));
	eth = data;
	if (l2 == sizeof(struct ethhdr))
		eth->h_proto = bpf_htons(ETH_P_IP);
	else
		((struct xdplb_vlan_hdr *)(eth + 1))->encap_proto = bpf_htons(ETH_P_IP);
	return 0;
}

int xdplb_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip, *inner;
	__u32 l2 = sizeof(*eth), hlen, tot_len;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct xdplb_vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return XDP_PASS;
		proto = vh->encap_proto;
		l2 += sizeof(*vh);
	}
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = data + l2;
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	tot_len = bpf_ntohs(ip->tot_len);
	asm volatile("%0 &= 0xffff" : "+r"(tot_len));	/* (as parse.h: the 6.1 verifier) */
	if ((void *)ip + tot_len > data_end)
		return XDP_PASS;	/* truncated */
	if (ip->frag_off & bpf_htons(XDPLB_IP_MF | XDPLB_IP_OFFSET))
		return XDP_PASS;
	if (!decap_addrs.lookup(&ip->daddr))
		return XDP_PASS;
	hlen = outer_len(ip, data_end);
	/* bounded for the verifier: IPv4 header, UDP, GUE with options */
	if (!hlen || hlen > 60 + sizeof(struct udphdr) + sizeof(struct xdplb_guehdr) + 124)
		return XDP_PASS;
	inner = (void *)ip + hlen;
	if ((void *)(inner + 1) > data_end || inner->version != 4 ||
	    bpf_ntohs(inner->tot_len) != tot_len - hlen)
		return XDP_PASS;	/* not one whole IPv4 packet inside */
	strip(ctx, l2, hlen);	/* (failed: the frame is as it came) */
	return XDP_PASS;
}
