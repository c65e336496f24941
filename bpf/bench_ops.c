/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench_ops.c - the building blocks of a new connection and of an
 * established packet, one per program, for `xdplb bench --parts ops`
 * (xdplb/bench/ops.py). A new connection's run behind the new-connection
 * harness of bench_trivial.c, so every iteration brings a never-seen
 * 5-tuple; an established packet's run on one fixed frame whose tuple is in
 * their tables. Each parses the frame, does its one operation and counts
 * the expected outcome in op_count[its OP_*] (the proof that every
 * iteration did it), then returns XDP_TX (the redirect: XDP_REDIRECT). The
 * tables take the geometry of xdplb's maps (bench.h).
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
	/* an established packet: the fixed frame's tuple */
	OP_EST_PARSE,	/* the baseline: parse and count, no harness */
	OP_HASH_HIT,	/* hash lookup that hits (one entry) */
	OP_LRU_HIT,	/* LRU lookup that hits (one entry) */
	OP_RS_HIT,	/* rs_table lookup that hits (one entry) */
	OP_PCPU_ARRAY,	/* per-CPU array lookup (inlined by the verifier) */
	OP_CLOCK,	/* bpf_jiffies64 and the per-CPU clock cache */
	OP_KTIME,	/* bpf_ktime_get_coarse_ns, what the cache saves */
	OP_REDIRECT,	/* bpf_redirect_map into a devmap that holds the port */
	OP_MAX
};

struct op_value {
	__u8 b[BENCH_VALUE_SIZE];
};

struct op_cfg {
	__be32 fib_dst;		/* an address with a route and a permanent neighbour */
	__u32 tx_port;		/* an ifindex op_tx_ports holds */
};

/* rs_table's key (struct rs_key) and value, by size. */
struct op_rs_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad[BENCH_RS_KEY_SIZE - 7];
};

struct op_rs_value {
	__u8 b[BENCH_RS_VALUE_SIZE];
};

struct op_egress {
	__u8 b[BENCH_EGRESS_VALUE_SIZE];
};

/* clock.h's struct clock. */
struct op_clock {
	__u64 jiffies;
	__u64 ns;
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
/* The established rows' tables, each holding the fixed frame's tuple alone. */
BPF_F_TABLE("hash", struct bench_key, struct op_value, op_est_hash, BENCH_ASSURED_MAX,
	    BENCH_ASSURED_FLAGS);
BPF_F_TABLE("lru_hash", struct bench_key, struct op_value, op_est_lru, BENCH_CONNS_MAX,
	    BENCH_CONNS_FLAGS);
BPF_F_TABLE("hash", struct op_rs_key, struct op_rs_value, op_est_rs, BENCH_RS_MAX,
	    BENCH_RS_FLAGS);
BPF_PERCPU_ARRAY(op_egress, struct op_egress, BENCH_EGRESS_SLOTS);
BPF_PERCPU_ARRAY(op_clock, struct op_clock, 1);
BPF_DEVMAP(op_tx_ports, BENCH_TX_PORTS_MAX);
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

/* clock.h's now_ns() over op_clock (clock.h brings every map of the data
 * path with it). */
static __always_inline __u64 op_now_ns(void)
{
	__u64 j = bpf_jiffies64();
	__u32 zero = 0;
	struct op_clock *clk = op_clock.lookup(&zero);

	if (!clk)
		return bpf_ktime_get_coarse_ns();
	if (clk->jiffies != j) {
		clk->ns = bpf_ktime_get_coarse_ns();
		clk->jiffies = j;
	}
	return clk->ns;
}

/* rs_table's lookup of a reply from k's source, as conn_reply_lookup makes it. */
static __always_inline int op_rs_lookup(const struct bench_key *k)
{
	struct op_rs_key rk = {.addr = k->saddr, .port = k->sport, .proto = k->proto};

	return op_est_rs.lookup(&rk) == NULL;
}

/* A slot the frame chooses, not a constant (egress_cache is indexed by dest slot). */
static __always_inline int op_egress_lookup(const struct bench_key *k)
{
	__u32 idx = ntohs(k->dport) % BENCH_EGRESS_SLOTS;

	return op_egress.lookup(&idx) == NULL;
}

/* One operation on the frame's tuple k (and its reply's r); 0 where it
 * turned out as expected (a lookup missed or hit, an insert or delete
 * succeeded, the clock answered). Inlined with a constant op, only that
 * case remains in each program. */
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
	case OP_HASH_HIT:
		return op_est_hash.lookup(k) == NULL;
	case OP_LRU_HIT:
		return op_est_lru.lookup(k) == NULL;
	case OP_RS_HIT:
		return op_rs_lookup(k);
	case OP_PCPU_ARRAY:
		return op_egress_lookup(k);
	case OP_CLOCK:
		return op_now_ns() == 0;
	case OP_KTIME:
		return bpf_ktime_get_coarse_ns() == 0;
	}
	return 0;	/* OP_PARSE, OP_EST_PARSE */
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
int op_est_parse(struct xdp_md *ctx) { return op_run(ctx, OP_EST_PARSE); }
int op_hash_hit(struct xdp_md *ctx) { return op_run(ctx, OP_HASH_HIT); }
int op_lru_hit(struct xdp_md *ctx) { return op_run(ctx, OP_LRU_HIT); }
int op_rs_hit(struct xdp_md *ctx) { return op_run(ctx, OP_RS_HIT); }
int op_pcpu_array(struct xdp_md *ctx) { return op_run(ctx, OP_PCPU_ARRAY); }
int op_clock_cache(struct xdp_md *ctx) { return op_run(ctx, OP_CLOCK); }
int op_ktime(struct xdp_md *ctx) { return op_run(ctx, OP_KTIME); }

int op_tail(struct xdp_md *ctx)
{
	struct bench_key k = {}, r = {};

	if (op_keys(ctx, &k, &r) < 0)
		return XDP_ABORTED;
	op_done(OP_TAIL);
	op_next.call(ctx, 0);
	return XDP_ABORTED;	/* the tail call failed */
}

/* The frame's tuple and the configuration (one inlined array load): 0, or -1. */
static __always_inline int op_keys_cfg(struct xdp_md *ctx, struct bench_key *k,
				       struct op_cfg **cfg)
{
	struct bench_key r = {};
	__u32 zero = 0;

	if (op_keys(ctx, k, &r) < 0)
		return -1;
	*cfg = op_cfg.lookup(&zero);
	return *cfg ? 0 : -1;
}

int op_fib(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib = {};
	struct bench_key k = {};
	struct op_cfg *cfg;

	if (op_keys_cfg(ctx, &k, &cfg) < 0)
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

/* XDP_REDIRECT where bpf_redirect_map found the port, as transmit() sends
 * to another device; the baseline returns XDP_TX. */
int op_redirect(struct xdp_md *ctx)
{
	struct bench_key k = {};
	struct op_cfg *cfg;

	if (op_keys_cfg(ctx, &k, &cfg) < 0)
		return XDP_ABORTED;
	if (op_tx_ports.redirect_map(cfg->tx_port, XDP_PASS) != XDP_REDIRECT)
		return XDP_DROP;
	op_done(OP_REDIRECT);
	return XDP_REDIRECT;
}
