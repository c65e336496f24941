/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench_trivial.c - reference programs for `xdplb bench` (xdplb/bench.py).
 *
 * bench_trivial   the floor: touches nothing, returns XDP_TX.
 * bench_minnat    the realistic floor of an established flow (docs/kernel-and-lab.md
 *                 section 9): parse Ethernet/IPv4/TCP, one 5-tuple LRU lookup that
 *                 hits, rewrite the destination address and both MACs with
 *                 incremental IP and TCP checksum updates, one per-CPU counter, XDP_TX.
 * bench_newconn   a harness for the new-connection path: it rewrites the frame
 *                 from a template with a fresh (source address, source port)
 *                 from a per-CPU sequence, so every BPF_PROG_TEST_RUN iteration
 *                 is the first packet of a connection, then tail-calls the
 *                 program under test (nc_target[0]). Its own cost is measured
 *                 by pointing nc_target[0] at bench_trivial.
 *
 * None of this is part of the data path.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>

int bench_trivial(struct xdp_md *ctx)
{
	return XDP_TX;
}

/* ---- minimal NAT ---------------------------------------------------------- */

struct mn_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct mn_nat {
	__be32 daddr;
	__be16 dport;
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[2];
};

BPF_TABLE("lru_hash", struct mn_key, struct mn_nat, mn_conns, 1024);
BPF_PERCPU_ARRAY(mn_hits, __u64, 1);

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

int bench_minnat(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct tcphdr *tcp;
	struct mn_key key = {};
	struct mn_nat *nat;
	__u32 zero = 0;
	__u64 *hits;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.sport = tcp->source;
	key.dport = tcp->dest;
	key.proto = IPPROTO_TCP;
	nat = mn_conns.lookup(&key);
	if (!nat)
		return XDP_PASS;
	bench_csum4(&ip->check, ip->daddr, nat->daddr);
	bench_csum4(&tcp->check, ip->daddr, nat->daddr);
	bench_csum2(&tcp->check, tcp->dest, nat->dport);
	ip->daddr = nat->daddr;
	tcp->dest = nat->dport;
	__builtin_memcpy(eth->h_dest, nat->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nat->smac, ETH_ALEN);
	hits = mn_hits.lookup(&zero);
	if (hits)
		*hits += 1;
	return XDP_TX;
}

/* ---- new-connection harness ---------------------------------------------- */

#define NC_FRAME_WORDS 8	/* the template: the first 64 bytes of the frame */

struct nc_tmpl {
	__u64 w[NC_FRAME_WORDS];
};

BPF_PROG_ARRAY(nc_target, 1);
BPF_ARRAY(nc_tmpl, struct nc_tmpl, 1);
/* Global, not per-CPU: runs may land on any CPU and must never repeat a tuple. */
BPF_ARRAY(nc_seq, __u64, 1);

int bench_newconn(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *w = data;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);
	struct nc_tmpl *t;
	__u32 zero = 0, saddr;
	__u16 sport;
	__u64 *seq, n;
	int i;

	if (data + sizeof(struct nc_tmpl) > data_end)
		return XDP_ABORTED;
	t = nc_tmpl.lookup(&zero);
	seq = nc_seq.lookup(&zero);
	if (!t || !seq)
		return XDP_ABORTED;
	n = __sync_fetch_and_add(seq, 1);
#pragma unroll
	for (i = 0; i < NC_FRAME_WORDS; i++)
		w[i] = t->w[i];
	/* 2^15 source ports x 2^24 source addresses (11.0.0.0/8): never a repeat. */
	saddr = htonl(0x0b000000 | ((n >> 15) & 0xffffff));
	sport = htons(0x8000 | (n & 0x7fff));
	bench_csum4(&ip->check, ip->saddr, saddr);
	bench_csum4(&tcp->check, ip->saddr, saddr);
	bench_csum2(&tcp->check, tcp->source, sport);
	ip->saddr = saddr;
	tcp->source = sport;
	nc_target.call(ctx, 0);
	return XDP_ABORTED;	/* the tail call failed */
}
