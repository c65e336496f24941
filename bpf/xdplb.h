/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdplb.h - the one definition of every structure and constant shared by the
 * XDP data path and the Python control plane (xdplb/maps.py mirrors it; the
 * test suite fails if the mirror drifts).
 *
 * Addresses and ports are kept in network byte order, as on the wire.
 * Names follow IPVS (ip_vs.h) where IPVS has one.
 */
#ifndef XDPLB_H
#define XDPLB_H

#include <linux/types.h>

/* Map capacities; compile-time defaults, overridable with -D. */
#ifndef XDPLB_MAX_SERVICES
#define XDPLB_MAX_SERVICES	16384
#endif
#ifndef XDPLB_MAX_DESTS
#define XDPLB_MAX_DESTS		131072
#endif
#ifndef XDPLB_MAX_CONNS
#define XDPLB_MAX_CONNS		262144
#endif
#ifndef XDPLB_MAX_RING
#define XDPLB_MAX_RING		1048576
#endif
#define XDPLB_MAX_PORTS		256

/* Forwarding methods: IPVS's IP_VS_CONN_F_FWD_MASK values. */
#define IP_VS_CONN_F_MASQ	0
#define IP_VS_CONN_F_LOCALNODE	1
#define IP_VS_CONN_F_TUNNEL	2
#define IP_VS_CONN_F_DROUTE	3

/* Service flags: IPVS's IP_VS_SVC_F_* values. */
#define IP_VS_SVC_F_PERSISTENT	0x0001
#define IP_VS_SVC_F_HASHED	0x0002
#define IP_VS_SVC_F_ONEPACKET	0x0004
#define IP_VS_SVC_F_SCHED1	0x0008
#define IP_VS_SVC_F_SCHED2	0x0010
#define IP_VS_SVC_F_SCHED3	0x0020

/* Schedulers the data path runs. rr and wrr are both a precomputed ring of
 * destination slots (xdplb/sched.py reproduces the kernel's picks). */
#define XDPLB_SCHED_RR		1
#define XDPLB_SCHED_WRR		2

/* Destination flags. */
#define XDPLB_DEST_F_AVAILABLE	0x01

/* TCP connection states: IPVS's IP_VS_TCP_S_* values. */
#define IP_VS_TCP_S_NONE	0
#define IP_VS_TCP_S_ESTABLISHED	1
#define IP_VS_TCP_S_SYN_SENT	2
#define IP_VS_TCP_S_SYN_RECV	3
#define IP_VS_TCP_S_FIN_WAIT	4
#define IP_VS_TCP_S_TIME_WAIT	5
#define IP_VS_TCP_S_CLOSE	6
#define IP_VS_TCP_S_CLOSE_WAIT	7
#define IP_VS_TCP_S_LAST_ACK	8
#define IP_VS_TCP_S_LISTEN	9
#define IP_VS_TCP_S_SYNACK	10
#define IP_VS_TCP_S_LAST	11

/* Direction of a connection-table entry. */
#define XDPLB_DIR_IN		0	/* client -> virtual service */
#define XDPLB_DIR_OUT		1	/* real server -> client (Masq replies) */

/* Ring index bit selecting which generation of a service's schedule is live,
 * so a new schedule is written beside the old one and switched atomically. */
#define XDPLB_RING_GEN_BIT	0x80000000u

/* Global data-path counters (per-CPU array, indexed by these). Every frame
 * ends in exactly one of PASS..NO_ROUTE, so the program does not count RX:
 * its slot stays 0 and readers (xdplb/maps.py) report the sum of the others. */
enum xdplb_counter {
	XDPLB_CNT_RX = 0,	/* frames seen (derived, see above) */
	XDPLB_CNT_PASS,		/* not ours: passed untouched */
	XDPLB_CNT_FWD,		/* rewritten and redirected / sent */
	XDPLB_CNT_TO_STACK,	/* rewritten, neighbour unresolved: given to the kernel */
	XDPLB_CNT_NO_DEST,	/* new connection, no destination available: dropped */
	XDPLB_CNT_CONN_FULL,	/* connection entry could not be inserted: dropped */
	XDPLB_CNT_DEST_GONE,	/* tracked connection whose destination was removed: dropped */
	XDPLB_CNT_NO_ROUTE,	/* fib lookup failed: passed untouched */
	XDPLB_CNT_MAX,
};

/* services: HASH svc_key -> service */
struct svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct service {
	__u64 ring_base;	/* sched_pos value at which the live ring starts */
	__u32 slot;		/* index into svc_stats and sched_pos */
	__u32 seq;		/* creation order (the kernel's --nosort order) */
	__u32 flags;		/* IP_VS_SVC_F_* */
	__u32 timeout;		/* persistence timeout, seconds */
	__be32 netmask;
	__u32 ring_len;		/* schedule entries in the live generation */
	__u32 ring_prefix;	/* entries before the repeating cycle starts */
	__u32 ring_gen;		/* 0 or XDPLB_RING_GEN_BIT */
	__u32 sched_cl;		/* kernel scheduler state at ring_base: current */
	__s32 sched_cw;		/*   dest slot (0 = list head) and wrr weight */
	__u8 sched;		/* XDPLB_SCHED_* */
	__u8 pad[7];
};

/* dests: ARRAY slot -> dest (slot 0 is never used: 0 means "none") */
struct dest {
	__be32 addr;
	__be16 port;
	__u8 fwd;		/* IP_VS_CONN_F_* */
	__u8 flags;		/* XDPLB_DEST_F_* */
	__u32 svc_slot;
	__u32 seq;		/* insertion order: the kernel lists newest first */
	__u32 weight;
	__u32 u_threshold;
	__u32 l_threshold;
};

/* sched_ring: HASH ring_key -> dest slot */
struct ring_key {
	__u32 svc_slot;
	__u32 index;		/* ring_gen | position */
};

/* sched_pos: ARRAY svc slot -> number of connections scheduled so far.
 * A new connection takes n = pos++ - ring_base and uses ring entry n if
 * n < ring_prefix, else ring_prefix + (n - ring_prefix) % (ring_len - ring_prefix). */
struct sched_pos {
	__u64 pos;
};

/* conns: LRU_HASH conn_key -> conn. A Masq connection has two entries: the
 * client's tuple (DIR_IN) and the real server's reply tuple (DIR_OUT). */
struct conn_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct conn {
	__be32 addr;		/* IN: real server; OUT: virtual address */
	__be16 port;		/* IN: real-server port; OUT: virtual port */
	__u8 dir;		/* XDPLB_DIR_* */
	__u8 fwd;		/* IP_VS_CONN_F_* */
	__u32 dest_slot;
	__u32 svc_slot;
	__u32 ifindex;		/* cached egress; 0 = not resolved yet */
	__u8 smac[6];		/* cached egress source MAC */
	__u8 dmac[6];		/* cached next-hop MAC */
	__u8 state;		/* IN: IP_VS_TCP_S_*; OUT: the data path's copy of it */
	__u8 pad[3];
	__u64 last_seen;	/* bpf_ktime_get_coarse_ns() of the last packet, to ~0.27 s
				 * (IN: either direction; OUT: replies) */
};

/* svc_stats, dest_stats: PERCPU_ARRAY slot -> ip_vs_stats; bytes are L3 lengths */
struct ip_vs_stats {
	__u64 conns;
	__u64 inpkts;
	__u64 outpkts;
	__u64 inbytes;
	__u64 outbytes;
};

#endif /* XDPLB_H */
