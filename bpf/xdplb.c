/* SPDX-License-Identifier: GPL-2.0 */
/* placeholder entry point: replaced by the data path */
#include <uapi/linux/bpf.h>
#include "maps.h"

int xdplb_main(struct xdp_md *ctx)
{
	return XDP_PASS;
}
