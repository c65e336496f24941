/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdplb.c - the XDP data path's programs: parse -> connection lookup ->
 * schedule -> rewrite -> forward -> count. xdplb_main runs on every
 * interface; a new connection continues by tail call in its scheduler
 * family's program (xdplb_new_*), then in xdplb_conn, which builds it;
 * a Tunnel connection's packet continues in xdplb_tunnel, an IPv4
 * fragment in xdplb_frag (frag.h), ICMP errors and the data path's own
 * ICMP answers in xdplb_icmp. IPv6 frames continue in xdplb_main6 and
 * their new connections in xdplb_new6_* and xdplb_conn6, their fragments
 * in xdplb_frag6: the same code compiled for af AF_INET6. Every program
 * returns through record_verdict() (stats.h).
 *
 * bcc rewrites map calls (map.lookup(...)) only in the file it compiles, so
 * xdplb/loader.py hands it this file with the project headers pasted in,
 * each once, with #line markers naming the real file.
 */
#include <uapi/linux/bpf.h>

#include "clock.h"
#include "conn.h"
#include "encap.h"
#include "frag.h"
#include "icmp.h"
#include "icmp6.h"
#include "icmp_error.h"
#include "maps.h"
#include "parse.h"
#include "persist.h"
#include "sched.h"
#include "service.h"
#include "stats.h"
#include "tcp_state.h"
#include "track.h"

/* The frame's packet with ports, of family af (a constant). */
static __always_inline int parse_af(struct xdp_md *ctx, struct pkt *p, const int af)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return af == XDPLB_AF_INET6 ? parse_pkt6(data, data_end, p, 1) : parse_pkt(data, data_end, p);
}

/* A new connection, first half: the scheduler of the service's family
 * (through the client's template if persistent) picks the destination and
 * hands it, in sched_out, to xdplb_conn (xdplb_conn6). The service is
 * xdplb_main's copy. */
static __always_inline __u32 schedule_new(struct xdp_md *ctx, int fam, const int af)
{
	struct sched_out *so;
	struct service *svc;
	struct pkt p = {};
	struct dest *d;
	__u32 slot = 0, zero = 0;
	__u64 now = now_ns();
	int persist;

	so = sched_out.lookup(&zero);
	if (!so || !pkt_has_ports(parse_af(ctx, &p, af)))
		return pass();
	svc = &so->svc;
	persist = svc->flags & IP_VS_SVC_F_PERSISTENT;
	if (persist)
		slot = persist_lookup(svc, &p, so->svc_port, now, af);
	so->new_template = persist && !slot;
	if (!slot) {
		slot = sched_pick(svc, &p, now, fam);
		d = slot ? dest_get(slot) : NULL;
		if (!d)		/* IPVS answers ICMP port unreachable */
			return no_dest(ctx, af);
	}
	so->dest_slot = slot;
	new_conn.call(ctx, af == XDPLB_AF_INET6 ? XDPLB_PROG_CONN6 : XDPLB_PROG_CONN);
	return drop(XDPLB_CNT_TAIL_CALL);
}

/* The family programs: xdplb/loader.py's NEW_CONN_PROGS says which
 * scheduler runs in which, for IPv4 (xdplb_new_*) and IPv6 (xdplb_new6_*). */
#define XDPLB_NEW_CONN_PROG(name, fam)							\
	int xdplb_new_##name(struct xdp_md *ctx)					\
	{										\
		return record_verdict(schedule_new(ctx, fam, XDPLB_AF_INET));		\
	}										\
	int xdplb_new6_##name(struct xdp_md *ctx)					\
	{										\
		return record_verdict(schedule_new(ctx, fam, XDPLB_AF_INET6));		\
	}

XDPLB_NEW_CONN_PROG(ring, XDPLB_FAM_RING)
XDPLB_NEW_CONN_PROG(list, XDPLB_FAM_LIST)
XDPLB_NEW_CONN_PROG(sh, XDPLB_FAM_SH)
XDPLB_NEW_CONN_PROG(dh, XDPLB_FAM_DH)
XDPLB_NEW_CONN_PROG(mh, XDPLB_FAM_MH)
XDPLB_NEW_CONN_PROG(lblc, XDPLB_FAM_LBLC)
XDPLB_NEW_CONN_PROG(lblcr, XDPLB_FAM_LBLCR)

/* A new connection, second half: build its entry and send (and, for a
 * first fragment, note it). */
static __always_inline __u32 build_conn(struct xdp_md *ctx, const int af)
{
	struct sched_out *so;
	struct dest *d;
	__u64 now;
	struct pkt p = {};
	__u32 zero = 0, verdict;
	int kind;

	so = sched_out.lookup(&zero);
	kind = parse_af(ctx, &p, af);
	if (!so || !pkt_has_ports(kind))
		return pass();
	now = now_ns();
	if (so->new_template) {
		d = dest_get(so->dest_slot);
		if (d)
			persist_new(&so->svc, &p, so->svc_port, d, so->dest_slot, now, af);
	}
	verdict = conn_new(ctx, &p, &so->svc, so->svc_port, now, so->dest_slot, &so->conn, af);
	return frag_noted(ctx, &p, verdict, pkt_conn_key(&p, af), 0, kind == XDPLB_PKT_FIRST_FRAG,
			  af);
}

int xdplb_conn(struct xdp_md *ctx)
{
	return record_verdict(build_conn(ctx, XDPLB_AF_INET));
}

int xdplb_conn6(struct xdp_md *ctx)
{
	return record_verdict(build_conn(ctx, XDPLB_AF_INET6));
}

/* A Tunnel connection's packet, from xdplb_main or xdplb_conn (tun_out
 * says where to; af: the packet's family): encapsulated and sent (encap.h). */
static __always_inline __u32 tunnel(struct xdp_md *ctx, const int af)
{
	struct tun_out *to;
	struct pkt p = {};
	__u32 zero = 0;

	/* Fragments of a Tunnel connection go to the stack: a later fragment
	 * could not follow its first into the tunnel (frag.h notes no
	 * encapsulation), so none is recorded and they all pass. */
	to = tun_out.lookup(&zero);
	if (!to || parse_af(ctx, &p, af) != XDPLB_PKT_WHOLE)
		return VERDICT(XDP_PASS, XDPLB_CNT_TO_STACK);
	return tunnel_in(ctx, &p, to, now_ns(), af);
}

int xdplb_tunnel(struct xdp_md *ctx)
{
	return record_verdict(tunnel(ctx, XDPLB_AF_INET));
}

int xdplb_tunnel6(struct xdp_md *ctx)
{
	return record_verdict(tunnel(ctx, XDPLB_AF_INET6));
}

/* A client's packet with ports (whole, or a first fragment: frag says
 * which; a constant 0 in xdplb_main, xdplb_main6 and xdplb_reply6, which
 * compile no fragment code): one on a tracked connection is handled in
 * place; a new connection to a virtual service (a SYN for TCP, as IPVS:
 * conn_schedules) goes on to its scheduler's program, with the service in
 * sched_out; anything else is passed untouched. */
static __always_inline __u32 balance_client(struct xdp_md *ctx, struct pkt *p, const int frag,
					    const int af)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct sched_out *so;
	struct service *svc;
	struct dest *d;
	struct conn *c;
	__u32 zero = 0;
	__be16 port;
	__u64 now;
	int assured;

	c = conn_lookup(pkt_conn_key(p, af), &assured, af);
	if (c && c->dir == XDPLB_DIR_IN) {
		d = dest_of_conn(c);
		now = now_ns();
		if (!conn_expired(c, now) && !conn_reuse(p, c) && !conn_nodest_expires(d))
			return frag_noted(ctx, p, handle_in(ctx, p, c, d, assured, now, af),
					  pkt_conn_key(p, af), 0, frag, af);
		conn_expire(p, c, assured, af);
	}
	/* untracked, expired, reused, ended, or a template's key */

	svc = svc_find(p, &port, af);
	if (!svc || !conn_schedules(p))
		return pass();
	if (af == XDPLB_AF_INET && !ip_csum_ok(p->ip, data_end))
		return pass();
	so = sched_out.lookup(&zero);
	if (!so)
		return pass();
	so->svc = *svc;
	so->svc_port = port;
	new_conn.call(ctx, af == XDPLB_AF_INET6 ? XDPLB_PROG_SCHED6 + svc->sched : svc->sched);
	return drop(XDPLB_CNT_TAIL_CALL);	/* no program for this scheduler */
}

/* A real server's reply (Masq, full-NAT, hairpin) is un-NATed; anything
 * else is a client's packet (a whole IPv6 one: xdplb_client6's). */
static __always_inline __u32 balance_reply(struct xdp_md *ctx, struct pkt *p, const int frag,
					   const int af)
{
	union conn_key_any ik = {};
	struct conn *c;
	int assured;

	c = conn_reply_lookup(p, &ik, &assured, af);
	if (c)
		return frag_noted(ctx, p, handle_out(ctx, p, c, &ik, af), &ik, 1, frag, af);
	if (af == XDPLB_AF_INET6 && !frag) {
		new_conn.call(ctx, XDPLB_PROG_CLIENT6);
		return drop(XDPLB_CNT_TAIL_CALL);
	}
	return balance_client(ctx, p, frag, af);
}

/* A packet with ports: a reply if its source may be a real server's
 * (rs_filter), else a client's. A whole IPv6 packet's reply lookups run
 * in xdplb_reply6 (XDPLB_PROG_REPLY6: xdplb.h says why). */
static __always_inline __u32 balance(struct xdp_md *ctx, struct pkt *p, const int frag,
				     const int af)
{
	if (!rs_maybe(p->key.saddr))
		return balance_client(ctx, p, frag, af);
	if (af == XDPLB_AF_INET6 && !frag) {
		new_conn.call(ctx, XDPLB_PROG_REPLY6);
		return drop(XDPLB_CNT_TAIL_CALL);
	}
	return balance_reply(ctx, p, frag, af);
}

/* A whole IPv6 packet whose source may be a real server's, from
 * xdplb_main6 (client: 0), or one that was not a reply, from xdplb_reply6
 * (client: 1). */
static __always_inline __u32 balance6(struct xdp_md *ctx, const int client)
{
	struct pkt p = {};

	if (parse_af(ctx, &p, XDPLB_AF_INET6) != XDPLB_PKT_WHOLE)
		return pass();
	if (client)
		return balance_client(ctx, &p, 0, XDPLB_AF_INET6);
	return balance_reply(ctx, &p, 0, XDPLB_AF_INET6);
}

int xdplb_reply6(struct xdp_md *ctx)
{
	return record_verdict(balance6(ctx, 0));
}

int xdplb_client6(struct xdp_md *ctx)
{
	return record_verdict(balance6(ctx, 1));
}

/* ICMP, by tail call: an ICMP error from xdplb_main is translated for the
 * connection it quotes (icmp_error.h); a client's TCP/UDP packet is
 * answered as icmp_job says (icmp.h). */
static __always_inline __u32 icmp_frame(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};

	if (pkt_has_ports(parse_pkt(data, data_end, &p)))	/* whole, or a first fragment */
		return icmp_job_run(ctx, &p);
	if (p.ip && p.ip->protocol == IPPROTO_ICMP)
		return icmp_error(ctx, &p, XDPLB_AF_INET);
	return pass();
}

int xdplb_icmp(struct xdp_md *ctx)
{
	return record_verdict(icmp_frame(ctx));
}

/* ICMPv6, by tail call: an ICMPv6 error from xdplb_main6 is translated for
 * the connection it quotes (icmp_error.h); a client's TCP/UDP packet is
 * answered as icmp_job says (icmp6.h). */
static __always_inline __u32 icmp6_frame(struct xdp_md *ctx)
{
	struct pkt p = {};

	if (pkt_has_ports(parse_af(ctx, &p, XDPLB_AF_INET6)))	/* whole, or a first fragment */
		return icmp6_job_run(ctx, &p);
	if (p.ip6)
		return icmp_error(ctx, &p, XDPLB_AF_INET6);
	return pass();
}

int xdplb_icmp6(struct xdp_md *ctx)
{
	return record_verdict(icmp6_frame(ctx));
}

/* Every frame. Fragments go on to xdplb_frag and ICMP to xdplb_icmp: whole
 * TCP/UDP packets pay one branch for them. */
static __always_inline __u32 classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	int kind = parse_pkt(data, data_end, &p);

	if (kind != XDPLB_PKT_WHOLE) {
		if (kind != XDPLB_PKT_NOT_OURS)
			new_conn.call(ctx, XDPLB_PROG_FRAG);
		else if (p.ip && p.ip->protocol == IPPROTO_ICMP)
			new_conn.call(ctx, XDPLB_PROG_ICMP);	/* icmp_error.h */
		else if (!p.ip && frame_is_ipv6(data, data_end))
			new_conn.call(ctx, XDPLB_PROG_MAIN6);
		return pass();
	}
	return balance(ctx, &p, 0, XDPLB_AF_INET);
}

/* An IPv6 frame, from xdplb_main: a TCP/UDP packet is balanced, a
 * fragment goes on to xdplb_frag6, ICMPv6 to xdplb_icmp6 (an error may be
 * about a connection); the rest passes untouched. */
static __always_inline __u32 classify6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	int kind = parse_pkt6(data, data_end, &p, 0);

	if (kind == XDPLB_PKT_WHOLE)
		return balance(ctx, &p, 0, XDPLB_AF_INET6);
	if (kind == XDPLB_PKT_FRAG_HDR)	/* not an atomic fragment: parse_pkt6 */
		new_conn.call(ctx, XDPLB_PROG_FRAG6);
	else if (p.ip6)	/* ICMPv6 */
		new_conn.call(ctx, XDPLB_PROG_ICMP6);
	return pass();
}

int xdplb_main6(struct xdp_md *ctx)
{
	return record_verdict(classify6(ctx));
}

int xdplb_main(struct xdp_md *ctx)
{
	return record_verdict(classify(ctx));
}

/* A fragment of family af: the first is balanced (and noted), a later
 * one follows it (frag.h). */
static __always_inline __u32 fragment(struct xdp_md *ctx, const int af)
{
	struct pkt p = {};
	int kind = parse_af(ctx, &p, af);

	if (kind == XDPLB_PKT_FIRST_FRAG)
		return balance(ctx, &p, 1, af);
	if (kind == XDPLB_PKT_LATER_FRAG)
		return frag_follow(ctx, &p, af);
	return pass();
}

int xdplb_frag(struct xdp_md *ctx)
{
	return record_verdict(fragment(ctx, XDPLB_AF_INET));
}

int xdplb_frag6(struct xdp_md *ctx)
{
	return record_verdict(fragment(ctx, XDPLB_AF_INET6));
}
