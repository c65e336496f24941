# shellcheck shell=bash
# Shared by scenario.sh and bench.sh (sourced). The lab's addresses are the
# seed's: VIP 1.2.3.4:80, real servers 172.80.0.2-4, client 10.0.0.2.
#
# How to reach a node: $ON NODE CMD... (default: the netns lab runner).
# shellcheck disable=SC2034  # the variables are for the scripts that source this
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ON=${ON:-$here/on-netns.sh}
VIP=1.2.3.4
SVC=$VIP:80
RSS=(172.80.0.2 172.80.0.3 172.80.0.4)
RS_NODES=(rs1 rs2 rs3)
# the lb's interfaces xdplb is attached to (the netns lab's by default): the
# clients' side and the real servers' (the pods') side
LB_CLIENT_IFS=${LB_CLIENT_IFS:-veth-client}
LB_RS_IFS=${LB_RS_IFS:-veth-rs1 veth-rs2 veth-rs3}
LB_IFS=${LB_IFS:-$LB_CLIENT_IFS $LB_RS_IFS}
XDP_MODE=${XDP_MODE:-native}

on() { "$ON" "$@"; }
stamp() { date +%H:%M:%S; }
info() { printf '%s - INFO: %s\n' "$(stamp)" "$*"; }
note() { printf '[%s] %s\n' "$ADM" "$*" >&2; }

check_adm() {
  case ${1:-} in
    ipvsadm|xdplbadm) ADM=$1 ;;
    *) echo "usage: $(basename "$0") ipvsadm|xdplbadm" >&2; exit 2 ;;
  esac
}

# Make the lb serve with one data path only, then clear its table.
# ipvsadm: xdplb detached from $LB_IFS, IPVS modules loaded, the VIP local to the lb (IPVS
# only sees packets for local addresses). xdplbadm: kernel IPVS emptied, the
# VIP not local, xdplb attached (XDP sees the packets before the stack).
use_datapath() {
  if [ "$ADM" = ipvsadm ]; then
    # detached from the interfaces; its pinned state stays, so attaching
    # again later needs no new compilation
    # shellcheck disable=SC2086  # LB_IFS is a list of interface names
    on lb xdplb detach $LB_IFS >/dev/null 2>&1 || true
    on lb modprobe -a ip_vs ip_vs_rr ip_vs_wrr 2>/dev/null || true
    on lb ip addr replace "$VIP/32" dev lo
    on lb ipvsadm -C
    note "lb: kernel IPVS, VIP $VIP on lo, xdplb detached"
  else
    on lb ipvsadm -C >/dev/null 2>&1 || true
    on lb ip addr del "$VIP/32" dev lo >/dev/null 2>&1 || true
    local mode=$XDP_MODE
    # shellcheck disable=SC2086  # LB_IFS is a list of interface names
    if ! on lb xdplb attach --mode "$mode" $LB_IFS >/dev/null; then
      # e.g. a VM NIC without native XDP: the kernel's generic XDP instead
      on lb xdplb detach >/dev/null 2>&1 || true
      mode=generic
      on lb xdplb attach --mode "$mode" $LB_IFS >/dev/null
    fi
    on lb xdplbadm -C
    XDP_MODE_USED=$mode
    note "lb: xdplb attached ($mode) to $LB_IFS"
  fi
}

# The real servers behind $1 (a service: -t VIP:80 or -u VIP:PORT), Masq.
add_backends() {
  local proto=$1 port=$2 sched=$3 rs
  on lb "$ADM" -A "$proto" "$VIP:$port" -s "$sched"
  for rs in "${RSS[@]}"; do
    on lb "$ADM" -a "$proto" "$VIP:$port" -r "$rs:$port" -m
  done
}
