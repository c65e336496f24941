#!/usr/bin/env bash
# Runner for the scenario scripts on the Vagrant lab, run as root on the lb VM:
#   on-vm.sh NODE CMD...   runs CMD locally for lb, else as root over ssh on the
# node's lab address (the key is the lab key the Vagrantfile provisions).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: on-vm.sh NODE CMD..." >&2; exit 2; }
node=$1
shift
case $node in
  lb) exec "$@" ;;
  client) addr=10.0.0.2 ;;
  rs1) addr=172.80.0.2 ;;
  rs2) addr=172.80.0.3 ;;
  rs3) addr=172.80.0.4 ;;
  *) echo "on-vm.sh: no node $node (client, lb, rs1, rs2, rs3)" >&2; exit 2 ;;
esac
exec ssh -q -i /root/.ssh/xdplb-lab -o BatchMode=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 "root@$addr" "$(printf '%q ' "$@")"
