/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched_list.h - lc, wlc, sed, nq, fo and ovf: a walk of the service's
 * destination list (svc_dests, kernel order) with the live counts.
 */
#ifndef XDPLB_SCHED_LIST_H
#define XDPLB_SCHED_LIST_H

#include "maps.h"

static __always_inline __s64 nonneg(__s64 v)
{
	return v < 0 ? 0 : v;
}

/* One walk of the destination list in kernel order, with the live counts;
 * ties keep the earlier destination. Every scheduler is one form, its
 * parameters in the service (so the verifier walks one loop, not one per
 * scheduler): skip overloaded destinations (and, for lc nq ovf, weight 0;
 * for ovf, active > weight), overhead = a * active + b * inactive + c, and
 * the first candidate with weight > 0 is replaced by a later one when
 * loh * weight > doh * lweight (lc compares with every weight = 1; fo and
 * ovf with every overhead = 1, which keeps the highest weight). The running
 * minimum lives in the per-CPU sched_out value, not in registers, for the
 * same reason (no per-path knowledge of it carried between iterations). */
static __always_inline __u32 sched_list(const struct service *svc)
{
	__u32 slot = svc->slot, zero = 0;
	struct svc_dests *l = svc_dests.lookup(&slot);
	struct sched_out *acc = sched_out.lookup(&zero);
	int i;

	if (!l || !acc)
		return 0;
	acc->least = 0;
	acc->lw = 0;
	acc->loh = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < XDPLB_LIST_MAX; i++) {
		struct dest_conns *dc;
		__u32 s = l->d[i].slot, w = l->d[i].weight, we;
		__u64 act, doh;
		/* re-read every iteration (volatile): a flag the verifier learnt
		 * in one iteration would split every later one in two */
		__u32 f = *(volatile __u8 *)&svc->list_flags;

		if (!s)
			break;
		dc = dest_conns.lookup(&s);
		if (!dc || dc->overload)
			continue;
		act = nonneg(dc->active);
		if (((f & XDPLB_LIST_F_SKIP_ZERO) && !w) ||
		    ((f & XDPLB_LIST_F_SKIP_OVER) && act > w))
			continue;
		if ((f & XDPLB_LIST_F_IDLE) && !act) {
			acc->least = s;
			break;
		}
		doh = *(volatile __u16 *)&svc->list_a * act +
		      *(volatile __u8 *)&svc->list_b * nonneg(dc->inactive) +
		      *(volatile __u8 *)&svc->list_c;
		we = (f & XDPLB_LIST_F_UNIT) ? 1 : w;
		if (acc->least ? acc->loh * we > doh * acc->lw : we > 0) {
			acc->least = s;
			acc->lw = we;
			acc->loh = doh;
		}
	}
	return acc->least;
}

#endif /* XDPLB_SCHED_LIST_H */
