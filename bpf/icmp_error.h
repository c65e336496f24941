/* SPDX-License-Identifier: GPL-2.0 */
/*
 * icmp_error.h - ICMP errors about a connection, as IPVS's ip_vs_in_icmp and
 * ip_vs_out_icmp: destination unreachable (fragmentation needed included),
 * source quench and time exceeded, quoting a packet of a tracked
 * connection, go on to the other party; for Masq translated as
 * ip_vs_nat_icmp does, for a source-NATed connection (full-NAT, hairpin)
 * the local address and port too. Their IPv6 twins too (ip_vs_in_icmp_v6,
 * ip_vs_out_icmp_v6: destination unreachable, packet too big, time
 * exceeded), af a constant. The connection is found by the functions
 * ordinary packets use (conn.h). Anything else passes untouched. Runs in
 * xdplb_icmp and xdplb_icmp6.
 */
#ifndef XDPLB_ICMP_ERROR_H
#define XDPLB_ICMP_ERROR_H

#include <linux/icmp.h>

#include "clock.h"
#include "conn.h"
#include "forward.h"
#include "icmp.h"
#include "icmp6.h"
#include "parse.h"
#include "rewrite.h"
#include "service.h"
#include "stats.h"

/* An ICMP error frame (its outer header in struct pkt): the ICMP header and
 * the quoted packet's IP header and ports. ICMPv6's header has ICMP's
 * layout (type, code, checksum, 4 bytes). */
struct icmp_err {
	struct icmphdr *ic;
	struct iphdr *qip;	/* IPv4 */
	struct ipv6hdr *qip6;	/* IPv6 */
	__be16 *qports;		/* quoted source, destination port */
	__u16 icmp_len;		/* the ICMP message, header included */
};

static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH ||
	       type == ICMP_TIME_EXCEEDED;
}

/* The ICMP error in p's frame (parse_pkt set p->eth and p->ip): one of the
 * types IPVS handles, quoting an IPv4 TCP/UDP packet's header and ports (a
 * quoted fragment other than the first has none) inside the message.
 * Neither header may carry IP options: with them, the verifier could not
 * follow the program (their errors pass untouched). Returns 0 if so. */
static __always_inline int icmp_err_parse(const struct pkt *p, const void *data_end,
					  struct icmp_err *e)
{
	struct iphdr *ip = p->ip;
	struct icmphdr *ic = (void *)(ip + 1);
	struct iphdr *qip = (void *)(ic + 1);
	__be16 *ports = (void *)(qip + 1);
	__u32 tot_len = bpf_ntohs(ip->tot_len);

	asm volatile("%0 &= 0xffff" : "+r"(tot_len));	/* as in parse_pkt */
	if ((void *)(ports + 2) > data_end || (void *)(ports + 2) > (void *)ip + tot_len)
		return -1;
	if (ip->ihl != 5 || !icmp_is_error(ic->type) || qip->version != 4 || qip->ihl != 5)
		return -1;
	if (qip->protocol != IPPROTO_TCP && qip->protocol != IPPROTO_UDP)
		return -1;
	if (qip->frag_off & bpf_htons(XDPLB_IP_OFFSET))
		return -1;
	e->ic = ic;
	e->qip = qip;
	e->qports = ports;
	e->icmp_len = tot_len - sizeof(*ip);
	return 0;
}

/* The ICMPv6 error in p's frame: destination unreachable, packet too big or
 * time exceeded right after the IPv6 header, quoting an IPv6 TCP/UDP
 * packet's header (without extension headers) and ports inside the
 * message. Returns 0 if so. */
static __always_inline int icmp6_err_parse(const struct pkt *p, const void *data_end,
					   struct icmp_err *e)
{
	struct ipv6hdr *ip6 = p->ip6;
	struct icmphdr *ic = (void *)(ip6 + 1);
	struct ipv6hdr *qip6 = (void *)(ic + 1);
	__be16 *ports = (void *)(qip6 + 1);
	__u32 len = bpf_ntohs(ip6->payload_len);

	asm volatile("%0 &= 0xffff" : "+r"(len));	/* as in parse_pkt */
	if ((void *)(ports + 2) > data_end || (void *)(ports + 2) > (void *)(ip6 + 1) + len)
		return -1;
	if (ip6->nexthdr != IPPROTO_ICMPV6 || qip6->version != 6 ||
	    (ic->type != ICMPV6_DEST_UNREACH && ic->type != ICMPV6_PKT_TOOBIG &&
	     ic->type != ICMPV6_TIME_EXCEED))
		return -1;
	if (qip6->nexthdr != IPPROTO_TCP && qip6->nexthdr != IPPROTO_UDP)
		return -1;
	e->ic = ic;
	e->qip6 = qip6;
	e->qports = ports;
	e->icmp_len = len;
	return 0;
}

/* The checksums IPVS checks before it translates: the IP header's (ip_rcv)
 * and the whole ICMP message's (ICMPv6's with its pseudo-header). A bad one
 * passes untouched: the stack drops it, as IPVS does. */
static __always_inline int icmp_err_sound(struct xdp_md *ctx, const struct pkt *p,
					  const struct icmp_err *e, const int af)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 sum = csum_span(ctx, (void *)e->ic - data, e->icmp_len);

	if (!sum)	/* too long to check, or cut short */
		return 0;
	if (af == XDPLB_AF_INET6)
		return csum_fold64(pseudo_v6(p->ip6->saddr.in6_u.u6_addr32,
					     p->ip6->daddr.in6_u.u6_addr32, e->icmp_len,
					     IPPROTO_ICMPV6) + sum) == 0xffff;
	return ip_hdr_sum(p->ip, 5, data_end) == 0xffff && sum == 0xffff;
}

/* ip_vs_nat_icmp: the outer address *outer, the quoted address *quoted and
 * port *port become addr:pnew. The outer IP checksum follows incrementally,
 * the quoted header's is recomputed (as the kernel's ip_send_check), the
 * ICMP checksum follows both incrementally (it was checked whole). The
 * quoted TCP/UDP checksum is left as it is, as the kernel leaves it: it
 * covers a whole segment the quote cuts short, so nobody can check it, and
 * the receiver's error handler (tcp_v4_err, __udp4_lib_err) does not. */
static __always_inline void icmp_nat(struct iphdr *ip, const struct icmp_err *e, __be32 *outer,
				     __be32 *quoted, __be16 *port, __be32 addr, __be16 pnew,
				     const void *data_end)
{
	struct iphdr *qip = e->qip;
	__u16 qcheck = qip->check;
	__u32 d = csum_diff4(*outer, addr);

	ip->check = csum_apply(ip->check, d);
	*outer = addr;
	d = csum_diff4(*quoted, addr) + csum_diff2(*port, pnew);
	*quoted = addr;
	*port = pnew;
	qip->check = 0;
	qip->check = (__u16)~ip_hdr_sum(qip, 5, data_end);
	d += csum_diff2(qcheck, qip->check);
	e->ic->checksum = csum_apply(e->ic->checksum, d);
}

/* ip_vs_nat_icmp_v6: the same for IPv6, which has no header checksums but
 * whose ICMPv6 checksum covers the outer addresses (its pseudo-header). */
static __always_inline void icmp_nat6(struct pkt *q, const struct icmp_err *e, __be32 *outer,
				      __be32 *quoted, __be16 *port, const __be32 *addr,
				      __be16 pnew)
{
	__u32 d = addr_rewrite(q, outer, addr, XDPLB_AF_INET6) +
		  addr_rewrite(q, quoted, addr, XDPLB_AF_INET6) + csum_diff2(*port, pnew);

	*port = pnew;
	e->ic->checksum = csum_apply(e->ic->checksum, d);
}

/* From the client's side, about a packet the client was sent (quoting
 * VIP:vport -> client: a Masq reply, or a Route real server's own): to the
 * real server, as ip_vs_in_icmp and ip_vs_icmp_xmit. Masq: the outer
 * destination and the quoted source become the real server's address and
 * port; Route: forwarded as it is, on the client's packets' egress. Counted
 * as an incoming packet of the connection (ip_vs_in_stats). q: the quoted
 * tuple reversed, the connection's key. Returns a verdict. */
static __always_inline __u32 icmp_in(struct xdp_md *ctx, struct pkt *p, struct pkt *q,
				     const struct icmp_err *e, const struct conn *c, __u64 now,
				     const int af)
{
	void *data_end = (void *)(long)ctx->data_end;
	const __be32 *raddr = conn_raddr(c, af);
	struct egress *eg = NULL;
	int rc;

	if (!fwd_xdp(c->fwd))
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	if (dest_of_conn(c))
		stats_add(c, 0, q->l3_len);
	rc = dest_egress(ctx, q, c->dest_slot, raddr, c->addr, c->port, now, &eg, af);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	if (fwd_dnat(c->fwd)) {
		if (af == XDPLB_AF_INET6)
			icmp_nat6(q, e, p->ip6->daddr.in6_u.u6_addr32,
				  e->qip6->saddr.in6_u.u6_addr32, &e->qports[0], raddr, c->port);
		else
			icmp_nat(p->ip, e, &p->ip->daddr, &e->qip->saddr, &e->qports[0], c->addr,
				 c->port, data_end);
	}
	/* source-NATed: from the local address, about a reply to it */
	if (c->lport && af == XDPLB_AF_INET6)
		icmp_nat6(q, e, p->ip6->saddr.in6_u.u6_addr32, e->qip6->daddr.in6_u.u6_addr32,
			  &e->qports[1], conn_laddr(c, af), c->lport);
	else if (c->lport)
		icmp_nat(p->ip, e, &p->ip->saddr, &e->qip->daddr, &e->qports[1], c->laddr, c->lport,
			 data_end);
	count(XDPLB_CNT_ICMP_XLATE);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || !eg)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, q, eg->ifindex, eg->smac, eg->dmac);
}

/* From the real server's side, about a client's packet (quoting client ->
 * rs:rport), or the real server's own: to the client, as ip_vs_out_icmp and
 * handle_response_icmp: the outer source and the quoted destination become
 * the virtual service's address and port, on the entry's reply egress.
 * Counted as an outgoing packet (ip_vs_out_stats). q: the quoted tuple
 * reversed, a reply's; ik: the connection's key. Returns a verdict. */
static __always_inline __u32 icmp_out(struct xdp_md *ctx, struct pkt *p, struct pkt *q,
				      const struct icmp_err *e, struct conn *c,
				      const union conn_key_any *ik, const int af)
{
	void *data_end = (void *)(long)ctx->data_end;
	const __be32 *vaddr = af == XDPLB_AF_INET6 ? ik->v6.daddr : &ik->v4.daddr;
	__be16 vport = af == XDPLB_AF_INET6 ? ik->v6.dport : ik->v4.dport;
	int rc = reply_egress(ctx, q, c, ik, af);

	if (dest_get(c->dest_slot))
		stats_add(c, 1, q->l3_len);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	if (af == XDPLB_AF_INET6)
		icmp_nat6(q, e, p->ip6->saddr.in6_u.u6_addr32, e->qip6->daddr.in6_u.u6_addr32,
			  &e->qports[1], vaddr, vport);
	else
		icmp_nat(p->ip, e, &p->ip->saddr, &e->qip->daddr, &e->qports[1], vaddr[0], vport,
			 data_end);
	/* source-NATed: to the client, about its packet as it was sent */
	if (c->lport && af == XDPLB_AF_INET6)
		icmp_nat6(q, e, p->ip6->daddr.in6_u.u6_addr32, e->qip6->saddr.in6_u.u6_addr32,
			  &e->qports[0], ik->v6.saddr, ik->v6.sport);
	else if (c->lport)
		icmp_nat(p->ip, e, &p->ip->daddr, &e->qip->saddr, &e->qports[0], ik->v4.saddr,
			 ik->v4.sport, data_end);
	count(XDPLB_CNT_ICMP_XLATE);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, q, c->ifindex, c->smac, c->dmac);
}

/* q: the packet the ICMP error in p quotes, its tuple reversed (as the
 * reply it answered or the client's packet it answered), over p's outer
 * headers. 0 if the error does not go to the quoted packet's source. */
static __always_inline int icmp_quoted(struct pkt *p, const struct icmp_err *e, struct pkt *q,
				       const int af)
{
	q->eth = p->eth;
	q->key.sport = e->qports[1];
	q->key.dport = e->qports[0];
	if (af == XDPLB_AF_INET6) {
		if (!addr6_eq(p->ip6->daddr.in6_u.u6_addr32, e->qip6->saddr.in6_u.u6_addr32))
			return 0;
		q->ip6 = p->ip6;
		q->l3_len = sizeof(struct ipv6hdr) + e->icmp_len;
		__builtin_memcpy(q->key6.saddr, &e->qip6->daddr, 16);
		__builtin_memcpy(q->key6.daddr, &e->qip6->saddr, 16);
		q->key6.sport = q->key.sport;
		q->key6.dport = q->key.dport;
		q->key6.proto = q->key.proto = e->qip6->nexthdr;
		q->key.saddr = addr_fold(q->key6.saddr);
		q->key.daddr = addr_fold(q->key6.daddr);
		return 1;
	}
	if (p->ip->daddr != e->qip->saddr)
		return 0;
	q->ip = p->ip;
	q->l3_len = bpf_ntohs(p->ip->tot_len);
	q->key.saddr = e->qip->daddr;
	q->key.daddr = e->qip->saddr;
	q->key.proto = e->qip->protocol;
	return 1;
}

/* An ICMP (af: ICMPv6) frame from xdplb_main (p: its outer headers). The
 * quoted packet's tuple, reversed, is the reply it answered or the client's
 * packet it answered ("the embedded headers contain source and dest in
 * reverse order"): looked up as a reply first, as xdplb_main does, then as
 * a client's packet. An error goes to the quoted packet's source; one that
 * does not, or quotes nothing tracked, passes untouched. Returns a verdict. */
static __always_inline __u32 icmp_error(struct xdp_md *ctx, struct pkt *p, const int af)
{
	void *data_end = (void *)(long)ctx->data_end;
	union conn_key_any ik = {};
	struct icmp_err e = {};
	struct pkt q = {};
	struct conn *c;
	__u64 now;
	int assured, bad;

	bad = af == XDPLB_AF_INET6 ? icmp6_err_parse(p, data_end, &e)
				   : icmp_err_parse(p, data_end, &e);
	if (bad < 0 || !icmp_quoted(p, &e, &q, af))
		return pass();
	now = now_ns();
	if (rs_maybe(q.key.saddr)) {
		c = conn_reply_lookup(&q, &ik, &assured, af);
		if (c && !conn_expired(c, now))
			return icmp_err_sound(ctx, p, &e, af) ? icmp_out(ctx, p, &q, &e, c, &ik, af)
							      : pass();
	}
	c = conn_lookup(pkt_conn_key(&q, af), &assured, af);
	if (c && c->dir == XDPLB_DIR_IN && !conn_expired(c, now))
		return icmp_err_sound(ctx, p, &e, af) ? icmp_in(ctx, p, &q, &e, c, now, af) : pass();
	return pass();
}

#endif /* XDPLB_ICMP_ERROR_H */
