/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fnat.h - source NAT of a new connection (DPVS's full-NAT; hairpin): which
 * connections get it, and the local address and port they are lent
 * (fnat_out, fnat_out6: xdplb.h). The rewrite is forward.h's, the
 * mapping's lookup by a reply and its removal with the entry conn.h's.
 * af, a constant, is the connection's family.
 */
#ifndef XDPLB_FNAT_H
#define XDPLB_FNAT_H

#include "conn.h"
#include "forward.h"
#include "hash.h"
#include "maps.h"
#include "parse.h"

#define XDPLB_FNAT_RANGE	(XDPLB_FNAT_PORT_MAX - XDPLB_FNAT_PORT_MIN + 1)
#if XDPLB_LADDR_MAX != 16
#error "fnat_bind masks a local address index with 15"
#endif

/* Hairpin (XDPLB_SVC_F_HAIRPIN): a Masq connection whose client is the
 * destination itself, or is reached by the destination's egress, would
 * get its replies straight from the real server, bypassing the balancer:
 * it is source-NATed. *fallback: the balancer's own address on that egress
 * (tun_src, tun_src6), for a service without local addresses (all zero:
 * none known). */
static __always_inline int hairpin_wanted(struct xdp_md *ctx, struct pkt *p, const struct dest *d,
					  __u32 slot, __u64 now, __be32 *fallback, const int af)
{
	const __be32 *raddr = af == XDPLB_AF_INET6 ? d->addr6 : &d->addr;
	const __be32 *client = af == XDPLB_AF_INET6 ? p->key6.saddr : &p->key.saddr;
	const __be32 *vip = af == XDPLB_AF_INET6 ? p->key6.daddr : &p->key.daddr;
	struct bpf_fib_lookup fib = {};
	struct egress *e = NULL;
	struct tun_src6 *src6;
	__be32 *src;
	__u32 idx;
	int rc;

	rc = dest_egress(ctx, p, slot, raddr, d->addr, d->port, now, &e, af);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !e)
		return 0;
	idx = e->ifindex;
	if (af == XDPLB_AF_INET6 ? !addr6_eq(client, raddr) : client[0] != raddr[0]) {
		rc = fib_ask(ctx, p, vip, p->key.dport, client, p->key.sport, &fib, af);
		if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
		    fib.ifindex != idx)
			return 0;
	}
	if (af == XDPLB_AF_INET6) {
		src6 = tun_src6.lookup(&idx);
		if (src6)
			__builtin_memcpy(fallback, src6->addr, 16);
	} else {
		src = tun_src.lookup(&idx);
		fallback[0] = src ? *src : 0;
	}
	return 1;
}

/* Is a new connection of service svc to destination d (slot) source-NATed?
 * Full-NAT always, Masq with hairpin when the client is on the real
 * servers' side. fallback[4]: see hairpin_wanted (left zero: laddrs only). */
static __always_inline int fnat_wanted(struct xdp_md *ctx, struct pkt *p,
				       const struct service *svc, const struct dest *d, __u32 slot,
				       __u64 now, __be32 *fallback, const int af)
{
	if (d->fwd == XDPLB_CONN_F_FULLNAT)
		return 1;
	if (!(svc->flags & XDPLB_SVC_F_HAIRPIN) || d->fwd != IP_VS_CONN_F_MASQ)
		return 0;
	return hairpin_wanted(ctx, p, d, slot, now, fallback, af);
}

/* Try to claim reply tuple mk (its local address and port filled in) for
 * client tuple p: 0 if this CPU's insert won it. */
static __always_inline int fnat_claim(const struct pkt *p, union conn_key_any *mk, const int af)
{
	if (af == XDPLB_AF_INET6)
		return fnat_out6.insert(&mk->v6, (void *)&p->key6);
	return fnat_out.insert(&mk->v4, (void *)&p->key);
}

/* Lend new connection nc6 (p's, of service slot svc_slot) a local address
 * and port: candidates from a hash of the client's tuple and the CPU's
 * random state, XDPLB_FNAT_PROBES consecutive ports over the service's
 * local addresses in turn (or fallback alone), each claimed by inserting
 * its reply tuple into fnat_out (fnat_out6) with BPF_NOEXIST, which only
 * one CPU can win. Non-zero: none was free (or there is no local address). */
static __always_inline int fnat_bind(const struct pkt *p, struct conn6 *nc6, __u32 svc_slot,
				     const __be32 *fallback, const int af)
{
	struct laddr_set *ls = laddrs.lookup(&svc_slot);
	struct conn *nc = &nc6->c;
	union conn_key_any mk = {};
	__u32 n = ls ? ls->n : 0, h, i, idx, port;
	__be32 *la = af == XDPLB_AF_INET6 ? mk.v6.daddr : &mk.v4.daddr;
	__be16 *lport = af == XDPLB_AF_INET6 ? &mk.v6.dport : &mk.v4.dport;

	if (n > XDPLB_LADDR_MAX)
		n = XDPLB_LADDR_MAX;
	if (!n && !(fallback[0] | fallback[1] | fallback[2] | fallback[3]))
		return -1;
	h = xdplb_hash_32(p->key.saddr ^ p->key.daddr ^ ((__u32)p->key.sport << 16 | p->key.dport),
			  32) ^ bpf_get_prandom_u32();
	fnat_key(nc, p->key.proto, &mk, af);	/* the real server's side */
	for (i = 0; i < XDPLB_FNAT_PROBES; i++) {
		if (ls && n) {
			idx = ((h & 0xffff) + i) % n;
			/* (the verifier cannot bound a remainder) */
			asm volatile("%0 &= 15" : "+r"(idx));
			__builtin_memcpy(la, ls->a[idx].addr, af == XDPLB_AF_INET6 ? 16 : 4);
		} else {
			__builtin_memcpy(la, fallback, af == XDPLB_AF_INET6 ? 16 : 4);
		}
		if (!(la[0] | (af == XDPLB_AF_INET6 ? la[1] | la[2] | la[3] : 0)))
			continue;
		port = XDPLB_FNAT_PORT_MIN + ((h >> 16) + i) % XDPLB_FNAT_RANGE;
		*lport = bpf_htons((__u16)port);
		if (fnat_claim(p, &mk, af) == 0) {
			nc->lport = *lport;
			if (af == XDPLB_AF_INET6) {
				__builtin_memcpy(nc6->laddr6, la, 16);
				nc->laddr = addr_fold(la);
			} else {
				nc->laddr = la[0];
			}
			return 0;
		}
	}
	return -1;
}

#endif /* XDPLB_FNAT_H */
