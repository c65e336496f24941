/* SPDX-License-Identifier: GPL-2.0 */
/* bench.h - what the benchmark's programs (bench_trivial.c, bench_ops.c)
 * share: the geometry of xdplb's connection maps, the 5-tuple key, parsing.
 * None of this is part of the data path. */
#ifndef XDPLB_BENCH_H
#define XDPLB_BENCH_H

#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>

/* xdplb's conns map as the kernel reports it (type LRU hash), and its
 * conns_assured map (a hash): passed by xdplb/bench/pkt.py (geometry());
 * small placeholders where a program does not use them. */
#ifndef BENCH_CONNS_MAX
#define BENCH_CONNS_MAX		1024
#define BENCH_CONNS_FLAGS	0
#define BENCH_KEY_SIZE		16
#define BENCH_VALUE_SIZE	48
#endif
#ifndef BENCH_ASSURED_MAX
#define BENCH_ASSURED_MAX	1024
#define BENCH_ASSURED_FLAGS	0
#endif
/* rs_table (a hash allocated on demand), egress_cache (a per-CPU array)
 * and tx_ports (a devmap) likewise (bench_ops.c's established rows). */
#ifndef BENCH_RS_MAX
#define BENCH_RS_MAX		1024
#define BENCH_RS_FLAGS		BPF_F_NO_PREALLOC
#define BENCH_RS_KEY_SIZE	8
#define BENCH_RS_VALUE_SIZE	264
#endif
#ifndef BENCH_EGRESS_SLOTS
#define BENCH_EGRESS_SLOTS	16
#define BENCH_EGRESS_VALUE_SIZE	40
#endif
#ifndef BENCH_TX_PORTS_MAX
#define BENCH_TX_PORTS_MAX	64
#endif

/* The 5-tuple, padded to the size of xdplb's struct conn_key. */
struct bench_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[BENCH_KEY_SIZE - 13];
};

/* Ethernet/IPv4/TCP without options: the headers and the 5-tuple, or -1. */
static __always_inline int bench_parse(struct xdp_md *ctx, struct ethhdr **eth,
				       struct iphdr **ip, struct tcphdr **tcp,
				       struct bench_key *key)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	*eth = data;
	*ip = data + sizeof(**eth);
	*tcp = (void *)(*ip + 1);
	if ((void *)(*tcp + 1) > data_end)
		return -1;
	if ((*eth)->h_proto != htons(ETH_P_IP) || (*ip)->ihl != 5 ||
	    (*ip)->protocol != IPPROTO_TCP)
		return -1;
	key->saddr = (*ip)->saddr;
	key->daddr = (*ip)->daddr;
	key->sport = (*tcp)->source;
	key->dport = (*tcp)->dest;
	key->proto = IPPROTO_TCP;
	return 0;
}

#endif /* XDPLB_BENCH_H */
