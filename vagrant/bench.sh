#!/usr/bin/env bash
# The benchmark's two lab parts, same commands for kernel IPVS and xdplb:
#
#   bench.sh ipvsadm|xdplbadm       ($BENCH_SECONDS per part, default 5)
#
# - connections per second: HTTP/1.0 GETs from the client to VIP:80 (rr over
#   the three Masq real servers), one TCP connection each, counted by the client;
# - forwarding rate: 64-byte UDP datagrams from the client to VIP:9 (rr, Masq,
#   12 flows), counted where they arrive: the real servers' kernels (Udp
#   InDatagrams + NoPorts in /proc/net/snmp; nothing listens on port 9).
# The client is Python, so on small machines it can be the bottleneck: the
# figures compare the two data paths under the same load, not their maxima.
# Prints `cps N`, `fwd_pps N` and `sent_pps N` lines (the client's own output on stderr).
set -euo pipefail
# shellcheck source=vagrant/lib.sh
. "$(dirname "$0")/lib.sh"
check_adm "${1:-}"
secs=${BENCH_SECONDS:-5}
load=$here/load.py

udp_in() {  # datagrams received by the three real servers' kernels
  local n total=0
  for node in "${RS_NODES[@]}"; do
    # shellcheck disable=SC2016  # an awk program, run on the node
    n=$(on "$node" awk '/^Udp:/ { if (h) { print $2 + $3 + $4; exit } h = 1 }' /proc/net/snmp)
    total=$((total + n))
  done
  echo "$total"
}

use_datapath
add_backends -t 80 rr
out=$(on client python3 "$load" cps "$VIP" 80 "$secs")
note "client: $out"
echo "${out%% ok=*}"

add_backends -u 9 rr
before=$(udp_in)
t0=$(date +%s%N)
out=$(on client python3 "$load" udp "$VIP" 9 "$secs")
sleep 0.2
t1=$(date +%s%N)
after=$(udp_in)
note "client: $out; real servers received $((after - before))"
ns=$((t1 - t0))
echo "fwd_pps $(( (after - before) * 1000000000 / ns ))"
echo "sent_pps $(( ${out#sent } * 1000000000 / ns ))"
on lb "$ADM" -C
