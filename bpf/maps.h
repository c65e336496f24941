/* SPDX-License-Identifier: GPL-2.0 */
/* maps.h - every map of the data path. Names are the pin names in the state
 * folder and the keys of xdplb/maps.py's MAPS table (all but egress_cache,
 * clock, sched_out, icmp_job and icmp_bucket, which are private to the
 * program). */
#ifndef XDPLB_MAPS_H
#define XDPLB_MAPS_H

#include "xdplb.h"

/* conns: common LRU unless overridden (-DXDPLB_CONNS_FLAGS=BPF_F_NO_COMMON_LRU
 * splits the table per CPU: cheaper inserts, but a CPU only evicts its own
 * share, so the table holds XDPLB_MAX_CONNS / ncpus flows of one CPU). */
#ifndef XDPLB_CONNS_FLAGS
#define XDPLB_CONNS_FLAGS	0
#endif

/* Egress towards a destination (the FIB's answer for its address), cached
 * per CPU: every packet from a client to a destination is sent by it, so
 * neither a new connection nor an entry needs a bpf_fib_lookup of its own.
 * Direct mapped by dest slot; the tag fields say whether an entry still
 * applies (a second's TTL follows route and neighbour changes). */
#define XDPLB_EGRESS_SLOTS	4096		/* power of two */
#ifndef XDPLB_EGRESS_TTL_NS	/* a build-time tunable: no map depends on it */
#define XDPLB_EGRESS_TTL_NS	1000000000ULL	/* re-ask the FIB after 1 s */
#endif

struct egress {
	__u64 stamp;		/* bpf_ktime_get_coarse_ns() of the FIB answer */
	__u32 dest_slot;	/* tag: the slot ... */
	__be32 addr;		/* ... with this address ... */
	__u32 ingress;		/* ... for frames arriving here */
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
	__u16 mtu;		/* the FIB's MTU of the route (icmp.h checks it) */
	__u8 pad[2];
};

/* The coarse clock, read once per jiffy per CPU (now_ns() in clock.h). */
struct clock {
	__u64 jiffies;
	__u64 ns;
};

BPF_TABLE("hash", struct svc_key, struct service, services, XDPLB_MAX_SERVICES);
BPF_TABLE("array", __u32, struct dest, dests, XDPLB_MAX_DESTS);
BPF_TABLE("hash", struct ring_key, __u32, sched_ring, XDPLB_MAX_RING);
BPF_TABLE("array", __u32, struct sched_pos, sched_pos, XDPLB_MAX_SERVICES);
/* Full-NAT and hairpin (xdplb.h): each service's local addresses, and the
 * reply tuples lent to connections. */
BPF_TABLE("array", __u32, struct laddr_set, laddrs, XDPLB_MAX_SERVICES);
BPF_F_TABLE("hash", struct conn_key, struct conn_key, fnat_out, XDPLB_MAX_FNAT, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct conn_key6, struct conn_key6, fnat_out6, XDPLB_MAX_FNAT6,
	    BPF_F_NO_PREALLOC);
BPF_F_TABLE("lru_hash", struct conn_key, struct conn, conns, XDPLB_MAX_CONNS, XDPLB_CONNS_FLAGS);
BPF_TABLE("hash", struct conn_key, struct conn, conns_assured, XDPLB_MAX_ASSURED);
/* Allocated as real servers are added: an entry is 264 bytes. */
BPF_F_TABLE("hash", struct rs_key, struct rs_svcs, rs_table, XDPLB_MAX_RS, BPF_F_NO_PREALLOC);
BPF_TABLE("array", __u32, __u64, rs_filter, XDPLB_RS_FILTER_WORDS);
/* IPv6's own tables (xdplb.h), sized apart: an IPv6 entry is larger. */
BPF_TABLE("hash", struct svc_key6, struct service, services6, XDPLB_MAX_SERVICES6);
BPF_F_TABLE("lru_hash", struct conn_key6, struct conn6, conns6, XDPLB_MAX_CONNS6,
	    XDPLB_CONNS_FLAGS);
BPF_TABLE("hash", struct conn_key6, struct conn6, conns6_assured, XDPLB_MAX_ASSURED6);
BPF_F_TABLE("hash", struct rs_key6, struct rs_svcs6, rs_table6, XDPLB_MAX_RS, BPF_F_NO_PREALLOC);
BPF_TABLE("percpu_array", __u32, struct ip_vs_stats, svc_stats, XDPLB_MAX_SERVICES);
BPF_TABLE("percpu_array", __u32, struct ip_vs_stats, dest_stats, XDPLB_MAX_DESTS);
BPF_TABLE("percpu_array", __u32, __u64, counters, XDPLB_CNT_MAX);
BPF_TABLE("array", __u32, struct dest_conns, dest_conns, XDPLB_MAX_DESTS);
BPF_TABLE("array", __u32, struct svc_dests, svc_dests, XDPLB_MAX_SERVICES);
BPF_TABLE("array", __u32, __u32, timeouts, XDPLB_TMO_MAX);
BPF_TABLE("array", __u32, __be32, tun_src, XDPLB_TUN_SRC_SLOTS);
BPF_TABLE("array", __u32, struct tun_src6, tun_src6, XDPLB_TUN_SRC_SLOTS);
BPF_TABLE("array", __u32, __u32, sysctl, XDPLB_SYSCTL_MAX);
BPF_TABLE("array", __u32, struct alloc, alloc, 1);
BPF_TABLE("array", __u32, __u32, layout, 1);
BPF_TABLE("lru_hash", struct lblc_key, struct lblc_ent, lblc, XDPLB_MAX_LBLC);
BPF_TABLE("lru_hash", struct frag_key, struct frag_rec, frags, XDPLB_MAX_FRAGS);
BPF_TABLE("percpu_array", __u32, struct egress, egress_cache, XDPLB_EGRESS_SLOTS);
BPF_TABLE("percpu_array", __u32, struct clock, clock, 1);
/* New connections continue in a program of their scheduler's family
 * (xdplb.h): each is verified on its own, so the verifier's budget is not
 * shared by every scheduler's loops. Filled and pinned (as "new_conn") by
 * xdplb/loader.py. */
BPF_PROG_ARRAY(new_conn, XDPLB_PROG_MAX);
/* A new connection's hand-over between its programs (same CPU, one frame):
 * xdplb_main leaves the service it found, the scheduler program its pick,
 * so neither tail-called program looks the service up again. The pick is
 * built in a program of its own (new_conn[XDPLB_PROG_CONN]) so that a
 * scheduler loop's many exit states never reach the connection-building
 * code. */
struct sched_out {
	struct service svc;	/* a copy: the data path never writes a service */
	__be16 svc_port;	/* the service's port (0: a port-zero service) */
	__u8 new_template;	/* persistent, no live template: xdplb_conn makes one
				 * (persist_new), out of the scheduler's program */
	__u8 pad;
	__u32 dest_slot;
	__u64 least, lw, loh;	/* sched_list()'s running minimum */
	__u64 most, mw, moh, mi;	/* lblcr: ip_vs_dest_set_max's running maximum */
};
BPF_TABLE("percpu_array", __u32, struct sched_out, sched_out, 1);
/* A Tunnel connection's packet, handed to new_conn[XDPLB_PROG_TUNNEL] (same
 * CPU, one frame), which encapsulates it: its destination. */
struct tun_out {
	__u32 dest_slot;
	__be32 addr;
	__be16 port;
	__u16 pad;
};
BPF_TABLE("percpu_array", __u32, struct tun_out, tun_out, 1);

/* ICMP answers and path MTU (icmp.h): what xdplb_icmp is to do with the
 * TCP/UDP frame handed to it by tail call (same CPU, one frame), and the
 * rate limit's buckets, one per CPU and kind of answer (XDPLB_ICMP_RATE,
 * XDPLB_ICMP_BURST in xdplb.h). */
#define XDPLB_ICMP_JOB_PORT_UNREACH	0	/* no destination: answer it */
#define XDPLB_ICMP_JOB_TOO_BIG_IN	1	/* a client's packet over the MTU */
#define XDPLB_ICMP_JOB_TOO_BIG_OUT	2	/* a Masq reply over the MTU */

#define XDPLB_ICMP_KIND_FRAG_NEEDED	0
#define XDPLB_ICMP_KIND_PORT_UNREACH	1
#define XDPLB_ICMP_KINDS		2

struct icmp_job {
	__u8 job;		/* XDPLB_ICMP_JOB_* */
	__u8 fwd;		/* TOO_BIG_IN: the connection's IP_VS_CONN_F_* */
	__be16 port;		/* TOO_BIG_IN: the real server's address and port; */
	__be32 addr;		/* TOO_BIG_OUT: the virtual service's */
	__u32 mtu;		/* TOO_BIG_IN: the egress MTU */
};

struct icmp_bucket {
	__u64 stamp;		/* now_ns() up to which tokens were added */
	__u64 tokens;
};
BPF_TABLE("percpu_array", __u32, struct icmp_job, icmp_job, 1);
BPF_TABLE("percpu_array", __u32, struct icmp_bucket, icmp_bucket, XDPLB_ICMP_KINDS);
/* Egress ports for bpf_redirect_map, keyed by ifindex (filled by `xdplb attach`). */
BPF_DEVMAP(tx_ports, XDPLB_MAX_PORTS * 16);

#endif /* XDPLB_MAPS_H */
