/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched_lblc.h - lblc and lblcr: the kernel's per-destination-address cache
 * (the lblc LRU map) of one server (lblc) or a set of up to XDPLB_LBLCR_SET
 * (lblcr), filled from a wlc pick (sched_list).
 */
#ifndef XDPLB_SCHED_LBLC_H
#define XDPLB_SCHED_LBLC_H

#include "maps.h"
#include "parse.h"
#include "sched_list.h"
#include "service.h"

/* lblc / lblcr's is_overloaded(): more active connections than weight while
 * some destination of the service is below half its weight. */
static __always_inline int lblc_overloaded(const struct service *svc, __u32 slot, __u32 weight)
{
	struct dest_conns *dc = dest_conns.lookup(&slot);
	struct svc_dests *l;
	__u32 s = svc->slot;
	int i;

	if (!dc || nonneg(dc->active) <= (__s64)weight)
		return 0;
	l = svc_dests.lookup(&s);
	if (!l)
		return 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		s = l->d[i].slot;
		if (!s)
			break;
		dc = dest_conns.lookup(&s);
		if (dc && nonneg(dc->active) * 2 < (__s64)l->d[i].weight)
			return 1;
	}
	return 0;
}

/* A new cache entry for k whose one member is the wlc pick. */
static __always_inline __u32 lblc_new(const struct service *svc, struct lblc_key *k, __u64 now)
{
	struct lblc_ent ne = {};
	__u32 slot = sched_list(svc);

	if (!slot)
		return 0;
	ne.n = 1;
	ne.slot[0] = slot;
	ne.last_used = now;
	ne.last_mod = now;
	lblc.update(k, &ne);
	return slot;
}

/* ip_vs_lblc_schedule: the cached server of the packet's destination
 * address while it is valid, has weight and is not overloaded. */
static __always_inline __u32 sched_lblc(const struct service *svc, const struct pkt *p, __u64 now)
{
	struct lblc_key k = {};
	struct lblc_ent *en;
	struct dest *d;
	__u32 slot;

	k.svc_slot = svc->slot;
	k.addr = p->key.daddr;
	en = lblc.lookup(&k);
	if (en) {
		slot = en->slot[0];
		d = dests.lookup(&slot);
		if (dest_valid(d, svc->slot, 0) && d->weight &&
		    !lblc_overloaded(svc, slot, d->weight)) {
			en->last_used = now;
			return slot;
		}
	}
	return lblc_new(svc, &k, now);
}

/* ip_vs_dest_set_min and ip_vs_dest_set_max over the set (its unused
 * members are 0), running values in map memory (see sched_list): the least
 * loaded valid member that is not overloaded, and the most loaded of all. */
static __always_inline void lblcr_set_scan(const struct service *svc, struct lblc_ent *en,
					   struct sched_out *acc)
{
	struct dest_conns *dc;
	struct dest *d;
	__u64 doh, w;
	__u32 i, slot;

	acc->least = acc->lw = acc->loh = 0;
	acc->most = acc->mw = acc->moh = acc->mi = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LBLCR_SET; i++) {
		slot = *(volatile __u32 *)&en->slot[i];
		if (!slot)
			break;
		d = dests.lookup(&slot);
		dc = dest_conns.lookup(&slot);
		if (!d || !dc)
			continue;
		w = *(volatile __u32 *)&d->weight;
		doh = (nonneg(dc->active) << 8) + nonneg(dc->inactive);
		if (w && (!acc->most || acc->moh * w < doh * acc->mw)) {
			acc->most = slot;
			acc->mi = i;
			acc->mw = w;
			acc->moh = doh;
		}
		if (dc->overload || !dest_available(d))
			continue;
		if (acc->least ? acc->loh * w > doh * acc->lw : w > 0) {
			acc->least = slot;
			acc->lw = w;
			acc->loh = doh;
		}
	}
}

/* ip_vs_dest_set_erase of the most loaded member (acc->mi). */
static __always_inline void lblcr_set_erase(struct lblc_ent *en, const struct sched_out *acc,
					    __u64 now)
{
	__u32 i;

#pragma clang loop unroll(disable)
	for (i = 0; i + 1 < XDPLB_LBLCR_SET; i++) {
		if (i >= acc->mi)
			en->slot[i] = *(volatile __u32 *)&en->slot[i + 1];
	}
	en->slot[XDPLB_LBLCR_SET - 1] = 0;
	en->n = en->n - 1;
	en->last_mod = now;
}

/* ip_vs_dest_set_insert(check): at the head unless present (a full set
 * keeps its members). */
static __always_inline void lblcr_set_insert(struct lblc_ent *en, __u32 slot, __u64 now)
{
	__u32 i;

#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LBLCR_SET; i++) {
		if (*(volatile __u32 *)&en->slot[i] == slot)
			return;
	}
	if (en->slot[XDPLB_LBLCR_SET - 1])
		return;
#pragma clang loop unroll(disable)
	for (i = XDPLB_LBLCR_SET - 1; i > 0; i--)
		en->slot[i] = *(volatile __u32 *)&en->slot[i - 1];
	en->slot[0] = slot;
	en->n = en->n + 1;
	en->last_mod = now;
}

/* ip_vs_lblcr_schedule: the least loaded member of the packet's destination
 * address's set unless it is overloaded; then a wlc pick joins the set.
 * After XDPLB_LBLCR_EXPIRATION_NS without change a set of several loses its
 * most loaded member. */
static __always_inline __u32 sched_lblcr(const struct service *svc, const struct pkt *p, __u64 now)
{
	struct lblc_key k = {};
	struct sched_out *acc;
	struct lblc_ent *en;
	__u32 zero = 0, least, slot;
	struct dest *d;

	k.svc_slot = svc->slot;
	k.addr = p->key.daddr;
	en = lblc.lookup(&k);
	if (!en)
		return lblc_new(svc, &k, now);
	acc = sched_out.lookup(&zero);
	if (!acc)
		return 0;
	en->last_used = now;
	lblcr_set_scan(svc, en, acc);
	least = acc->least;
	if (en->n > 1 && now - en->last_mod > XDPLB_LBLCR_EXPIRATION_NS && acc->most)
		lblcr_set_erase(en, acc, now);
	if (least) {
		d = dests.lookup(&least);
		if (d && !lblc_overloaded(svc, least, d->weight))
			return least;
	}
	slot = sched_list(svc);
	if (slot)
		lblcr_set_insert(en, slot, now);
	return slot;
}

#endif /* XDPLB_SCHED_LBLC_H */
