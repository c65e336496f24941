/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched.h - the schedulers, by family: one tail-called program per family
 * (bpf/xdplb.c; xdplb/loader.py's NEW_CONN_PROGS says which scheduler runs
 * in which), each compiled with only its own family's code.
 */
#ifndef XDPLB_SCHED_H
#define XDPLB_SCHED_H

#include "parse.h"
#include "sched_hash.h"
#include "sched_lblc.h"
#include "sched_list.h"
#include "sched_ring.h"

#define XDPLB_FAM_RING	0	/* rr wrr */
#define XDPLB_FAM_LIST	1	/* lc wlc sed nq fo ovf */
#define XDPLB_FAM_SH	2
#define XDPLB_FAM_DH	3
#define XDPLB_FAM_MH	4
#define XDPLB_FAM_LBLC	5
#define XDPLB_FAM_LBLCR	6

/* The destination slot the service's scheduler picks, 0 for none (fam is a
 * constant: each program keeps only its own scheduler). A hash scheduler
 * picks none while its service has no table (ring_len 0). */
static __always_inline __u32 sched_pick(const struct service *svc, const struct pkt *p, __u64 now,
					int fam)
{
	switch (fam) {
	case XDPLB_FAM_RING:
		return sched_ring_pick(svc);
	case XDPLB_FAM_SH:
		return svc->ring_len ? sched_hash(svc, p, 0) : 0;
	case XDPLB_FAM_DH:
		return svc->ring_len ? sched_dh(svc, p) : 0;
	case XDPLB_FAM_MH:
		return svc->ring_len ? sched_hash(svc, p, 1) : 0;
	case XDPLB_FAM_LBLC:
		return sched_lblc(svc, p, now);
	case XDPLB_FAM_LBLCR:
		return sched_lblcr(svc, p, now);
	default:
		return sched_list(svc);
	}
}

#endif /* XDPLB_SCHED_H */
