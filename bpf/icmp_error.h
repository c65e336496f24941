/* SPDX-License-Identifier: GPL-2.0 */
/*
 * icmp_error.h - ICMP errors about a connection, as IPVS's ip_vs_in_icmp and
 * ip_vs_out_icmp: destination unreachable (fragmentation needed included),
 * source quench and time exceeded, quoting a packet of a tracked
 * connection, go on to the other party; for Masq translated as
 * ip_vs_nat_icmp does. The connection is found by the functions ordinary
 * packets use (conn.h). Anything else passes untouched. Runs in xdplb_icmp.
 */
#ifndef XDPLB_ICMP_ERROR_H
#define XDPLB_ICMP_ERROR_H

#include <linux/icmp.h>

#include "clock.h"
#include "conn.h"
#include "forward.h"
#include "icmp.h"
#include "parse.h"
#include "rewrite.h"
#include "service.h"
#include "stats.h"

/* An ICMP error frame (its outer header in struct pkt): the ICMP header and
 * the quoted packet's IP header and ports. */
struct icmp_err {
	struct icmphdr *ic;
	struct iphdr *qip;
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

/* The checksums IPVS checks before it translates: the IP header's (ip_rcv)
 * and the whole ICMP message's. A bad one passes untouched: the stack drops
 * it, as IPVS does. */
static __always_inline int icmp_err_sound(struct xdp_md *ctx, const struct pkt *p,
					  const struct icmp_err *e)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return ip_hdr_sum(p->ip, 5, data_end) == 0xffff &&
	       csum_span(ctx, (void *)e->ic - data, e->icmp_len) == 0xffff;
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

/* From the client's side, about a packet the client was sent (quoting
 * VIP:vport -> client: a Masq reply, or a Route real server's own): to the
 * real server, as ip_vs_in_icmp and ip_vs_icmp_xmit. Masq: the outer
 * destination and the quoted source become the real server's address and
 * port; Route: forwarded as it is, on the client's packets' egress. Counted
 * as an incoming packet of the connection (ip_vs_in_stats). q: the quoted
 * tuple reversed, the connection's key. Returns a verdict. */
static __always_inline __u32 icmp_in(struct xdp_md *ctx, struct pkt *p, struct pkt *q,
				     const struct icmp_err *e, const struct conn *c, __u64 now)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct egress *eg = NULL;
	int rc;

	if (!fwd_xdp(c->fwd))
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	if (dest_of_conn(c))
		stats_add(c, 0, q->l3_len);
	rc = dest_egress(ctx, q, c->dest_slot, &c->addr, c->addr, c->port, now, &eg, XDPLB_AF_INET);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	if (c->fwd == IP_VS_CONN_F_MASQ)
		icmp_nat(p->ip, e, &p->ip->daddr, &e->qip->saddr, &e->qports[0], c->addr, c->port,
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
				      const struct conn_key *ik)
{
	void *data_end = (void *)(long)ctx->data_end;
	int rc = reply_egress(ctx, q, c, &ik->daddr, ik->dport, XDPLB_AF_INET);

	if (dest_get(c->dest_slot))
		stats_add(c, 1, q->l3_len);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return VERDICT(XDP_PASS, XDPLB_CNT_NO_ROUTE);
	icmp_nat(p->ip, e, &p->ip->saddr, &e->qip->daddr, &e->qports[1], ik->daddr, ik->dport,
		 data_end);
	count(XDPLB_CNT_ICMP_XLATE);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return transmit(ctx, q, c->ifindex, c->smac, c->dmac);
}

/* An ICMP frame from xdplb_main (p: its outer headers). The quoted packet's
 * tuple, reversed, is the reply it answered or the client's packet it
 * answered ("the embedded headers contain source and dest in reverse
 * order"): looked up as a reply first, as xdplb_main does, then as a
 * client's packet. An error goes to the quoted packet's source; one that
 * does not, or quotes nothing tracked, passes untouched. Returns a verdict. */
static __always_inline __u32 icmp_error(struct xdp_md *ctx, struct pkt *p)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct conn_key ik = {};
	struct icmp_err e = {};
	struct pkt q = {};
	struct conn *c;
	__u64 now;
	int assured;

	if (icmp_err_parse(p, data_end, &e) < 0 || p->ip->daddr != e.qip->saddr)
		return pass();
	q.eth = p->eth;
	q.ip = p->ip;
	q.l3_len = bpf_ntohs(p->ip->tot_len);
	q.key.saddr = e.qip->daddr;
	q.key.daddr = e.qip->saddr;
	q.key.sport = e.qports[1];
	q.key.dport = e.qports[0];
	q.key.proto = e.qip->protocol;
	now = now_ns();
	if (rs_maybe(q.key.saddr)) {
		c = conn_reply_lookup4(&q, &ik, &assured);
		if (c && !conn_expired(c, now))
			return icmp_err_sound(ctx, p, &e) ? icmp_out(ctx, p, &q, &e, c, &ik)
							       : pass();
	}
	c = conn_lookup(&q.key, &assured, XDPLB_AF_INET);
	if (c && c->dir == XDPLB_DIR_IN && !conn_expired(c, now))
		return icmp_err_sound(ctx, p, &e) ? icmp_in(ctx, p, &q, &e, c, now) : pass();
	return pass();
}

#endif /* XDPLB_ICMP_ERROR_H */
