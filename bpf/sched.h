/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sched.h - ring-based scheduling. The control plane precomputes, per
 * service, the sequence of destinations the kernel's scheduler would pick:
 * a prefix (the picks until the scheduler's state starts to repeat) and a
 * cycle repeated forever. A new connection takes the next position with one
 * atomic add, so every CPU sees one global order, as with IPVS's lock.
 * Map access lives in xdplb.c: bcc only rewrites map calls there.
 */
#ifndef XDPLB_SCHED_H
#define XDPLB_SCHED_H

#include "xdplb.h"

/* Ring index of the n-th connection scheduled since ring_base. */
static __always_inline __u32 sched_ring_index(const struct service *svc, __u64 pos)
{
	__u64 n = pos - svc->ring_base;
	__u32 prefix = svc->ring_prefix;
	__u32 cycle;

	if (n < prefix)
		return (__u32)n;
	if (svc->ring_len <= prefix)	/* no cycle: stay on the last entry */
		return svc->ring_len - 1;
	cycle = svc->ring_len - prefix;
	return prefix + (__u32)((n - prefix) % cycle);
}

static __always_inline void sched_ring_key(struct ring_key *rk, const struct service *svc,
					   __u32 index)
{
	rk->svc_slot = svc->slot;
	rk->index = svc->ring_gen | index;
}

/* include/linux/hash.h: hash_32(v, bits) with GOLDEN_RATIO_32. */
static __always_inline __u32 xdplb_hash_32(__u32 v, __u32 bits)
{
	return (v * 0x61C88647u) >> (32 - bits);
}

/* sh (ip_vs_sh_hashkey): (offset + hash_32(ntohs(port) + ntohl(addr), 8)) & 255 */
static __always_inline __u32 sh_hashkey(__be32 addr, __be16 port, __u32 offset)
{
	return (offset + xdplb_hash_32(bpf_ntohs(port) + bpf_ntohl(addr), 8)) &
	       (XDPLB_SH_TAB_SIZE - 1);
}

/* lib/siphash.c on 64-bit: hsiphash is SipHash-1-3 with a 64-bit state and
 * a 32-bit result; hsiphash(&v, 4, key) of one u32 v, key words k0, k1. */
static __always_inline __u64 xdplb_rol64(__u64 w, unsigned int s)
{
	return (w << s) | (w >> (64 - s));
}

#define XDPLB_SIPROUND							\
	do {								\
		v0 += v1; v1 = xdplb_rol64(v1, 13); v1 ^= v0; v0 = xdplb_rol64(v0, 32); \
		v2 += v3; v3 = xdplb_rol64(v3, 16); v3 ^= v2;			\
		v0 += v3; v3 = xdplb_rol64(v3, 21); v3 ^= v0;			\
		v2 += v1; v1 = xdplb_rol64(v1, 17); v1 ^= v2; v2 = xdplb_rol64(v2, 32); \
	} while (0)

static __always_inline __u32 hsiphash_u32(__u32 m, __u64 k0, __u64 k1)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ k0;
	__u64 v1 = 0x646f72616e646f6dULL ^ k1;
	__u64 v2 = 0x6c7967656e657261ULL ^ k0;
	__u64 v3 = 0x7465646279746573ULL ^ k1;
	__u64 b = ((__u64)4 << 56) | m;

	v3 ^= b;
	XDPLB_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	XDPLB_SIPROUND;
	XDPLB_SIPROUND;
	XDPLB_SIPROUND;
	return (__u32)((v0 ^ v1) ^ (v2 ^ v3));
}

/* ip_vs_mh_hashkey with hash1 = {2654435761, 2654435761}, % table size. */
static __always_inline __u32 mh_hashkey(__be32 addr, __be16 port, __u32 offset)
{
	__u32 v = offset + bpf_ntohs(port) + bpf_ntohl(addr);

	return hsiphash_u32(v, 2654435761ULL, 2654435761ULL) % XDPLB_MH_TAB_SIZE;
}

#endif /* XDPLB_SCHED_H */
