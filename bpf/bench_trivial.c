/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench_trivial.c - reference programs for `xdplb bench` (xdplb/bench/).
 *
 * bench_trivial   the floor: touches nothing, returns XDP_TX.
 * bench_minnat    the realistic floor of an established flow (docs/kernel-and-lab.md
 *                 section 9): parse Ethernet/IPv4/TCP, one 5-tuple LRU lookup that
 *                 hits, rewrite the destination address and both MACs with
 *                 incremental IP and TCP checksum updates, one per-CPU counter, XDP_TX.
 * bench_newflow   the realistic floor of a new flow: parse Ethernet/IPv4/TCP,
 *                 one 5-tuple lookup that misses, one insert into an LRU hash
 *                 of the geometry of xdplb's conns map (size, key and value
 *                 sizes, flags: bench.h), the rewrite of bench_minnat, XDP_TX.
 * bench_newconn   a harness for the new-connection path: it rewrites the frame
 *                 from a template with a fresh (source address, source port)
 *                 from a per-CPU sequence and the CPU's number, so every
 *                 BPF_PROG_TEST_RUN iteration, on any CPU, is the first packet
 *                 of a connection, then tail-calls the program under test
 *                 (nc_target[0]: xdplb or bench_newflow). Its own cost is
 *                 measured by pointing nc_target[0] at bench_trivial.
 * bench_replay    a harness for a path whose rewrite is no fixed point (a
 *                 Tunnel connection's encapsulation): it rewrites the frame
 *                 from a template, the same frame every iteration, and
 *                 tail-calls rp_target[0]. Run with live frames, whose
 *                 context (not data) the kernel resets between iterations;
 *                 pointed at bench_trivial it measures itself.
 *
 * None of this is part of the data path.
 */
#include "bench.h"

int bench_trivial(struct xdp_md *ctx)
{
	return XDP_TX;
}

/* ---- rewrite ---------------------------------------------------------------- */

struct mn_nat {
	__be32 daddr;
	__be16 dport;
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[2];
};

static __always_inline __u16 bench_fold32(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

/* RFC 1624 incremental update of a 16-bit one's complement sum. */
static __always_inline void bench_csum4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~from + (__u16)(~from >> 16) + (__u16)to + (__u16)(to >> 16);
	*sum = ~bench_fold32(c);
}

static __always_inline void bench_csum2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~from + to;
	*sum = ~bench_fold32(c);
}

/* Destination address and port with incremental checksums, both MACs. */
static __always_inline void bench_rewrite(struct ethhdr *eth, struct iphdr *ip,
					  struct tcphdr *tcp, const struct mn_nat *nat)
{
	bench_csum4(&ip->check, ip->daddr, nat->daddr);
	bench_csum4(&tcp->check, ip->daddr, nat->daddr);
	bench_csum2(&tcp->check, tcp->dest, nat->dport);
	ip->daddr = nat->daddr;
	tcp->dest = nat->dport;
	__builtin_memcpy(eth->h_dest, nat->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nat->smac, ETH_ALEN);
}

/* ---- minimal NAT ---------------------------------------------------------- */

BPF_TABLE("lru_hash", struct bench_key, struct mn_nat, mn_conns, 1024);
BPF_PERCPU_ARRAY(mn_hits, __u64, 1);

int bench_minnat(struct xdp_md *ctx)
{
	struct bench_key key = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct mn_nat *nat;
	__u32 zero = 0;
	__u64 *hits;

	if (bench_parse(ctx, &eth, &ip, &tcp, &key) < 0)
		return XDP_PASS;
	nat = mn_conns.lookup(&key);
	if (!nat)
		return XDP_PASS;
	bench_rewrite(eth, ip, tcp, nat);
	hits = mn_hits.lookup(&zero);
	if (hits)
		*hits += 1;
	return XDP_TX;
}

/* ---- minimal new flow ------------------------------------------------------ */

/* What the flow is rewritten to, padded to the size of xdplb's struct conn
 * (bcc's table description takes no sizeof in an array bound). */
#define MN_NAT_SIZE	20
_Static_assert(sizeof(struct mn_nat) == MN_NAT_SIZE, "MN_NAT_SIZE");

struct mf_value {
	struct mn_nat nat;
	__u8 pad[BENCH_VALUE_SIZE - MN_NAT_SIZE];
};

BPF_F_TABLE("lru_hash", struct bench_key, struct mf_value, mf_conns, BENCH_CONNS_MAX,
	    BENCH_CONNS_FLAGS);
BPF_ARRAY(mf_dest, struct mf_value, 1);		/* the destination of every new flow */
/* 0: flows inserted (the path measured), 1: lookups that hit, 2: inserts that
 * failed (neither may move during a run). */
BPF_PERCPU_ARRAY(mf_count, __u64, 3);

static __always_inline void mf_bump(__u32 idx)
{
	__u64 *n = mf_count.lookup(&idx);

	if (n)
		*n += 1;
}

int bench_newflow(struct xdp_md *ctx)
{
	struct bench_key key = {};
	struct mf_value *d;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	__u32 zero = 0;

	if (bench_parse(ctx, &eth, &ip, &tcp, &key) < 0)
		return XDP_PASS;
	if (mf_conns.lookup(&key)) {
		mf_bump(1);
		return XDP_PASS;
	}
	d = mf_dest.lookup(&zero);
	if (!d)
		return XDP_ABORTED;
	if (mf_conns.update(&key, d)) {
		mf_bump(2);
		return XDP_DROP;
	}
	bench_rewrite(eth, ip, tcp, &d->nat);
	mf_bump(0);
	return XDP_TX;
}

/* ---- new-connection harness ---------------------------------------------- */

#define NC_FRAME_WORDS 8	/* the template: the first 64 bytes of the frame */

struct nc_tmpl {
	__u64 w[NC_FRAME_WORDS];
};

BPF_PROG_ARRAY(nc_target, 1);
BPF_ARRAY(nc_tmpl, struct nc_tmpl, 1);
/* Per CPU, so that loops on several CPUs at once share no cache line; the
 * CPU's number in the source address keeps their tuples apart. */
BPF_PERCPU_ARRAY(nc_seq, __u64, 1);

int bench_newconn(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *w = data;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);
	struct nc_tmpl *t;
	__u32 zero = 0, saddr, cpu;
	__u16 sport;
	__u64 *seq, n;
	int i;

	if (data + sizeof(struct nc_tmpl) > data_end)
		return XDP_ABORTED;
	t = nc_tmpl.lookup(&zero);
	seq = nc_seq.lookup(&zero);
	if (!t || !seq)
		return XDP_ABORTED;
	n = (*seq)++;
	cpu = bpf_get_smp_processor_id();
#pragma unroll
	for (i = 0; i < NC_FRAME_WORDS; i++)
		w[i] = t->w[i];
	/* 11.0.0.0/8 split by CPU (64 of them): 2^18 source addresses x 2^15
	 * source ports per CPU, never a repeat. A test run's loop cannot
	 * migrate, and each of the bench's loops has a CPU of its own. */
	saddr = htonl(0x0b000000 | ((cpu & 0x3f) << 18) | ((n >> 15) & 0x3ffff));
	sport = htons(0x8000 | (n & 0x7fff));
	bench_csum4(&ip->check, ip->saddr, saddr);
	bench_csum4(&tcp->check, ip->saddr, saddr);
	bench_csum2(&tcp->check, tcp->source, sport);
	ip->saddr = saddr;
	tcp->source = sport;
	nc_target.call(ctx, 0);
	return XDP_ABORTED;	/* the tail call failed */
}

/* ---- replay harness -------------------------------------------------------- */

BPF_PROG_ARRAY(rp_target, 1);
BPF_ARRAY(rp_tmpl, struct nc_tmpl, 1);
BPF_PERCPU_ARRAY(rp_seq, __u64, 1);	/* frames replayed: the harness's proof */

int bench_replay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *w = data;
	struct nc_tmpl *t;
	__u32 zero = 0;
	__u64 *seq;
	int i;

	if (data + sizeof(struct nc_tmpl) > data_end)
		return XDP_ABORTED;
	t = rp_tmpl.lookup(&zero);
	seq = rp_seq.lookup(&zero);
	if (!t || !seq)
		return XDP_ABORTED;
	*seq += 1;
#pragma unroll
	for (i = 0; i < NC_FRAME_WORDS; i++)
		w[i] = t->w[i];
	rp_target.call(ctx, 0);
	return XDP_ABORTED;	/* the tail call failed */
}
