/* SPDX-License-Identifier: GPL-2.0 */
/*
 * clock.h - the data path's time: bpf_ktime_get_coarse_ns(), read once per
 * jiffy, and the grain at which entries note the time of their last packet.
 */
#ifndef XDPLB_CLOCK_H
#define XDPLB_CLOCK_H

#include "maps.h"

/* bpf_ktime_get_coarse_ns(), which only moves on a tick, costs ~13 ns a
 * call here; bpf_jiffies64() is inlined by the verifier to one load. So the
 * coarse time is read once per jiffy per CPU and kept in a per-CPU cache. */
static __always_inline __u64 now_ns(void)
{
	__u64 j = bpf_jiffies64();
	__u32 zero = 0;
	struct clock *clk = clock.lookup(&zero);

	if (!clk)
		return bpf_ktime_get_coarse_ns();
	if (clk->jiffies != j) {
		clk->ns = bpf_ktime_get_coarse_ns();
		clk->jiffies = j;
	}
	return clk->ns;
}

/* last_seen is rewritten only once it is this much behind (~268 ms): an
 * established flow then dirties its entries' cache lines about four times a
 * second instead of on every packet. Listings show seconds. */
#define XDPLB_LAST_SEEN_GRAIN_NS	(1ULL << 28)

static __always_inline int stale(__u64 last_seen, __u64 now)
{
	/* signed: another CPU's clock cache may be a tick ahead */
	return (__s64)(now - last_seen) >= (__s64)XDPLB_LAST_SEEN_GRAIN_NS;
}

#endif /* XDPLB_CLOCK_H */
