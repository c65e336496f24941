/* SPDX-License-Identifier: GPL-2.0 */
/*
 * gue.h - the wire headers of the tunnels xdplb encapsulates in (encap.h)
 * and strips (decap.c): GUE's header (IP-in-IP is IPPROTO_IPIP). No
 * maps: decap.c, a program of its own, includes it too.
 */
#ifndef XDPLB_GUE_H
#define XDPLB_GUE_H

#include <linux/in.h>		/* IPPROTO_IPIP */
#include <linux/types.h>

/* GUE variant 0 (draft-ietf-intarea-gue): version (2 bits), control bit C,
 * hlen (5 bits: optional fields, in 32-bit words), the inner protocol, then
 * the flags word. xdplb sends version 0, C 0, hlen 0, proto 4, flags 0. */
struct xdplb_guehdr {
	__u8 ver_c_hlen;
	__u8 proto;
	__be16 flags;
};

#define XDPLB_GUE_VER_C		0xe0	/* version and C: 0 for a data packet of variant 0 */
#define XDPLB_GUE_HLEN		0x1f

#endif /* XDPLB_GUE_H */
