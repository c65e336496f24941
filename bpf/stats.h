/* SPDX-License-Identifier: GPL-2.0 */
/*
 * stats.h - what the data path counts: the verdict of every frame (the
 * global counters map) and IPVS's per-service and per-destination stats.
 */
#ifndef XDPLB_STATS_H
#define XDPLB_STATS_H

#include "maps.h"

static __always_inline void count(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += 1;
}

/* A frame's verdict: its XDP action and the counter that says why (one of
 * XDPLB_CNT_* but RX and the events). The data path's functions return
 * verdicts; every program ends in record_verdict(), the one place a verdict
 * is counted (as xdp-tutorial's xdp_stats_record_action), so each frame is
 * counted exactly once and RX is the verdicts' sum. */
#define VERDICT(action, cnt)	((__u32)(cnt) << 8 | (action))

static __always_inline int record_verdict(__u32 verdict)
{
	count(verdict >> 8);
	return verdict & 0xff;
}

/* Not ours: the stack gets the frame untouched. */
static __always_inline __u32 pass(void)
{
	return VERDICT(XDP_PASS, XDPLB_CNT_PASS);
}

static __always_inline __u32 drop(__u32 reason)
{
	return VERDICT(XDP_DROP, reason);
}

static __always_inline void stats_bump(struct ip_vs_stats *s, int out, __u32 pkts, __u16 bytes)
{
	if (!s)
		return;
	if (out) {
		s->outpkts += pkts;
		s->outbytes += bytes;
	} else {
		s->inpkts += pkts;
		s->inbytes += bytes;
	}
}

/* pkts packets of bytes bytes in a service's and a destination's stats (a
 * later fragment is bytes of its datagram's one packet: frag.h). */
static __always_inline void stats_count(__u32 svc_slot, __u32 dest_slot, int out, __u32 pkts,
					__u16 bytes)
{
	stats_bump(svc_stats.lookup(&svc_slot), out, pkts, bytes);
	stats_bump(dest_stats.lookup(&dest_slot), out, pkts, bytes);
}

/* ip_vs_in_stats() / ip_vs_out_stats(): the service and the destination. */
static __always_inline void stats_add(const struct conn *c, int out, __u16 bytes)
{
	stats_count(c->svc_slot, c->dest_slot, out, 1, bytes);
}

/* ip_vs_conn_stats(): one more connection scheduled. */
static __always_inline void stats_conn(__u32 svc_slot, __u32 dest_slot)
{
	struct ip_vs_stats *s;

	s = svc_stats.lookup(&svc_slot);
	if (s)
		s->conns++;
	s = dest_stats.lookup(&dest_slot);
	if (s)
		s->conns++;
}

#endif /* XDPLB_STATS_H */
