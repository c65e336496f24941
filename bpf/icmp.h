/* SPDX-License-Identifier: GPL-2.0 */
/*
 * icmp.h - path MTU and the data path's own ICMP answers, as IPVS's
 * ip_vs_xmit.c and ip_vs_core.c: a client's packet larger than its egress
 * MTU (ensure_mtu_is_adequate) and a new connection with no destination
 * (the scheduler's icmp_send). The data path only notices them and hands
 * the frame over (icmp_handoff); xdplb_icmp, reached by tail call, decides
 * (icmp_job_run) and builds the answer: icmp_answer() turns the frame
 * itself into it (its IP header and first 8 bytes quoted), rate-limited,
 * and sends it back out of the ingress (icmp_send_back). ICMP errors about connections:
 * icmp_error.h.
 */
#ifndef XDPLB_ICMP_H
#define XDPLB_ICMP_H

#include <linux/icmp.h>

#include "clock.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "stats.h"

#define XDPLB_IP_DF		0x4000
#define XDPLB_NS_PER_TOKEN	(1000000000ULL / XDPLB_ICMP_RATE)
/* An answer's IP and ICMP headers, put in front of the quoted packet. */
#define XDPLB_ICMP_HDRS		(sizeof(struct iphdr) + sizeof(struct icmphdr))
/* Ethernet and one VLAN tag: what an answer keeps of the frame's L2 header. */
#define XDPLB_L2_MAX		(ETH_HLEN + 4)
/* The longest ICMP message icmp_error.h checks and translates: that of a
 * 1,500-byte packet. */
#define XDPLB_CSUM_MAX		1480

/* Hand the frame to xdplb_icmp (xdplb_icmp6 for IPv6, af a constant), for
 * job (icmp_job_run, icmp6_job_run). Returns a verdict only if that
 * program is missing. */
static __always_inline __u32 icmp_handoff(struct xdp_md *ctx, __u8 job, __u32 mtu, __u8 fwd,
					  __be32 addr, __be16 port, const int af)
{
	__u32 zero = 0;
	struct icmp_job *j = icmp_job.lookup(&zero);

	if (j) {
		j->job = job;
		j->mtu = mtu;
		j->fwd = fwd;
		j->addr = addr;
		j->port = port;
		new_conn.call(ctx, af == XDPLB_AF_INET6 ? XDPLB_PROG_ICMP6 : XDPLB_PROG_ICMP);
	}
	return drop(XDPLB_CNT_TAIL_CALL);
}

/* A new connection finds no destination: IPVS answers port unreachable. */
static __always_inline __u32 no_dest(struct xdp_md *ctx, const int af)
{
	return icmp_handoff(ctx, XDPLB_ICMP_JOB_PORT_UNREACH, 0, 0, 0, 0, af);
}

/* Is reply p larger than the MTU of its egress device? The entry caches the
 * egress but not its MTU, so the device's MTU is read as it is now. Returns
 * that MTU if so, else 0. */
static __always_inline __u32 reply_too_big(struct xdp_md *ctx, const struct pkt *p,
					   __u32 ifindex)
{
	__u32 len = p->l3_len;

	if (bpf_check_mtu(ctx, ifindex, &len, 0, 0) != BPF_MTU_CHK_RET_FRAG_NEEDED)
		return 0;
	return len ? len : 68;	/* (the device's MTU; IPv4's least for safety) */
}

static __always_inline int ip_df(const struct iphdr *ip)
{
	return ip->frag_off & bpf_htons(XDPLB_IP_DF);
}

/* A token of kind's bucket on this CPU, if one is left: XDPLB_ICMP_RATE a
 * second, at most XDPLB_ICMP_BURST saved up. */
static __always_inline int icmp_allow(__u32 kind)
{
	struct icmp_bucket *b = icmp_bucket.lookup(&kind);
	__u64 now = now_ns(), add;

	if (!b)
		return 0;
	/* signed: another CPU's clock cache may be a tick ahead */
	if ((__s64)(now - b->stamp) >= (__s64)XDPLB_NS_PER_TOKEN) {
		add = (now - b->stamp) / XDPLB_NS_PER_TOKEN;
		if (add + b->tokens >= XDPLB_ICMP_BURST) {
			b->tokens = XDPLB_ICMP_BURST;
			b->stamp = now;
		} else {
			b->tokens += add;
			b->stamp += add * XDPLB_NS_PER_TOKEN;
		}
	}
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

/* May an ICMP error go to addr? Not to "this network", loopback, multicast
 * or class E (broadcast included), as the kernel's icmp_send refuses. */
static __always_inline int icmp_to_ok(__be32 addr)
{
	__u8 net = bpf_ntohl(addr) >> 24;

	return net != 0 && net != 127 && net < 224;
}

/* The one's complement sum of the len bytes at offset off of the frame,
 * folded to 16 bits; 0 if they are more than XDPLB_CSUM_MAX or run past
 * it. Copied out 64 bytes at a time (bpf_xdp_load_bytes), the last chunk
 * zero-padded: no packet pointer moves, so the verifier follows a few
 * states, not one per word. */
static __always_inline __u16 csum_span(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u64 sum = 0, rest;
	__u8 buf[64];
	__u32 i;

	if (len > XDPLB_CSUM_MAX)
		return 0;
	/* Unrolled, without a break: a loop clang would count down from len /
	 * 64, a bound the verifier cannot see. */
#pragma unroll
	for (i = 0; i < XDPLB_CSUM_MAX / 64; i++) {
		if (len >= sizeof(buf)) {
			if (bpf_xdp_load_bytes(ctx, off, buf, sizeof(buf)))
				return 0;
			sum += (__u32)bpf_csum_diff(NULL, 0, (void *)buf, sizeof(buf), 0);
			off += sizeof(buf);
			len -= sizeof(buf);
		}
	}
	/* 64 bits and restated: a 32-bit copy's test would not bound it */
	rest = len;
	asm volatile("%0 &= 63" : "+r"(rest));
	if (rest) {
		/* 1..64 on its face: the 6.1 verifier does not carry the test
		 * above to the register it reads, and refuses a zero-sized read */
		rest = ((rest - 1) & 63) + 1;
		__builtin_memset(buf, 0, sizeof(buf));
		if (bpf_xdp_load_bytes(ctx, off, buf, rest))
			return 0;
		sum += (__u32)bpf_csum_diff(NULL, 0, (void *)buf, sizeof(buf), 0);
	}
	return csum_fold64(sum);
}

/* Turn the frame of p around for an answer of hdrs bytes of headers
 * quoting keep bytes of its L3 packet: rate-limited (kind's bucket), the
 * frame cut after the quote, hdrs bytes made in front of it, the L2 header
 * (a VLAN tag kept, ip_proto: the answer's ethertype is the packet's) back
 * to the sender. Returns the L2 header's length, 0 to drop unanswered;
 * every packet pointer is then stale. */
static __always_inline __u32 answer_frame(struct xdp_md *ctx, struct pkt *p, __u32 kind,
					  __be16 ip_proto, __u32 keep, __u32 hdrs)
{
	__u8 l2[XDPLB_L2_MAX];
	void *data, *data_end;
	__u32 l2len;

	if ((void *)p->eth + XDPLB_L2_MAX > (void *)(long)ctx->data_end)
		return 0;
	if (!icmp_allow(kind)) {
		count(XDPLB_CNT_ICMP_LIMITED);
		return 0;
	}
	l2len = p->eth->h_proto == ip_proto ? ETH_HLEN : XDPLB_L2_MAX;
	__builtin_memcpy(l2, p->eth, XDPLB_L2_MAX);
	/* cut the frame after the quote, then make room in front of it */
	if (bpf_xdp_adjust_tail(ctx, (int)(l2len + keep) - (int)bpf_xdp_get_buff_len(ctx)))
		return 0;
	if (bpf_xdp_adjust_head(ctx, -(int)hdrs))
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + XDPLB_L2_MAX > data_end)
		return 0;
	__builtin_memcpy(data, l2 + ETH_ALEN, ETH_ALEN);	/* back to the sender */
	__builtin_memcpy(data + ETH_ALEN, l2, ETH_ALEN);
	__builtin_memcpy(data + 2 * ETH_ALEN, l2 + 2 * ETH_ALEN, XDPLB_L2_MAX - 2 * ETH_ALEN);
	return l2len;
}

/* The frame of p (a client's packet to a virtual service) becomes the ICMP
 * answer of kind (XDPLB_ICMP_KIND_*; mtu: fragmentation needed's next-hop
 * MTU), from the address the packet was sent to (icmp_send
 * answers a packet for a local address from that address), quoting its IP
 * header and first 8 bytes, and goes back out of the ingress. The answer's
 * IP id is the quoted packet's: deterministic, and no more repeated than the
 * client's own. Returns 1 if the frame is now the answer (to send back), 0 if
 * it is to be dropped unanswered. */
static __always_inline int icmp_answer(struct xdp_md *ctx, struct pkt *p, __u32 kind, __u32 mtu)
{
	__be32 client = p->key.saddr, vip = p->key.daddr;
	__u32 l2len, quote = p->ip->ihl * 4 + 8;
	__u8 tos = p->ip->tos;
	__be16 id = p->ip->id;
	void *data, *data_end;
	struct icmphdr *ic;
	struct iphdr *ip;

	if (!icmp_to_ok(client))
		return 0;
	l2len = answer_frame(ctx, p, kind, bpf_htons(ETH_P_IP), quote, XDPLB_ICMP_HDRS);
	if (!l2len)
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + XDPLB_L2_MAX + XDPLB_ICMP_HDRS > data_end)
		return 0;
	ip = data + l2len;
	ic = (void *)(ip + 1);
	if ((void *)(ic + 1) > data_end)
		return 0;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = (tos & 0x1e) | 0xc0;	/* icmp_send: RT_TOS | IPTOS_PREC_INTERNETCONTROL */
	ip->tot_len = bpf_htons(XDPLB_ICMP_HDRS + quote);
	ip->id = id;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->saddr = vip;
	ip->daddr = client;
	ip->check = 0;
	ip->check = (__u16)~ip_hdr_sum(ip, 5, data_end);
	ic->type = ICMP_DEST_UNREACH;
	ic->code = kind == XDPLB_ICMP_KIND_FRAG_NEEDED ? ICMP_FRAG_NEEDED : ICMP_PORT_UNREACH;
	ic->un.gateway = bpf_htonl(mtu & 0xffff);
	ic->checksum = 0;
	ic->checksum = (__u16)~csum_span(ctx, l2len + sizeof(*ip), sizeof(*ic) + quote);
	return 1;
}

/* An answer leaves by the ingress: by a DEVMAP redirect to it, XDP_TX if it
 * is not a redirect target. On a NIC both transmit on the ingress; on veth
 * (kernel 6.18, native mode) XDP_TX lost these answers and the redirect
 * delivers them. Returns a verdict counted as cnt. */
static __always_inline __u32 icmp_send_back(struct xdp_md *ctx, __u32 cnt)
{
	int act = tx_ports.redirect_map(ctx->ingress_ifindex, XDP_TX);

	return VERDICT(act, cnt);
}

/* The TCP/UDP frame p handed over with icmp_job (icmp_handoff). Returns a
 * verdict.
 * - PORT_UNREACH: a new connection with no destination, answered as IPVS
 *   does (ip_vs_schedule's icmp_send), from the VIP.
 * - TOO_BIG_IN: a client's packet over the egress MTU (IPVS's
 *   ensure_mtu_is_adequate): with DF, answered with fragmentation needed;
 *   without, Masq hands the rewritten packet to the stack, which fragments
 *   it (IPVS: ip_fragment). Route cannot: the stack would take a packet for
 *   the VIP as its own, so it is dropped; nor can a source-NATed one (fwd
 *   XDPLB_CONN_F_FULLNAT here: full-NAT and hairpin), from a local address.
 * - TOO_BIG_OUT: a Masq reply over the egress MTU. IPVS's replies take the
 *   kernel's forwarding path, and so does this one: ip_forward answers it
 *   when DF is set (fragmentation needed from the balancer's own address,
 *   quoting the real server's packet: it goes untouched), else fragments it
 *   (un-NATed first). A source-NATed reply is to a local address, which the
 *   stack would take as its own: with DF it is answered with fragmentation
 *   needed from that address (the device's MTU), without it dropped. */
static __always_inline __u32 icmp_job_run(struct xdp_md *ctx, struct pkt *p)
{
	__u32 zero = 0;
	struct icmp_job *j = icmp_job.lookup(&zero);

	if (!j)
		return pass();
	if (j->job == XDPLB_ICMP_JOB_TOO_BIG_IN) {
		if (ip_df(p->ip))
			return icmp_answer(ctx, p, XDPLB_ICMP_KIND_FRAG_NEEDED, j->mtu)
				       ? icmp_send_back(ctx, XDPLB_CNT_FRAG_NEEDED)
				       : drop(XDPLB_CNT_FRAG_NEEDED);
		if (j->fwd != IP_VS_CONN_F_MASQ)
			return drop(XDPLB_CNT_TOO_BIG);
		nat_dst(p, &j->addr, j->port, XDPLB_AF_INET);
		return VERDICT(XDP_PASS, XDPLB_CNT_TOO_BIG);
	}
	if (j->job == XDPLB_ICMP_JOB_TOO_BIG_OUT && j->fwd == XDPLB_CONN_F_FULLNAT) {
		/* to a local address: the stack would take it as its own */
		if (!ip_df(p->ip))
			return drop(XDPLB_CNT_TOO_BIG);
		return icmp_answer(ctx, p, XDPLB_ICMP_KIND_FRAG_NEEDED, j->mtu)
			       ? icmp_send_back(ctx, XDPLB_CNT_FRAG_NEEDED)
			       : drop(XDPLB_CNT_FRAG_NEEDED);
	}
	if (j->job == XDPLB_ICMP_JOB_TOO_BIG_OUT) {
		if (!ip_df(p->ip))
			nat_src(p, &j->addr, j->port, XDPLB_AF_INET);
		return VERDICT(XDP_PASS, XDPLB_CNT_TOO_BIG);
	}
	return icmp_answer(ctx, p, XDPLB_ICMP_KIND_PORT_UNREACH, 0)
		       ? icmp_send_back(ctx, XDPLB_CNT_NO_DEST) : drop(XDPLB_CNT_NO_DEST);
}

#endif /* XDPLB_ICMP_H */
