/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse.h - bounds-checked parsing of Ethernet [+ one 802.1Q/802.1ad tag] +
 * IPv4 or IPv6 + TCP/UDP. Anything else, anything truncated or malformed is not
 * ours: the caller passes it to the stack untouched. Fragments of TCP and
 * UDP (IPv4's, and IPv6's fragment header) are told apart (frag.h handles
 * them): the first carries the ports and is parsed as a whole packet; a
 * later one has no L4 header.
 */
#ifndef XDPLB_PARSE_H
#define XDPLB_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "hash.h"
#include "xdplb.h"

#define XDPLB_IP_MF		0x2000
#define XDPLB_IP_OFFSET		0x1fff

/* IPv6 extension headers walked over to reach TCP/UDP: hop-by-hop,
 * routing and destination options, at most this many. */
#define XDPLB_NEXTHDR_HOP	0
#define XDPLB_NEXTHDR_ROUTING	43
#define XDPLB_NEXTHDR_DEST	60
#define XDPLB_IPV6_EXT_MAX	4
/* ... and one fragment header among them (RFC 8200 4.5) */
#define XDPLB_NEXTHDR_FRAGMENT	44
#define XDPLB_IP6_OFFSET	0xfff8	/* its fragment offset, in bytes */
#define XDPLB_IP6_MF		0x0001

/* linux/if_vlan.h's vlan_hdr is not UAPI; this is its wire layout. */
struct xdplb_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The IPv6 fragment header's wire layout (the kernel's frag_hdr is not UAPI). */
struct xdplb_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset in bytes (a multiple of 8) | M */
	__be32 identification;
};

/* What the rest of the data path needs to know about one frame. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;	/* IPv4 (else NULL) */
	struct ipv6hdr *ip6;	/* IPv6 (else NULL) */
	struct xdplb_frag_hdr *fh;	/* an IPv6 fragment's (else NULL; an atomic
					 * fragment is a whole packet: NULL too) */
	struct udphdr *l4;	/* TCP and UDP both start with source, dest */
	__sum16 *l4_check;	/* TCP or UDP checksum field */
	struct conn_key key;	/* the frame's own 5-tuple; IPv6: its ports and
				 * protocol, and its addresses folded (addr_fold),
				 * what the schedulers' hashes and rs_filter take */
	struct conn_key6 key6;	/* IPv6: the 5-tuple */
	__u16 l3_len;		/* IP tot_len, IPv6 40 + payload length: what IPVS
				 * counts as bytes */
	__u8 tcp_flags;		/* XDPLB_TCP_* (tcp_state.h); 0 for UDP */
};

/* What parse_pkt found: a frame with ports (WHOLE, FIRST_FRAG) has every
 * field of struct pkt; a LATER_FRAG has no L4 fields (l4 is NULL). */
enum pkt_kind {
	XDPLB_PKT_NOT_OURS = -1,
	XDPLB_PKT_WHOLE = 0,		/* an unfragmented packet */
	XDPLB_PKT_FIRST_FRAG = 1,	/* offset 0, more fragments */
	XDPLB_PKT_LATER_FRAG = 2,	/* offset > 0 */
	XDPLB_PKT_FRAG_HDR = 3,		/* IPv6 with a fragment header, not looked into */
};

static __always_inline int pkt_has_ports(int kind)
{
	return kind == XDPLB_PKT_WHOLE || kind == XDPLB_PKT_FIRST_FRAG;
}

/* The bytes IPVS counts of a packet with ports (af: its family): its L3
 * length, of the reassembled datagram for a first fragment, which for
 * IPv6 no longer has the fragment header (a later one adds the rest:
 * frag.h). */
static __always_inline __u16 pkt_bytes(const struct pkt *p, const int af)
{
	if (af == XDPLB_AF_INET6 && p->fh)
		return p->l3_len - sizeof(struct xdplb_frag_hdr);
	return p->l3_len;
}

/* An IPv4 TCP/UDP packet or fragment whose headers all lie inside the
 * frame: its kind (enum pkt_kind), and p filled. NOT_OURS otherwise; then
 * p->ip is set only for an unfragmented IPv4 packet of another protocol
 * that lies inside the frame (an ICMP error may be about a connection). */
/* The L3 header after Ethernet and at most one VLAN tag, NULL if the frame
 * ends first; *proto: its ethertype (network order). */
static __always_inline void *l3_header(void *data, void *data_end, __be16 *proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	*proto = eth->h_proto;
	if (*proto == bpf_htons(ETH_P_8021Q) || *proto == bpf_htons(ETH_P_8021AD)) {
		struct xdplb_vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return NULL;
		*proto = vh->encap_proto;
		return vh + 1;
	}
	return eth + 1;
}

/* Is the frame IPv6 (xdplb_main hands it to xdplb_main6)? */
static __always_inline int frame_is_ipv6(void *data, void *data_end)
{
	__be16 proto = 0;

	return l3_header(data, data_end, &proto) && proto == bpf_htons(ETH_P_IPV6);
}

/* The TCP or UDP header at l4, ending by l4_end, into p (ports, flags,
 * checksum field). Non-zero if it does not fit. */
static __always_inline int parse_l4(void *l4, void *l4_end, void *data_end, __u8 proto,
				    struct pkt *p)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		__u32 doff;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		doff = tcp->doff * 4;
		if (doff < sizeof(*tcp) || l4 + doff > l4_end)
			return -1;
		p->key.sport = tcp->source;
		p->key.dport = tcp->dest;
		p->l4_check = &tcp->check;
		p->tcp_flags = ((__u8 *)tcp)[13];
	} else {	/* UDP */
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > l4_end)
			return -1;
		p->key.sport = udp->source;
		p->key.dport = udp->dest;
		p->l4_check = &udp->check;
		p->tcp_flags = 0;
	}
	p->l4 = l4;
	return 0;
}

static __always_inline int parse_pkt(void *data, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;
	__u16 tot_len;
	__be16 proto = 0;
	__u32 ihl;

	ip = l3_header(data, data_end, &proto);
	if (!ip || proto != bpf_htons(ETH_P_IP))
		return -1;
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	ihl = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	/* The 6.1 verifier loses the 16-bit bound of a byte swap; restate it. */
	asm volatile("%0 &= 0xffff" : "+r"(tot_len));
	if (tot_len < ihl || (void *)ip + tot_len > data_end)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) {
		/* not ours, but an ICMP error may be about a connection (icmp.h) */
		if (!(ip->frag_off & bpf_htons(XDPLB_IP_MF | XDPLB_IP_OFFSET))) {
			p->eth = eth;
			p->ip = ip;
		}
		return XDPLB_PKT_NOT_OURS;
	}
	p->eth = eth;
	p->ip = ip;
	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.proto = ip->protocol;
	p->l3_len = tot_len;
	if (ip->frag_off & bpf_htons(XDPLB_IP_OFFSET))
		return XDPLB_PKT_LATER_FRAG;
	l4 = (void *)ip + ihl;
	if (parse_l4(l4, (void *)ip + tot_len, data_end, ip->protocol, p))
		return -1;
	return ip->frag_off & bpf_htons(XDPLB_IP_MF) ? XDPLB_PKT_FIRST_FRAG : XDPLB_PKT_WHOLE;
}

/* May a client's packet from IPv6 address a be balanced? Not from a
 * multicast (ff00::/8), loopback, unspecified or link-local (fe80::/10)
 * source: the kernel's ip6_rcv drops the first three before IPVS sees
 * them, and nothing is forwarded from a link-local one (ip6_forward, and
 * bpf_fib_lookup refuses it). */
static __always_inline int source_ok6(const __be32 *a)
{
	__u32 w0 = bpf_ntohl(a[0]);

	if ((w0 >> 24) == 0xff || (w0 >> 22) == (0xfe80 >> 6))
		return 0;
	return w0 | a[1] | a[2] | (bpf_ntohl(a[3]) & ~1u);	/* :: and ::1 */
}

/* p's IPv6 fields, of the packet ip6 ending at end (key: its ports, if
 * parse_l4 found them). Non-zero: a source source_ok6 refuses. */
static __always_inline int pkt6_fill(void *data, struct ipv6hdr *ip6, void *end, __u8 nexthdr,
				     struct pkt *p)
{
	if (!source_ok6(ip6->saddr.in6_u.u6_addr32))
		return -1;
	p->eth = data;
	p->ip6 = ip6;
	__builtin_memcpy(p->key6.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->key6.daddr, &ip6->daddr, 16);
	p->key6.sport = p->key.sport;
	p->key6.dport = p->key.dport;
	p->key6.proto = nexthdr;
	p->key.saddr = addr_fold(p->key6.saddr);
	p->key.daddr = addr_fold(p->key6.daddr);
	p->key.proto = nexthdr;
	p->l3_len = end - (void *)ip6;
	return 0;
}

/* An IPv6 TCP/UDP packet (or fragment) whose headers all lie inside the
 * frame: its kind (enum pkt_kind) and p filled (key with the folded
 * addresses). Between the IPv6 header and TCP/UDP: at most
 * XDPLB_IPV6_EXT_MAX hop-by-hop, routing and destination-options headers,
 * then a fragment header (RFC 8200's order; a walk that may meet it
 * anywhere is more than the verifier can follow through balance()). A
 * first fragment carries the whole L4 header right after its fragment
 * header; an atomic fragment (offset 0, no M) is a whole packet; a later
 * fragment's fragment header names TCP or UDP (key.proto), and it has no
 * ports. frags (a constant) 0: a fragment is FRAG_HDR, looked no further
 * into (xdplb_main6 leaves fragments to xdplb_frag6: the verifier could
 * not follow both through balance()). NOT_OURS otherwise (ICMPv6 and
 * neighbour discovery, and a source source_ok6 refuses, included); then
 * p->ip6 is set for an ICMPv6 packet that lies inside the frame.
 * One function of 70 lines: with the walk in a helper of its own, clang's
 * code costs xdplb_main6 half as many verifier steps again (~800,000 of
 * the 1,000,000 allowed). */
static __always_inline int parse_pkt6(void *data, void *data_end, struct pkt *p,
				      const int frags)
{
	struct xdplb_frag_hdr *fh = NULL;
	struct ipv6hdr *ip6;
	__be16 proto = 0;
	void *end, *l4;
	__u32 plen;
	__u8 nexthdr;
	int i, first = 0;

	ip6 = l3_header(data, data_end, &proto);
	if (!ip6 || proto != bpf_htons(ETH_P_IPV6) || (void *)(ip6 + 1) > data_end)
		return -1;
	if (ip6->version != 6 || !ip6->payload_len)	/* 0: a jumbogram */
		return -1;
	plen = bpf_ntohs(ip6->payload_len);
	/* The 6.1 verifier loses the 16-bit bound of a byte swap; restate it. */
	asm volatile("%0 &= 0xffff" : "+r"(plen));
	end = (void *)(ip6 + 1) + plen;
	if (end > data_end)
		return -1;
	nexthdr = ip6->nexthdr;
	l4 = ip6 + 1;
	#pragma unroll
	for (i = 0; i < XDPLB_IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *eh = l4;

		if (nexthdr != XDPLB_NEXTHDR_HOP && nexthdr != XDPLB_NEXTHDR_ROUTING &&
		    nexthdr != XDPLB_NEXTHDR_DEST)
			break;
		if ((void *)(eh + 1) > data_end)
			return -1;
		nexthdr = eh->nexthdr;
		l4 += (eh->hdrlen + 1) * 8;
	}
	if (nexthdr == XDPLB_NEXTHDR_FRAGMENT) {
		fh = l4;
		if ((void *)(fh + 1) > data_end || (void *)(fh + 1) > end)
			return -1;
		/* an atomic fragment (offset 0, no M) is a whole packet */
		first = fh->frag_off & bpf_htons(XDPLB_IP6_OFFSET | XDPLB_IP6_MF);
		if (first && !frags)
			return XDPLB_PKT_FRAG_HDR;
		nexthdr = fh->nexthdr;
		l4 = fh + 1;
		if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
			return XDPLB_PKT_NOT_OURS;
		if (fh->frag_off & bpf_htons(XDPLB_IP6_OFFSET)) {
			if (pkt6_fill(data, ip6, end, nexthdr, p))
				return -1;
			p->fh = fh;
			return XDPLB_PKT_LATER_FRAG;
		}
	} else if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP) {
		if (nexthdr == IPPROTO_ICMPV6) {
			p->eth = data;
			p->ip6 = ip6;
		}
		return XDPLB_PKT_NOT_OURS;
	}
	if (l4 > end || parse_l4(l4, end, data_end, nexthdr, p) ||
	    pkt6_fill(data, ip6, end, nexthdr, p))
		return -1;
	if (!first)
		return XDPLB_PKT_WHOLE;
	p->fh = fh;
	return XDPLB_PKT_FIRST_FRAG;
}

/* The kernel drops a bad IPv4 header checksum in ip_rcv, so IPVS never
 * schedules such a packet. Checked before a new connection only: packets of
 * tracked flows carry whatever they have, and the receiver judges them. */
static __always_inline int ip_option_word(const __u32 *w, __u32 k, const void *data_end,
					  __u64 *sum)
{
	const __u32 *next = w + k + 1;

	/* opaque to clang, which otherwise folds the bound into arithmetic on
	 * data_end, which the verifier refuses */
	asm volatile("" : "+r"(next));
	if ((const void *)next > data_end)
		return 0;
	*sum += next[-1];
	return 1;
}

/* A one's complement sum of 32-bit words, folded to 16 bits. */
static __always_inline __u16 csum_fold64(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* The IPv4 pseudo-header's sum (network-order words, as the packet's). */
static __always_inline __u64 pseudo_v4(__be32 saddr, __be32 daddr, __u8 proto, __u16 len)
{
	return (__u64)saddr + daddr + bpf_htons(proto) + bpf_htons(len);
}

/* The one's complement sum of an IPv6 pseudo-header (RFC 8200 8.1). */
static __always_inline __u64 pseudo_v6(const __be32 *saddr, const __be32 *daddr, __u32 len,
				       __u8 nexthdr)
{
	__u64 sum = (__u64)bpf_htonl(len) + bpf_htonl(nexthdr);
	int i;

	#pragma unroll
	for (i = 0; i < 4; i++)
		sum += (__u64)saddr[i] + daddr[i];
	return sum;
}

/* Written out word by word: a loop here is more than the 6.1 verifier
 * (Debian 12's kernel) can follow. */
#define XDPLB_IP_OPTION_WORD(k)						\
	if (ihl > (k) && !ip_option_word(w, (k), data_end, &sum))	\
		return 0

/* The one's complement sum of the IPv4 header ip of ihl words, options
 * included, folded to 16 bits (0xffff: its checksum is right); 0 if it
 * runs past data_end. */
static __always_inline __u16 ip_hdr_sum(const struct iphdr *ip, __u32 ihl, const void *data_end)
{
	const __u32 *w = (const void *)ip;
	__u64 sum;

	/* parse_pkt has bounded the fixed header */
	sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	XDPLB_IP_OPTION_WORD(5);
	XDPLB_IP_OPTION_WORD(6);
	XDPLB_IP_OPTION_WORD(7);
	XDPLB_IP_OPTION_WORD(8);
	XDPLB_IP_OPTION_WORD(9);
	XDPLB_IP_OPTION_WORD(10);
	XDPLB_IP_OPTION_WORD(11);
	XDPLB_IP_OPTION_WORD(12);
	XDPLB_IP_OPTION_WORD(13);
	XDPLB_IP_OPTION_WORD(14);
	return csum_fold64(sum);
}

static __always_inline int ip_csum_ok(const struct iphdr *ip, const void *data_end)
{
	return ip_hdr_sum(ip, ip->ihl, data_end) == 0xffff;
}

#endif /* XDPLB_PARSE_H */
