#!/usr/bin/env bash
# The seed-000 scenario (rr over three Masq real servers, then wrr with the
# first one at weight 3), with the same commands for kernel IPVS and xdplb:
#
#   scenario.sh ipvsadm|xdplbadm
#
# Then, for xdplbadm and unless PODS=0, the seed's last steps as `xdplb lab
# demo` runs them (xdplb/demo.py, docs/seed-demo.md): rs1 (pod1, back at
# weight 1) calls the VIP with xdplb on the clients' side only ($LB_CLIENT_IFS:
# no answers), then on the pods' side too ($LB_RS_IFS: #3 #2 <none>, twice:
# its own turn is a martian), then with --hairpin (#3 #2 #1, twice). Kernel
# IPVS has no hairpin of its own (kube-proxy adds iptables masquerading), so
# ipvsadm stops after wrr.
#
# Nodes are reached through $ON NODE CMD... : vagrant/on-netns.sh (default) on
# the one-host netns lab (`xdplb lab up`; also inside the qemu guest),
# vagrant/on-vm.sh on the Vagrant lab. $LB_IFS are the lb's interfaces for
# xdplb. The log goes to stdout; exit status 1 if the answers differ from the
# seed's (rr: #3 #2 #1 #3 #2 #1, wrr: #1 #1 #3 #2 #1 #1, and the pods' steps).
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "$(dirname "$0")/lib.sh"
check_adm "${1:-}"

got=()
# Kernel IPVS folds its per-CPU counters into what it lists every 2 seconds
# (its rate estimator): wait that long before listing counters, for both.
stats() {
  sleep "${STATS_WAIT:-2.5}"
  on lb "$ADM" -L -n --stats
}
# six requests from node $1 (default: the client), answers or blank lines
traffic() {
  local body node=${1:-client} what="Host" timeout=5
  [ "$node" = client ] || { what="Pod"; timeout=2; }
  info "Generating HTTP traffic ($what to IPVS Service)"
  for _ in 1 2 3 4 5 6; do
    body=$(on "$node" curl -s --max-time "$timeout" "http://$VIP/" || true)
    echo "$body"
    if [ -n "$body" ]; then got+=("${body##* }"); else got+=("-"); fi
  done
}

use_datapath
info "Using Round Robin scheduling algorithm"
add_backends -t 80 rr
echo
traffic
stats
echo
info "Increase pod1 weight"
on lb "$ADM" -e -t "$SVC" -r "${RSS[0]}:80" -m -w 3
on lb "$ADM" -E -t "$SVC" -s wrr
on lb "$ADM" -L -n
echo
info "Using Weighted Round Robin scheduling algorithm"
echo
traffic
stats
echo
want="#3 #2 #1 #3 #2 #1 #1 #1 #3 #2 #1 #1"

if [ "$ADM" = xdplbadm ] && [ "${PODS:-1}" = 1 ]; then
  # shellcheck disable=SC2086  # LB_*_IFS are lists of interface names
  {
    info "Validating communication between Pod and ClusterIP"
    on lb "$ADM" -e -t "$SVC" -r "${RSS[0]}:80" -m -w 1
    on lb xdplb detach $LB_RS_IFS >/dev/null
    echo "lab: xdplb on the clients' side only ($LB_CLIENT_IFS), detached from the pods' ($LB_RS_IFS); pod1 (rs1) back to weight 1"
    echo
    traffic rs1
    stats
    echo
    info "Creating IPVS dummy interface"
    on lb xdplb attach --mode "$XDP_MODE_USED" $LB_RS_IFS >/dev/null
    echo "lab: xdplb attached to the pods' side too ($LB_RS_IFS): the VIP $VIP answers there"
    echo
    traffic rs1
    stats
    echo
    info "Enabling Hairpin connections"
    on lb "$ADM" -E -t "$SVC" -s wrr --hairpin
    echo
    traffic rs1
    stats
    echo
  }
  want="$want - - - - - - #3 #2 - #3 #2 - #3 #2 #1 #3 #2 #1"
fi
on lb "$ADM" -C

if [ "${got[*]}" = "$want" ]; then
  info "$ADM: every answer as in seed 000"
else
  info "$ADM: answers ${got[*]}, seed 000 has $want"
  exit 1
fi
