/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fnat.h - source NAT of a new connection (DPVS's full-NAT; hairpin): which
 * connections get it, the local address and port they are lent (fnat_out,
 * xdplb.h), and the rewrite of both directions' addresses. The mapping's
 * lookup by a reply and its removal with the entry are conn.h's.
 */
#ifndef XDPLB_FNAT_H
#define XDPLB_FNAT_H

#include "conn.h"
#include "forward.h"
#include "hash.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"

#define XDPLB_FNAT_RANGE	(XDPLB_FNAT_PORT_MAX - XDPLB_FNAT_PORT_MIN + 1)
#if XDPLB_LADDR_MAX != 16
#error "fnat_bind masks a local address index with 15"
#endif

/* Hairpin (XDPLB_SVC_F_HAIRPIN): a Masq connection whose client is the
 * destination itself, or is reached by the destination's egress, would
 * get its replies straight from the real server, bypassing the balancer:
 * it is source-NATed. *fallback: the balancer's own address on that egress
 * (tun_src), for a service without local addresses. */
static __always_inline int hairpin_wanted(struct xdp_md *ctx, struct pkt *p, const struct dest *d,
					  __u32 slot, __u64 now, __be32 *fallback)
{
	struct bpf_fib_lookup fib = {};
	struct egress *e = NULL;
	__u32 idx;
	__be32 *src;
	int rc;

	rc = dest_egress(ctx, p, slot, &d->addr, d->addr, d->port, now, &e, XDPLB_AF_INET);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !e)
		return 0;
	idx = e->ifindex;
	if (p->key.saddr != d->addr) {
		rc = fib_ask(ctx, p, &p->key.daddr, p->key.dport, &p->key.saddr, p->key.sport, &fib,
			     XDPLB_AF_INET);
		if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
		    fib.ifindex != idx)
			return 0;
	}
	src = tun_src.lookup(&idx);
	*fallback = src ? *src : 0;
	return 1;
}

/* Is a new connection of service svc to destination d (slot) source-NATed?
 * Full-NAT always, Masq with hairpin when the client is on the real
 * servers' side. *fallback: see hairpin_wanted (0: laddrs only). */
static __always_inline int fnat_wanted(struct xdp_md *ctx, struct pkt *p,
				       const struct service *svc, const struct dest *d, __u32 slot,
				       __u64 now, __be32 *fallback, const int af)
{
	*fallback = 0;
	if (d->fwd == XDPLB_CONN_F_FULLNAT)
		return 1;
	if (af != XDPLB_AF_INET || !(svc->flags & XDPLB_SVC_F_HAIRPIN) ||
	    d->fwd != IP_VS_CONN_F_MASQ)
		return 0;
	return hairpin_wanted(ctx, p, d, slot, now, fallback);
}

/* Lend new connection nc (p's, of service slot svc_slot) a local address
 * and port: candidates from a hash of the client's tuple and the CPU's
 * random state, XDPLB_FNAT_PROBES consecutive ports over the service's
 * local addresses in turn (or fallback alone), each claimed by inserting
 * its reply tuple into fnat_out with BPF_NOEXIST, which only one CPU can
 * win. Non-zero: none was free (or there is no local address). */
static __always_inline int fnat_bind(const struct pkt *p, struct conn *nc, __u32 svc_slot,
				     __be32 fallback)
{
	struct laddr_set *ls = laddrs.lookup(&svc_slot);
	struct conn_key mk = {};
	__u32 n = ls ? ls->n : 0, h, i, idx, port;
	__be32 la;

	if (n > XDPLB_LADDR_MAX)
		n = XDPLB_LADDR_MAX;
	if (!n && !fallback)
		return -1;
	h = xdplb_hash_32(p->key.saddr ^ p->key.daddr ^ ((__u32)p->key.sport << 16 | p->key.dport),
			  32) ^ bpf_get_prandom_u32();
	mk.saddr = nc->addr;
	mk.sport = nc->port;
	mk.proto = p->key.proto;
	for (i = 0; i < XDPLB_FNAT_PROBES; i++) {
		la = fallback;
		if (ls && n) {
			idx = ((h & 0xffff) + i) % n;
			/* (the verifier cannot bound a remainder) */
			asm volatile("%0 &= 15" : "+r"(idx));
			la = ls->a[idx].addr[0];
		}
		if (!la)
			continue;
		port = XDPLB_FNAT_PORT_MIN + ((h >> 16) + i) % XDPLB_FNAT_RANGE;
		mk.daddr = la;
		mk.dport = bpf_htons((__u16)port);
		if (fnat_out.insert(&mk, &p->key) == 0) {
			nc->laddr = la;
			nc->lport = mk.dport;
			return 0;
		}
	}
	return -1;
}

#endif /* XDPLB_FNAT_H */
