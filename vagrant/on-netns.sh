#!/bin/sh
# Runner for the scenario scripts on the one-host netns lab (xdplb lab up):
#   on-netns.sh NODE CMD...   runs CMD in the lab namespace <prefix>-NODE.
# nsenter --net (not `ip netns exec`) keeps /sys/fs/bpf, where xdplb's state is.
# The prefix is $XDPLB_LAB_PREFIX (default xlab), as for `xdplb lab`.
[ $# -ge 2 ] || { echo "usage: on-netns.sh NODE CMD..." >&2; exit 2; }
node=$1
shift
exec nsenter --net="/run/netns/${XDPLB_LAB_PREFIX:-xlab}-$node" "$@"
