/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench_fwd.c - the traffic generator and the counters of `xdplb bench`'s
 * forwarding-rate part (xdplb/bench/fwd.py). None of this is the data path.
 *
 * bench_inject  run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on
 *               the client's veth: writes the frame from a template (so every
 *               frame is the same whatever the previous one went through:
 *               live-frame pages are recycled, not re-initialised), varies the
 *               source port over gen_cfg.flows flows (or, with flows == 0, a
 *               never-seen source address:port per frame) and returns XDP_TX:
 *               the frame leaves through the veth into the balancer. UDP
 *               templates carry no checksum; TCP ones (gen_cfg.tcp, e.g. a
 *               SYN flood) get theirs updated, so real servers accept them.
 * bench_pass    XDP_PASS: lets a veth take redirected/transmitted frames into
 *               the kernel stack (the kernel-path variants).
 * bench_sink    counts and drops what reaches the real server's veth (or,
 *               for the generator ceiling, the balancer's).
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/tcp.h>

#define GEN_WORDS 8	/* 64-byte template: Ethernet + IPv4 + UDP + padding */

struct gen_tmpl {
	__u64 w[GEN_WORDS];
};

struct gen_cfg {
	__u32 flows;	/* 0: a new flow per frame */
	__u32 tcp;	/* the template is TCP: keep its checksum right */
};

BPF_ARRAY(gen_tmpl, struct gen_tmpl, 1);
BPF_ARRAY(gen_cfg, struct gen_cfg, 1);
/* Global: one injector at a time, and runs may land on any CPU. */
BPF_ARRAY(gen_seq, __u64, 1);
BPF_PERCPU_ARRAY(sink_cnt, __u64, 2);	/* 0: frames, 1: bytes */

static __always_inline __u16 fold32(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

int bench_inject(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *w = data;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	struct tcphdr *tcp = (void *)(ip + 1);
	struct gen_tmpl *t;
	struct gen_cfg *cfg;
	__u32 zero = 0, c, saddr;
	__u64 *seq, n;
	__u16 sport;
	int i;

	if (data + sizeof(struct gen_tmpl) > data_end)
		return XDP_ABORTED;
	t = gen_tmpl.lookup(&zero);
	cfg = gen_cfg.lookup(&zero);
	seq = gen_seq.lookup(&zero);
	if (!t || !cfg || !seq)
		return XDP_ABORTED;
	n = *seq;
	*seq = n + 1;
#pragma unroll
	for (i = 0; i < GEN_WORDS; i++)
		w[i] = t->w[i];
	if (cfg->flows) {
		sport = htons(10000 + (__u16)(n % cfg->flows));
		saddr = ip->saddr;
	} else {
		/* 2^14 ports x 2^24 addresses in 11.0.0.0/8: never a repeat. */
		sport = htons(0x8000 | (n & 0x3fff));
		saddr = htonl(0x0b000000 | ((n >> 14) & 0xffffff));
	}
	/* TCP's checksum covers the address (pseudo header) and the port. */
	if (cfg->tcp) {
		c = (__u16)~tcp->check;
		c += (__u16)~ip->saddr + (__u16)(~ip->saddr >> 16) + (__u16)saddr +
		     (__u16)(saddr >> 16) + (__u16)~tcp->source + sport;
		tcp->check = ~fold32(c);
	}
	if (saddr != ip->saddr) {
		c = (__u16)~ip->check;
		c += (__u16)~ip->saddr + (__u16)(~ip->saddr >> 16) + (__u16)saddr +
		     (__u16)(saddr >> 16);
		ip->check = ~fold32(c);
		ip->saddr = saddr;
	}
	udp->source = sport;
	return XDP_TX;
}

int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

int bench_sink(struct xdp_md *ctx)
{
	__u32 k0 = 0, k1 = 1;
	__u64 *p = sink_cnt.lookup(&k0), *b = sink_cnt.lookup(&k1);

	if (p)
		*p += 1;
	if (b)
		*b += ctx->data_end - ctx->data;
	return XDP_DROP;
}
