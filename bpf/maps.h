/* SPDX-License-Identifier: GPL-2.0 */
/* maps.h - every map of the data path. Names are the pin names in the state
 * folder and the keys of xdplb/maps.py's MAPS table. */
#ifndef XDPLB_MAPS_H
#define XDPLB_MAPS_H

#include "xdplb.h"

BPF_TABLE("hash", struct svc_key, struct service, services, XDPLB_MAX_SERVICES);
BPF_TABLE("array", __u32, struct dest, dests, XDPLB_MAX_DESTS);
BPF_TABLE("hash", struct ring_key, __u32, sched_ring, XDPLB_MAX_RING);
BPF_TABLE("array", __u32, struct sched_pos, sched_pos, XDPLB_MAX_SERVICES);
BPF_TABLE("lru_hash", struct conn_key, struct conn, conns, XDPLB_MAX_CONNS);
BPF_TABLE("percpu_array", __u32, struct ip_vs_stats, svc_stats, XDPLB_MAX_SERVICES);
BPF_TABLE("percpu_array", __u32, struct ip_vs_stats, dest_stats, XDPLB_MAX_DESTS);
BPF_TABLE("percpu_array", __u32, __u64, counters, XDPLB_CNT_MAX);
/* Egress ports for bpf_redirect_map, keyed by ifindex (filled by `xdplb attach`). */
BPF_DEVMAP(tx_ports, XDPLB_MAX_PORTS * 16);

#endif /* XDPLB_MAPS_H */
