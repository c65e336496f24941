/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdplb_fwd.h - part of xdplb.h (which includes it; include that): the
 * structures and constants of the forwarding methods' side tables: the
 * records later fragments follow, Tunnel's outer sources, full-NAT's local
 * addresses and reply mappings. xdplb/structs.py mirrors them with the rest
 * of xdplb.h, and tests/test_structs.py reads both files.
 */
#ifndef XDPLB_FWD_H
#define XDPLB_FWD_H

/* frags: LRU_HASH frag_key -> frag_rec: what was done with the first
 * fragment of an IPv4 datagram xdplb forwarded (the fragment with the
 * ports), so that its later fragments (offset > 0, no L4 header) get the
 * same IP-header rewrite and leave by the same egress, to the same real
 * server. Keyed as the receiver reassembles: source, destination, protocol
 * and IP id. A record is used for XDPLB_FRAG_TTL_NS: a datagram's
 * fragments leave their sender back to back, while the 16-bit IP id comes
 * round again, for another datagram, after 65,536 datagrams of a sender to
 * that destination; an LRU because losing a record costs one datagram,
 * never a misrouted fragment.
 * frags6: LRU_HASH frag_key6 -> frag_rec6, the same for IPv6 (RFC 8200's
 * reassembly key: source, destination, the fragment header's 32-bit
 * identification; and its next header, the same in every fragment). */
#ifndef XDPLB_MAX_FRAGS
#define XDPLB_MAX_FRAGS		16384
#endif
#define XDPLB_FRAG_TTL_NS	1000000000ULL	/* 1 s */

struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag_rec {
	__be32 addr;		/* the address written over the header's destination
				 * (Masq) or, for a reply (out), source; 0: none (Route).
				 * IPv6: unused (frag_rec6's addr6) */
	__u32 ifindex;		/* the egress; 0: the first fragment went to the stack
				 * (its neighbour unresolved, or not an XDP method) */
	__u8 smac[6];		/* ... with these MACs */
	__u8 dmac[6];
	__u32 svc_slot;		/* whose stats the later fragments count in */
	__u32 dest_slot;	/* ... (0: the first fragment was not counted) */
	__be32 addr2;		/* source-NATed: the address written over the header's
				 * source (in: the local address) or, for a reply,
				 * destination (the client's); 0: none */
	__u8 out;		/* 1: a Masq reply (real server -> client) */
	__u8 l4_len;		/* the first fragment's L4 header length: a later
				 * fragment starting inside it would overwrite the ports */
	__u8 pad[2];
	__u64 stamp;		/* now_ns() of the first fragment */
};

struct frag_key6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;		/* the fragment header's identification */
	__u8 proto;		/* ... and next header */
	__u8 pad[3];
};

struct frag_rec6 {
	struct frag_rec r;
	__be32 addr6[4];	/* as frag_rec's addr; all zero: none (Route) */
	__be32 addr2_6[4];	/* as frag_rec's addr2; all zero: none */
};

/* tun_src: ARRAY ifindex -> the balancer's IPv4 address on that interface,
 * the outer source of the packets a Tunnel connection sends out of it (the
 * FIB gives the egress, not a source address). Written by `xdplb attach`
 * for every interface of the netns; 0: none known. */
#define XDPLB_TUN_SRC_SLOTS	(XDPLB_MAX_PORTS * 16)

/* tun_src6: ARRAY ifindex -> the balancer's IPv6 address on that interface,
 * the outer source of an IPv6 tunnel (a real server with an IPv6 address:
 * IPv6 in IPv6, IPv4 in IPv6); all zero: none known. Written with tun_src. */
struct tun_src6 {
	__be32 addr[4];
};

/* laddrs: ARRAY svc slot -> laddr_set: a service's local addresses for
 * full-NAT and hairpin (DPVS's --add-laddr), in the order they were added,
 * of the service's family. The interface (-F IFNAME) is kept for listings
 * and -S; addr holds an IPv4 address in its first word, the rest zero. */
#define XDPLB_LADDR_MAX		16

struct laddr {
	__be32 addr[4];
	__u32 ifindex;
	__u8 af;		/* XDPLB_AF_* */
	__u8 pad[3];
};

struct laddr_set {
	__u32 n;		/* entries used in a[] */
	__u32 pad;
	struct laddr a[XDPLB_LADDR_MAX];
};

/* fnat_out: HASH conn_key -> conn_key: a source-NATed connection's reply
 * tuple <rs, laddr, rport, lport, proto> (saddr, daddr, sport, dport as the
 * reply carries them) -> the connection's key (the client's tuple). A plain
 * hash, not an LRU: an evicted mapping would lose a live connection's
 * replies. The data path inserts it with BPF_NOEXIST (atomic across CPUs:
 * no two connections ever get the same reply tuple) before the connection's
 * entry and deletes it when it expires the entry; the control plane's sweep
 * deletes the mappings of the entries it removes and those whose entry an
 * LRU eviction took. A reply finds the entry through it and checks that the
 * entry names exactly this mapping, so a stale one is never followed.
 * Allocated as used (BPF_F_NO_PREALLOC). */
#ifndef XDPLB_MAX_FNAT
#define XDPLB_MAX_FNAT		(XDPLB_MAX_CONNS + XDPLB_MAX_ASSURED)
#endif
/* fnat_out6: HASH conn_key6 -> conn_key6, the same for IPv6. */
#ifndef XDPLB_MAX_FNAT6
#define XDPLB_MAX_FNAT6		(XDPLB_MAX_CONNS6 + XDPLB_MAX_ASSURED6)
#endif
/* The source ports a local address lends, and the candidates a new
 * connection tries (consecutive ports from a hash of its tuple and the
 * CPU's random state, the local addresses in turn) before it is dropped,
 * counted XDPLB_CNT_FNAT_NO_PORT. */
#ifndef XDPLB_FNAT_PORT_MIN
#define XDPLB_FNAT_PORT_MIN	1024
#endif
#ifndef XDPLB_FNAT_PORT_MAX
#define XDPLB_FNAT_PORT_MAX	65535
#endif
#define XDPLB_FNAT_PROBES	8

#endif /* XDPLB_FWD_H */
