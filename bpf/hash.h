/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hash.h - the kernel's hashes of the sh, dh and mh schedulers, on
 * host-order addresses and ports, and rs_filter's bit. No maps: the layout test
 * (tests/test_structs.py) compiles it with the host compiler and checks
 * xdplb/sched.py's copies, which fill the tables, against it.
 */
#ifndef XDPLB_HASH_H
#define XDPLB_HASH_H

#include "xdplb.h"

/* include/linux/hash.h: hash_32(v, bits) with GOLDEN_RATIO_32. */
static __always_inline __u32 xdplb_hash_32(__u32 v, __u32 bits)
{
	return (v * 0x61C88647u) >> (32 - bits);
}

/* An IPv6 address folded to 32 bits, the XOR of its words: what the
 * kernel's sh, dh, mh and lblc hashes take of one (their addr_fold), and
 * what rs_filter, the egress cache and a conn's addr hold. */
static __always_inline __be32 addr_fold(const __be32 *a)
{
	return a[0] ^ a[1] ^ a[2] ^ a[3];
}

static __always_inline int addr6_eq(const __be32 *a, const __be32 *b)
{
	return !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]));
}

/* rs_filter's bit of a (host-order) real-server address. */
static __always_inline __u32 rs_filter_bit(__u32 addr)
{
	return xdplb_hash_32(addr, XDPLB_RS_FILTER_BITS);
}

/* sh (ip_vs_sh_hashkey): (offset + hash_32(port + addr, 8)) & 255 */
static __always_inline __u32 sh_hashkey(__u32 addr, __u16 port, __u32 offset)
{
	return (offset + xdplb_hash_32(port + addr, 8)) & (XDPLB_SH_TAB_SIZE - 1);
}

/* dh (ip_vs_dh_hashkey): hash_32(addr, 8) */
static __always_inline __u32 dh_hashkey(__u32 addr)
{
	return xdplb_hash_32(addr, 8);
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
static __always_inline __u32 mh_hashkey(__u32 addr, __u16 port, __u32 offset)
{
	return hsiphash_u32(offset + port + addr, 2654435761ULL, 2654435761ULL) %
	       XDPLB_MH_TAB_SIZE;
}

#endif /* XDPLB_HASH_H */
