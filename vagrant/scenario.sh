#!/usr/bin/env bash
# The seed-000 scenario (rr over three Masq real servers, then wrr with the
# first one at weight 3), with the same commands for kernel IPVS and xdplb:
#
#   scenario.sh ipvsadm|xdplbadm
#
# Nodes are reached through $ON NODE CMD... : vagrant/on-netns.sh (default) on
# the one-host netns lab (`xdplb lab up`; also inside the qemu guest),
# vagrant/on-vm.sh on the Vagrant lab. $LB_IFS are the lb's interfaces for
# xdplb. The log goes to stdout; exit status 1 if the answers differ from the
# seed's (rr: #3 #2 #1 #3 #2 #1, wrr: #1 #1 #3 #2 #1 #1).
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
traffic() {
  local body
  info "Generating HTTP traffic (Host to IPVS Service)"
  for _ in 1 2 3 4 5 6; do
    body=$(on client curl -s --max-time 5 "http://$VIP/" || true)
    echo "$body"
    got+=("${body##* }")
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
on lb "$ADM" -C

want="#3 #2 #1 #3 #2 #1 #1 #1 #3 #2 #1 #1"
if [ "${got[*]}" = "$want" ]; then
  info "$ADM: every answer as in seed 000"
else
  info "$ADM: answers ${got[*]}, seed 000 has $want"
  exit 1
fi
