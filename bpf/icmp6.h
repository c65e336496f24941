/* SPDX-License-Identifier: GPL-2.0 */
/*
 * icmp6.h - the data path's own ICMPv6 answers, icmp.h's IPv6 twin: a
 * client's packet larger than its egress MTU gets "packet too big" (IPVS's
 * ensure_mtu_is_adequate: icmpv6_send ICMPV6_PKT_TOOBIG), a new connection
 * with no destination "port unreachable" (ip_vs_schedule's icmpv6_send),
 * both from the address the packet was sent to and quoting as much of it as
 * fits in IPv6's minimum MTU, as the kernel's icmp6_send does. Reached by
 * tail call (xdplb_icmp6) with icmp_job; rate-limited with icmp.h's buckets.
 */
#ifndef XDPLB_ICMP6_H
#define XDPLB_ICMP6_H

#include <linux/icmpv6.h>

#include "icmp.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"

/* An answer's IPv6 and ICMPv6 headers, put in front of the quoted packet,
 * and the most of it quoted: the whole answer fits in 1280 bytes. */
#define XDPLB_ICMP6_HDRS	(sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr))
#define XDPLB_IPV6_MIN_MTU	1280
#define XDPLB_ICMP6_QUOTE_MAX	(XDPLB_IPV6_MIN_MTU - XDPLB_ICMP6_HDRS)

/* The frame of p (a client's IPv6 packet to a virtual service) becomes the
 * ICMPv6 error type/code (info: packet too big's MTU), from the address
 * the packet was sent to, quoting the packet up to XDPLB_ICMP6_QUOTE_MAX
 * bytes, and goes back out of the ingress (never to a multicast or
 * unspecified source: parse_pkt6 refuses those). Returns 1 if the frame is now
 * the answer (to send back), 0 if it is to be dropped unanswered. */
static __always_inline int icmp6_answer(struct xdp_md *ctx, struct pkt *p, __u32 kind,
					__u8 type, __u8 code, __u32 info)
{
	__u32 l2len, quote = p->l3_len < XDPLB_ICMP6_QUOTE_MAX ? p->l3_len : XDPLB_ICMP6_QUOTE_MAX;
	__be32 client[4], vip[4];
	struct icmp6hdr *ic;
	struct ipv6hdr *ip6;
	void *data, *data_end;

	__builtin_memcpy(client, p->key6.saddr, 16);
	__builtin_memcpy(vip, p->key6.daddr, 16);
	l2len = answer_frame(ctx, p, kind, bpf_htons(ETH_P_IPV6), quote, XDPLB_ICMP6_HDRS);
	if (!l2len)
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + XDPLB_L2_MAX + XDPLB_ICMP6_HDRS > data_end)
		return 0;
	ip6 = data + l2len;
	ic = (void *)(ip6 + 1);
	if ((void *)(ic + 1) > data_end)
		return 0;
	*(__be32 *)ip6 = bpf_htonl(0x60000000);	/* version 6, no class, no flow label */
	ip6->payload_len = bpf_htons(sizeof(*ic) + quote);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, vip, 16);
	__builtin_memcpy(&ip6->daddr, client, 16);
	ic->icmp6_type = type;
	ic->icmp6_code = code;
	ic->icmp6_dataun.un_data32[0] = bpf_htonl(info);
	ic->icmp6_cksum = 0;
	ic->icmp6_cksum = (__u16)~csum_fold64(
		pseudo_v6(vip, client, sizeof(*ic) + quote, IPPROTO_ICMPV6) +
		csum_span(ctx, l2len + sizeof(*ip6), sizeof(*ic) + quote));
	return 1;
}

/* The IPv6 frame p handed over with icmp_job (icmp_handoff). Returns a
 * verdict.
 * - TOO_BIG_IN: a client's packet over the egress MTU: IPv6 is never
 *   fragmented on the way, so it is answered "packet too big" with the MTU.
 * - PORT_UNREACH: a new connection with no destination: "port unreachable".
 * (A Masq reply over the MTU goes to the stack untouched, which answers the
 * real server: forward.h.) */
static __always_inline __u32 icmp6_job_run(struct xdp_md *ctx, struct pkt *p)
{
	__u32 zero = 0;
	struct icmp_job *j = icmp_job.lookup(&zero);

	if (!j)
		return pass();
	if (j->job == XDPLB_ICMP_JOB_TOO_BIG_IN)
		return icmp6_answer(ctx, p, XDPLB_ICMP_KIND_FRAG_NEEDED, ICMPV6_PKT_TOOBIG, 0, j->mtu)
			       ? icmp_send_back(ctx, XDPLB_CNT_FRAG_NEEDED)
			       : drop(XDPLB_CNT_FRAG_NEEDED);
	if (j->job == XDPLB_ICMP_JOB_PORT_UNREACH)
		return icmp6_answer(ctx, p, XDPLB_ICMP_KIND_PORT_UNREACH, ICMPV6_DEST_UNREACH,
				    ICMPV6_PORT_UNREACH, 0)
			       ? icmp_send_back(ctx, XDPLB_CNT_NO_DEST) : drop(XDPLB_CNT_NO_DEST);
	return pass();
}

#endif /* XDPLB_ICMP6_H */
