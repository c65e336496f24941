/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench_ops.c - the building blocks of a new connection, one per program,
 * for `xdplb bench --parts ops` (xdplb/bench/ops.py). Each runs behind the
 * new-connection harness of bench_trivial.c, so every iteration brings a
 * never-seen 5-tuple; each parses it, does its one operation and counts
 * the expected outcome in op_count[its OP_*] (the proof that every
 * iteration did it), then returns XDP_TX. The tables take the geometry of
 * xdplb's connection maps (bench.h).
 *
 * None of this is part of the data path.
 */
#include "bench.h"

enum {
	OP_PARSE,	/* the baseline: parse and count */
	OP_LRU_MISS,	/* lookup that misses in a full LRU */
	OP_HASH_MISS,	/* lookup that misses in the (empty) hash */
	OP_LRU_ROOM,	/* LRU insert, table with room */
	OP_LRU_FULL,	/* LRU insert, full table: evicts */
	OP_LRU2_ROOM,	/* two LRU inserts (the tuple and its reply: layout 2 Masq) */
	OP_LRU2_FULL,
	OP_PCPU_ROOM,	/* insert into a per-CPU LRU (BPF_F_NO_COMMON_LRU) */
	OP_PCPU_FULL,
	OP_HASH_MOVE,	/* hash insert, then delete */
	OP_TAIL,	/* one tail call (to bench_trivial) */
	OP_FIB,		/* bpf_fib_lookup that succeeds */
	OP_MAX
};

struct op_value {
	__u8 b[BENCH_VALUE_SIZE];
};

struct op_cfg {
	__be32 fib_dst;		/* an address with a route and a permanent neighbour */
};

BPF_F_TABLE("lru_hash", struct bench_key, struct op_value, op_lru_room, BENCH_CONNS_MAX,
	    BENCH_CONNS_FLAGS);
BPF_F_TABLE("lru_hash", struct bench_key, struct op_value, op_lru_full, BENCH_CONNS_MAX,
	    BENCH_CONNS_FLAGS);
BPF_F_TABLE("lru_hash", struct bench_key, struct op_value, op_pcpu_room, BENCH_CONNS_MAX,
	    BPF_F_NO_COMMON_LRU);
BPF_F_TABLE("lru_hash", struct bench_key, struct op_value, op_pcpu_full, BENCH_CONNS_MAX,
	    BPF_F_NO_COMMON_LRU);
BPF_F_TABLE("hash", struct bench_key, struct op_value, op_hash, BENCH_ASSURED_MAX,
	    BENCH_ASSURED_FLAGS);
BPF_PROG_ARRAY(op_next, 1);
BPF_ARRAY(op_cfg, struct op_cfg, 1);
BPF_PERCPU_ARRAY(op_count, __u64, OP_MAX);

static __always_inline int op_done(__u32 op)
{
	__u64 *n = op_count.lookup(&op);

	if (n)
		*n += 1;
	return XDP_TX;
}

/* The frame's 5-tuple and its reply's. */
static __always_inline int op_keys(struct xdp_md *ctx, struct bench_key *k,
				   struct bench_key *r)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;

	if (bench_parse(ctx, &eth, &ip, &tcp, k) < 0)
		return -1;
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
	return 0;
}

/* One operation on the frame's tuple k (and its reply's r); 0 where it
 * turned out as expected (a lookup missed, an insert or delete succeeded).
 * Inlined with a constant op, only that case remains in each program. */
static __always_inline int op_do(__u32 op, struct bench_key *k, struct bench_key *r)
{
	struct op_value v = {};

	switch (op) {
	case OP_LRU_MISS:
		return op_lru_full.lookup(k) != NULL;
	case OP_HASH_MISS:
		return op_hash.lookup(k) != NULL;
	case OP_LRU_ROOM:
		return op_lru_room.update(k, &v);
	case OP_LRU_FULL:
		return op_lru_full.update(k, &v);
	case OP_LRU2_ROOM:
		return op_lru_room.update(k, &v) || op_lru_room.update(r, &v);
	case OP_LRU2_FULL:
		return op_lru_full.update(k, &v) || op_lru_full.update(r, &v);
	case OP_PCPU_ROOM:
		return op_pcpu_room.update(k, &v);
	case OP_PCPU_FULL:
		return op_pcpu_full.update(k, &v);
	case OP_HASH_MOVE:
		return op_hash.update(k, &v) || op_hash.delete(k);
	}
	return 0;	/* OP_PARSE */
}

/* XDP_TX and counted where the operation turned out as expected, else
 * XDP_DROP, uncounted. */
static __always_inline int op_run(struct xdp_md *ctx, __u32 op)
{
	struct bench_key k = {}, r = {};

	if (op_keys(ctx, &k, &r) < 0)
		return XDP_ABORTED;
	if (op_do(op, &k, &r))
		return XDP_DROP;
	return op_done(op);
}

int op_parse(struct xdp_md *ctx) { return op_run(ctx, OP_PARSE); }
int op_lru_miss(struct xdp_md *ctx) { return op_run(ctx, OP_LRU_MISS); }
int op_hash_miss(struct xdp_md *ctx) { return op_run(ctx, OP_HASH_MISS); }
int op_lru_room_insert(struct xdp_md *ctx) { return op_run(ctx, OP_LRU_ROOM); }
int op_lru_full_insert(struct xdp_md *ctx) { return op_run(ctx, OP_LRU_FULL); }
int op_lru2_room_insert(struct xdp_md *ctx) { return op_run(ctx, OP_LRU2_ROOM); }
int op_lru2_full_insert(struct xdp_md *ctx) { return op_run(ctx, OP_LRU2_FULL); }
int op_pcpu_room_insert(struct xdp_md *ctx) { return op_run(ctx, OP_PCPU_ROOM); }
int op_pcpu_full_insert(struct xdp_md *ctx) { return op_run(ctx, OP_PCPU_FULL); }
int op_hash_move(struct xdp_md *ctx) { return op_run(ctx, OP_HASH_MOVE); }

int op_tail(struct xdp_md *ctx)
{
	struct bench_key k = {}, r = {};

	if (op_keys(ctx, &k, &r) < 0)
		return XDP_ABORTED;
	op_done(OP_TAIL);
	op_next.call(ctx, 0);
	return XDP_ABORTED;	/* the tail call failed */
}

int op_fib(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib = {};
	struct bench_key k = {}, r = {};
	struct op_cfg *cfg;
	__u32 zero = 0;

	if (op_keys(ctx, &k, &r) < 0)
		return XDP_ABORTED;
	cfg = op_cfg.lookup(&zero);
	if (!cfg)
		return XDP_ABORTED;
	fib.family = 2;		/* AF_INET */
	fib.l4_protocol = IPPROTO_TCP;
	fib.tot_len = 40;
	fib.ipv4_src = k.saddr;
	fib.ipv4_dst = cfg->fib_dst;
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_DROP;
	return op_done(OP_FIB);
}
