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
/* Assured connections (conns_assured): never evicted, only expired. */
#ifndef XDPLB_MAX_ASSURED
#define XDPLB_MAX_ASSURED	262144
#endif
#ifndef XDPLB_MAX_RING
#define XDPLB_MAX_RING		1048576
#endif
/* IPv6 (services6, conns6, conns6_assured): an IPv6 connection entry is
 * 40 bytes of key and 88 of value. */
#ifndef XDPLB_MAX_SERVICES6
#define XDPLB_MAX_SERVICES6	4096
#endif
#ifndef XDPLB_MAX_CONNS6
#define XDPLB_MAX_CONNS6	65536
#endif
#ifndef XDPLB_MAX_ASSURED6
#define XDPLB_MAX_ASSURED6	65536
#endif
#define XDPLB_MAX_PORTS		256
/* Destinations a list-walking scheduler (lc wlc sed nq fo ovf lblc lblcr)
 * considers per service: the control plane refuses more. */
#define XDPLB_LIST_MAX		64
/* Persistence / lblc entries (LRU). */
#ifndef XDPLB_MAX_LBLC
#define XDPLB_MAX_LBLC		65536
#endif

/* Forwarding methods: IPVS's IP_VS_CONN_F_FWD_MASK values. */
#define IP_VS_CONN_F_MASQ	0
#define IP_VS_CONN_F_LOCALNODE	1
#define IP_VS_CONN_F_TUNNEL	2
#define IP_VS_CONN_F_DROUTE	3
/* Full-NAT: IPVS has no such method (its 4 is IP_VS_CONN_F_BYPASS); the
 * value is xdplb's, the method DPVS's FNAT: the client's packets leave with
 * the source rewritten to a local address of the service (laddrs) and a
 * port chosen so that the reply's tuple is unique, the replies are fully
 * un-NATed. */
#define XDPLB_CONN_F_FULLNAT	5

/* Tunnel types and encapsulation flags of a Tunnel destination: IPVS's
 * IP_VS_CONN_F_TUNNEL_TYPE_* and IP_VS_TUNNEL_ENCAP_FLAG_* values. The data
 * path encapsulates ipip and gue (with or without the outer UDP checksum;
 * remcsum as csum, see encap.h); the control plane refuses gre. */
#define IP_VS_CONN_F_TUNNEL_TYPE_IPIP	0
#define IP_VS_CONN_F_TUNNEL_TYPE_GUE	1
#define IP_VS_CONN_F_TUNNEL_TYPE_GRE	2
#define IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM	0
#define IP_VS_TUNNEL_ENCAP_FLAG_CSUM	(1 << 0)
#define IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM	(1 << 1)

/* Service flags: IPVS's IP_VS_SVC_F_* values. */
#define IP_VS_SVC_F_PERSISTENT	0x0001
#define IP_VS_SVC_F_HASHED	0x0002
#define IP_VS_SVC_F_ONEPACKET	0x0004
#define IP_VS_SVC_F_SCHED1	0x0008
#define IP_VS_SVC_F_SCHED2	0x0010
#define IP_VS_SVC_F_SCHED3	0x0020
/* xdplb's own service flag, above IPVS's: --hairpin. A connection whose
 * client is on the real servers' side (its replies would not come back
 * through the balancer) is source-NATed to a balancer address. */
#define XDPLB_SVC_F_HAIRPIN	0x00010000

/* Schedulers the data path runs. rr and wrr are both a precomputed ring of
 * destination slots (xdplb/sched.py reproduces the kernel's picks). */
#define XDPLB_SCHED_RR		1
#define XDPLB_SCHED_WRR		2
/* Walk the service's destination list (svc_dests) with live counts. */
#define XDPLB_SCHED_LC		3
#define XDPLB_SCHED_WLC		4
#define XDPLB_SCHED_SED		5
#define XDPLB_SCHED_NQ		6
#define XDPLB_SCHED_FO		7
#define XDPLB_SCHED_OVF		8
/* Hash a packet address into a table the control plane fills (sched_ring). */
#define XDPLB_SCHED_SH		9
#define XDPLB_SCHED_DH		10
#define XDPLB_SCHED_MH		11
/* Locality: a per-destination-address cache (lblc map) over wlc. */
#define XDPLB_SCHED_LBLC	12
#define XDPLB_SCHED_LBLCR	13

#define XDPLB_SH_TAB_SIZE	256	/* 1 << CONFIG_IP_VS_SH_TAB_BITS */
#define XDPLB_DH_TAB_SIZE	256	/* 1 << CONFIG_IP_VS_DH_TAB_BITS */
#define XDPLB_MH_TAB_SIZE	4093	/* primes[CONFIG_IP_VS_MH_TAB_INDEX - 8] */
#define XDPLB_MH_FALLBACK_PROBES 256	/* mh-fallback probes (kernel: the whole table) */

/* Address families, numbered as the kernel numbers them (IPVS's af). The
 * data path's IPv6 programs are the IPv4 ones compiled with af AF_INET6
 * (a constant each program folds): IPv6 keeps tables of its own
 * (services6, conns6, conns6_assured, rs_table6), so an IPv4 connection's
 * entry stays the size it is. */
#define XDPLB_AF_INET		2
#define XDPLB_AF_INET6		10

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

/* Kind of a connection-table entry (1 was the Masq reply entry of layout 2:
 * replies now find their connection through rs_table). */
#define XDPLB_DIR_IN		0	/* a connection, keyed by the client's tuple */
#define XDPLB_DIR_TEMPLATE	2	/* persistence template (the kernel's
					 * IP_VS_CONN_F_TEMPLATE): key <proto, client
					 * net, 0, vaddr, vport or 0> */

/* timeouts: ARRAY index -> seconds; 0 = IPVS's default for that index.
 * Indexes 0..10 are the TCP states, XDPLB_TMO_UDP the UDP timeout. */
#define XDPLB_TMO_UDP		11
#define XDPLB_TMO_MAX		16

/* sysctl: ARRAY index -> value of one of IPVS's net.ipv4.vs.* settings the
 * data path follows (`xdplb set NAME VALUE`; 0 or 1 each):
 * - conn_reuse_mode: a SYN on a TIME_WAIT / CLOSE entry makes a new
 *   connection; the kernel's default 1 is written when a state is created
 *   (a state whose maps were written by hand has it 0);
 * - expire_nodest_conn: a packet of a connection whose destination is gone
 *   ends the connection and is then handled as untracked (a SYN makes a
 *   new one, anything else reaches the stack, which resets it), instead of
 *   being dropped while the entry idles out;
 * - expire_quiescent_template: a persistence template whose destination has
 *   weight 0 is expired, so the client is scheduled again;
 * - sloppy_tcp: any TCP packet but a RST of an untracked flow to a service
 *   is scheduled as a new connection, not only a SYN (a standby that takes
 *   over a balancer's traffic picks up its connections: with sh or mh and
 *   the same configuration, to the same real servers). */
#define XDPLB_SYSCTL_CONN_REUSE_MODE		0
#define XDPLB_SYSCTL_EXPIRE_NODEST_CONN		1
#define XDPLB_SYSCTL_EXPIRE_QUIESCENT_TEMPLATE	2
#define XDPLB_SYSCTL_SLOPPY_TCP			3
#define XDPLB_SYSCTL_MAX			8

/* The layout of the pinned maps (their set, keys and values): written into
 * the layout map when a state is created and checked by every process that
 * opens one, so a state pinned by another version of xdplb is refused
 * instead of misread. Bump it with any change to a pinned map. */
#define XDPLB_LAYOUT_VERSION	8

/* Ring index bit selecting which generation of a service's schedule is live,
 * so a new schedule is written beside the old one and switched atomically. */
#define XDPLB_RING_GEN_BIT	0x80000000u

/* Global data-path counters (per-CPU array, indexed by these). Every frame
 * ends in exactly one verdict, every counter but RX and the events
 * (ASSURE_FULL, ICMP_XLATE, ICMP_LIMITED; bpf/stats.h counts it), so the
 * program does not count RX: its slot stays 0 and readers (xdplb/maps.py)
 * report the sum of the verdicts. */
enum xdplb_counter {
	XDPLB_CNT_RX = 0,	/* frames seen (derived, see above) */
	XDPLB_CNT_PASS,		/* not ours: passed untouched */
	XDPLB_CNT_FWD,		/* rewritten and redirected / sent */
	XDPLB_CNT_TO_STACK,	/* rewritten, neighbour unresolved: given to the kernel */
	XDPLB_CNT_NO_DEST,	/* new connection, no destination available: answered
				 * with ICMP port unreachable out of the ingress, as
				 * IPVS does; dropped unanswered when ICMP_LIMITED */
	XDPLB_CNT_CONN_FULL,	/* connection entry could not be inserted: dropped */
	XDPLB_CNT_DEST_GONE,	/* tracked connection whose destination was removed: dropped */
	XDPLB_CNT_NO_ROUTE,	/* fib lookup failed: passed untouched */
	XDPLB_CNT_TAIL_CALL,	/* a frame whose new_conn program is missing: dropped */
	/* Not a verdict: an attempt to assure a connection found conns_assured
	 * full, so it stays in the LRU, where a flood of new connections can
	 * evict it (tried again at each state change and last_seen refresh). */
	XDPLB_CNT_ASSURE_FULL,
	XDPLB_CNT_FRAG_UNTRACKED,	/* later fragment (IPv4 or IPv6) with no record of its
					 * first fragment (not seen yet, lost, not ours, or
					 * dropped or passed untouched): passed untouched */
	XDPLB_CNT_FRAG_OVERLAP,	/* later fragment overlapping the first fragment's L4
				 * header, which chose the destination: dropped */
	/* Tunnel: the encapsulated packet would exceed the egress device's MTU
	 * (or there was no headroom to encapsulate in): passed untouched. */
	XDPLB_CNT_TUN_TOO_BIG,
	/* Tunnel: no outer source address for the egress interface (tun_src,
	 * written by `xdplb attach`): passed untouched. */
	XDPLB_CNT_TUN_NO_SRC,
	XDPLB_CNT_FRAG_NEEDED,	/* a client's packet with DF set (IPv6: any), larger
				 * than the egress MTU: answered with ICMP fragmentation
				 * needed (ICMPv6 packet too big) out of the ingress;
				 * dropped unanswered when ICMP_LIMITED */
	XDPLB_CNT_TOO_BIG,	/* larger than the egress MTU, given to the stack: it
				 * fragments (no DF, Masq rewritten) or, for a Masq
				 * reply with DF or over IPv6, answers fragmentation
				 * needed (packet too big) itself;
				 * Route without DF: dropped (bpf/icmp.h) */
	/* Not verdicts: an ICMP error about a tracked connection was translated
	 * (or, for Route, forwarded) to its real server or client; an ICMP
	 * answer (FRAG_NEEDED, NO_DEST) was not sent, over the rate limit. */
	XDPLB_CNT_ICMP_XLATE,
	XDPLB_CNT_ICMP_LIMITED,
	/* A new full-NAT (or hairpin) connection found no free local address
	 * and port in XDPLB_FNAT_PROBES tries (or no local address at all, or
	 * fnat_out full): its first packet is dropped. */
	XDPLB_CNT_FNAT_NO_PORT,
	XDPLB_CNT_MAX,
};

/* ICMP answers of the data path (fragmentation needed, port unreachable)
 * are rate-limited per CPU and per kind by a token bucket: the kernel's own
 * global ICMP budget (net.ipv4.icmp_msgs_per_sec, icmp_msgs_burst). */
#define XDPLB_ICMP_RATE		1000	/* tokens per second */
#define XDPLB_ICMP_BURST	50	/* bucket size */

/* new_conn: PROG_ARRAY. A new connection continues by tail call in the
 * program of its scheduler's family (index XDPLB_SCHED_*), which hands its
 * pick to the program at XDPLB_PROG_CONN that builds the connection. A
 * Tunnel connection's packet is encapsulated in the program at
 * XDPLB_PROG_TUNNEL.
 * xdplb/loader.py fills it (NEW_CONN_PROGS). */
#define XDPLB_PROG_TUNNEL	14	/* a Tunnel connection's packet: encapsulate */
#define XDPLB_PROG_ICMP		17	/* xdplb_icmp: ICMP errors and answers (icmp.h) */
#define XDPLB_PROG_CONN		15
/* IPv4 fragments continue (from xdplb_main, by tail call) in the program
 * at XDPLB_PROG_FRAG (bpf/frag.h), so whole packets pay one branch for them;
 * IPv6 fragments (from xdplb_main6) in the one at XDPLB_PROG_FRAG6. */
#define XDPLB_PROG_FRAG		16
/* IPv6 frames continue (from xdplb_main) in xdplb_main6; an IPv6 new
 * connection in the program at XDPLB_PROG_SCHED6 + its scheduler
 * (XDPLB_SCHED_*), then in the one at XDPLB_PROG_CONN6. */
#define XDPLB_PROG_MAIN6	18
#define XDPLB_PROG_CONN6	19
#define XDPLB_PROG_ICMP6	20	/* xdplb_icmp6: ICMPv6 errors and answers */
#define XDPLB_PROG_TUNNEL6	21	/* an IPv6 Tunnel connection's packet */
#define XDPLB_PROG_FRAG6	22
/* A whole IPv6 packet to xdplb_main6 that may be a real server's reply
 * (rs_filter) continues in the program at XDPLB_PROG_REPLY6, which
 * un-NATs it, or else hands it to the one at XDPLB_PROG_CLIENT6 as a
 * client's: in one program with the client's path, the IPv6 reply lookups
 * (rs_table6's walk, fnat_out6) are more than the verifier's million
 * instructions. */
#define XDPLB_PROG_REPLY6	23
#define XDPLB_PROG_CLIENT6	24
#define XDPLB_PROG_SCHED6	32
#define XDPLB_PROG_MAX		48	/* room for more */

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
	__be32 netmask;		/* persistence: IPv4 mask; IPv6: the prefix length
				 * 1..128, in host order */
	__u32 ring_len;		/* schedule entries in the live generation */
	__u32 ring_prefix;	/* entries before the repeating cycle starts */
	__u32 ring_gen;		/* 0 or XDPLB_RING_GEN_BIT */
	__u32 sched_cl;		/* kernel scheduler state at ring_base: current */
	__s32 sched_cw;		/*   dest slot (0 = list head) and wrr weight */
	__u8 sched;		/* XDPLB_SCHED_* */
	/* List-walking schedulers, as one form (sched_list() in sched_list.h):
	 * overhead = list_a * active + list_b * inactive + list_c, and
	 * XDPLB_LIST_F_* below. Written by the control plane per scheduler
	 * (xdplb/sched.py LIST_PARAMS) so the verifier sees one loop. */
	__u8 list_flags;
	__u8 list_b;
	__u8 list_c;
	__u16 list_a;
	__u8 pad[2];
};

#define XDPLB_LIST_F_SKIP_ZERO	0x01	/* skip weight 0 (lc nq ovf) */
#define XDPLB_LIST_F_SKIP_OVER	0x02	/* skip active > weight (ovf) */
#define XDPLB_LIST_F_UNIT	0x04	/* compare as if every weight were 1 (lc) */
#define XDPLB_LIST_F_IDLE	0x08	/* take the first with no active conn (nq) */

/* dests: ARRAY slot -> dest (slot 0 is never used: 0 means "none") */
struct dest {
	__be32 addr;
	__be16 port;
	__u8 fwd;		/* IP_VS_CONN_F_* */
	__u8 flags;		/* XDPLB_DEST_F_* */
	__u32 svc_slot;
	__u32 seq;		/* insertion order (never reused: the kernel lists newest
				 * first; connections remember it) */
	__u32 weight;
	__u32 u_threshold;
	__u32 l_threshold;
	__u32 last_weight;	/* latest non-zero weight (mh's table uses it) */
	__u32 next;		/* the next (older) destination of the same service, 0
				 * at the end: from svc_dests' d[0], the service's whole
				 * list in kernel order (control plane only) */
	__be16 tun_port;	/* Tunnel, gue: the outer UDP destination port */
	__u8 tun_type;		/* Tunnel: IP_VS_CONN_F_TUNNEL_TYPE_* */
	__u8 tun_flags;		/* Tunnel: IP_VS_TUNNEL_ENCAP_FLAG_* */
	__be32 addr6[4];	/* an IPv6 destination's address (addr is then the
				 * XOR of its words: addr_fold in hash.h) */
	__u8 af;		/* XDPLB_AF_*: the destination's family */
	__u8 pad[3];
};

/* dest_conns: ARRAY (shared, not per CPU) slot -> live connection counts of
 * a destination, moved with atomic adds by the data path on bind, state
 * change and expiry, and reconciled with the connection table by the
 * control plane's sweep (LRU evictions, sweep deletions). */
struct dest_conns {
	__s64 active;		/* activeconns (64-bit: bcc's BPF target has 64-bit atomics only) */
	__s64 inactive;		/* inactconns */
	__s64 persist;		/* persistconns (templates) */
	__u64 overload;		/* IP_VS_DEST_F_OVERLOAD (thresholds) */
};

/* svc_dests: ARRAY svc slot -> the destination list in kernel order (newest
 * first) with weights, for the list-walking schedulers. */
struct svc_dest_ent {
	__u32 slot;
	__u32 weight;
};

struct svc_dests {
	__u32 n;		/* entries used; d[n].slot (if n < XDPLB_LIST_MAX) is 0 */
	__u32 pad;
	struct svc_dest_ent d[XDPLB_LIST_MAX];
};

/* alloc: ARRAY, one entry: the control plane's bookkeeping of the dests
 * and sched_ring tables, so that a change reads only the service it
 * changes (the data path never reads it). */
struct alloc {
	__u32 dest_seq;		/* the last destination seq handed out (never reused,
				 * even after -C) */
	__u32 dest_top;		/* the highest dests slot allocated since the last -C:
				 * every slot above it is free */
	__u32 dest_free;	/* every dests slot below this one is in use */
	__u32 ring_used;	/* sched_ring entries the services' live schedules
				 * hold: the sum of their ring_len */
};

/* lblc: LRU_HASH lblc_key -> lblc_ent: lblc's per-destination-address cache
 * entry (one destination) or lblcr's server set (up to XDPLB_LBLCR_SET,
 * newest first as ip_vs_dest_set_insert adds at the head). */
#define XDPLB_LBLCR_SET		8
#define XDPLB_LBLCR_EXPIRATION_NS (24ULL * 3600 * 1000000000ULL)

struct lblc_key {
	__u32 svc_slot;
	__be32 addr;
};

struct lblc_ent {
	__u32 n;		/* members in slot[] (lblc: 1) */
	__u32 pad;
	__u32 slot[XDPLB_LBLCR_SET];
	__u64 last_used;
	__u64 last_mod;		/* lblcr: set.lastmod */
};

/* rs_table: HASH rs_key -> rs_svcs: IPVS's ip_vs_rs_table, for masquerading
 * destinations only. A reply (real server -> client) carries the real
 * server's address and port but not the virtual service's, which key the
 * connection's one entry: rs_table gives the services the real server
 * addr:port serves (a port-zero destination is under port 0), and the reply
 * tries each, newest first. Filled by the control plane, which refuses a
 * masquerading addr:port in more than XDPLB_RS_SVC_MAX services; a service
 * stays while connections of a removed destination live (the sweep prunes
 * it), so their replies are still un-NATed, as IPVS's are. */
#define XDPLB_RS_SVC_MAX	32
#ifndef XDPLB_MAX_RS
#define XDPLB_MAX_RS		XDPLB_MAX_DESTS
#endif

struct rs_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct rs_svcs {
	__u32 n;		/* entries used in svc[] */
	__u32 pad;
	struct svc_key svc[XDPLB_RS_SVC_MAX];
};

/* rs_table6: HASH rs_key6 -> rs_svcs6: the same for IPv6 real servers. */
struct svc_key6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct rs_key6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct rs_svcs6 {
	__u32 n;
	__u32 pad;
	struct svc_key6 svc[XDPLB_RS_SVC_MAX];
};

/* rs_filter: ARRAY word -> 64 bits: bit xdplb_rs_bit(addr) is set when a
 * masquerading destination has address addr (IPv6: the XOR of its
 * words, addr_fold in hash.h), so a frame from a client
 * (nearly every frame, whose bit is clear) skips the rs_table lookup. Bits
 * are set before their rs_table entry is written and cleared by the
 * control plane's sweep once no entry has the address: a stale bit costs a
 * lookup, never a wrong answer. */
#define XDPLB_RS_FILTER_BITS	16	/* 65,536 bits: 8 KiB */
#define XDPLB_RS_FILTER_WORDS	(1 << (XDPLB_RS_FILTER_BITS - 6))

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

/* conns: LRU_HASH conn_key -> conn: new connections and templates.
 * conns_assured: HASH, same key and value: connections that proved to be
 * real (TCP: ESTABLISHED; UDP: still sending after a last_seen grain), moved
 * there from conns so that a flood of new connections, which recycles the
 * LRU, cannot evict them (conntrack's IPS_ASSURED). They move back to conns
 * when they close (TIME_WAIT, CLOSE), and leave conns_assured only by expiry
 * (on lookup, or the control plane's sweep). Every connection has one
 * entry, keyed by the client's tuple (a Masq connection's replies find it
 * through rs_table). */
struct conn_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct conn {
	__be32 addr;		/* real server (TEMPLATE: the template's destination) */
	__be16 port;		/* real-server port */
	__u8 dir;		/* XDPLB_DIR_* */
	__u8 fwd;		/* IP_VS_CONN_F_* */
	__u32 dest_slot;
	__u32 svc_slot;
	__u32 ifindex;		/* Masq: cached egress of the replies (towards the
				 * client); 0 = not resolved yet. The client's packets
				 * use the destination's (egress_cache, maps.h). */
	__u8 smac[6];		/* ... its source MAC */
	__u8 dmac[6];		/* ... its next-hop MAC */
	__u8 state;		/* IP_VS_TCP_S_* */
	__u8 timeout_hi;	/* timeout = timeout_hi << 16 | timeout_lo: seconds idle */
	__u16 timeout_lo;	/* before it expires (24 bits), set from the timeouts map
				 * at each state change and refresh (TEMPLATE: -p value);
				 * 0 = IPVS's default for its state, never expired by the
				 * data path (entries written by hand) */
	__u32 dest_seq;		/* the destination's seq at creation: a slot reused by a
				 * new destination does not count this entry (0: unchecked) */
	__u64 last_seen;	/* bpf_ktime_get_coarse_ns() of the last packet, to ~0.27 s
				 * (IN: either direction; TEMPLATE: last use);
				 * 0 = expired (swapped to 0 by the one CPU that expires it) */
	__be32 laddr;		/* source-NATed (full-NAT, hairpin): the local address the
				 * client's packets leave from ... */
	__be16 lport;		/* ... and port (0: not source-NATed); fnat_out maps the
				 * reply tuple back to this entry's key */
	__u8 pad[2];
};

/* conns6: LRU_HASH conn_key6 -> conn6, conns6_assured: HASH, the same:
 * IPv6's connection tables, as conns and conns_assured. A conn6 is a conn
 * (its addr the XOR of the real server's words) followed by the real
 * server's IPv6 address. */
struct conn_key6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct conn6 {
	struct conn c;
	__be32 addr6[4];	/* real server (TEMPLATE: the template's destination) */
	__be32 laddr6[4];	/* source-NATed: the local address (c.laddr: its fold) */
};

/* svc_stats, dest_stats: PERCPU_ARRAY slot -> ip_vs_stats; bytes are L3 lengths */
struct ip_vs_stats {
	__u64 conns;
	__u64 inpkts;
	__u64 outpkts;
	__u64 inbytes;
	__u64 outbytes;
};

/* The forwarding methods' side tables: fragments, Tunnel's sources,
 * full-NAT's local addresses and reply mappings. */
#include "xdplb_fwd.h"

#endif /* XDPLB_H */
