#!/usr/bin/env bash
# Side by side: the seed-000 scenario through kernel IPVS (ipvsadm), then
# through xdplb (xdplbadm), the two logs and listings next to each other, then
# the benchmark's lab parts (connections per second, forwarding rate) for both.
#
#   compare.sh            on the Vagrant lab's lb VM: ON=vagrant/on-vm.sh
#                         (`vagrant ssh lb -c 'sudo /opt/xdplb/vagrant/compare.sh'`)
#
# `xdplb lab compare` runs it on the one-host netns lab (ON=vagrant/on-netns.sh),
# locally when the kernel has IPVS, else inside qemu (scripts/qemu-ipvs.sh).
# Env: ON, LB_IFS, XDP_MODE (see lib.sh), BENCH_SECONDS (default 5; 0 skips both
# benchmarks), BENCH_PARTS (parts of `xdplb bench`, default fwd,cps; none skips
# them), BENCH_ARGS (more `xdplb bench` options, e.g. --quick), COMPARE_LOGS
# (folder to keep the logs in), XDPLB_ACCEL=tcg adds the software-emulation
# warning.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=${COMPARE_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/ipvs-compare.XXXXXX")}
mkdir -p "$logs"
rc=0

for adm in ipvsadm xdplbadm; do
  echo "### $adm: the seed-000 scenario" >&2
  start=$(date +%s%N)
  PODS=0 "$here/scenario.sh" "$adm" >"$logs/$adm.log" || rc=1
  echo "$(( ($(date +%s%N) - start) / 1000000 ))" >"$logs/$adm.ms"
done

side_by_side() {  # two files in two columns, the left one as wide as its widest line
  awk -v left="$1" -v right="$2" -v lt="$3" -v rt="$4" '
    function rule(w) { s = ""; for (k = 0; k < w; k++) s = s "-"; return s }
    BEGIN {
      n = 0; while ((getline line < left) > 0) { a[++n] = line; if (length(line) > w) w = length(line) }
      m = 0; while ((getline line < right) > 0) b[++m] = line
      if (length(lt) > w) w = length(lt)
      w += 2
      printf "%-" w "s| %s\n", lt, rt
      printf "%s+%s\n", rule(w), rule(w)
      for (i = 1; i <= (n > m ? n : m); i++) {
        mark = (a[i] == b[i] || (a[i] ~ /^[0-9:]+ - INFO/ && b[i] ~ /^[0-9:]+ - INFO/)) ? "|" : "*"
        printf "%-" w "s%s %s\n", a[i], mark, b[i]
      }
    }'
}

echo
echo "=== seed-000 scenario, same commands: kernel IPVS (left) | xdplb (right); '*' marks lines that differ"
side_by_side "$logs/ipvsadm.log" "$logs/xdplbadm.log" \
  "ipvsadm ($(cat "$logs/ipvsadm.ms") ms)" "xdplbadm ($(cat "$logs/xdplbadm.ms") ms)"
answers() { grep -o 'This is service #[0-9]' "$1" | awk '{printf "%s ", $4}'; }
listings() { grep -v -e '^[0-9:]* - INFO' -e '^This is service' "$1"; }
echo
echo "answers, kernel IPVS: $(answers "$logs/ipvsadm.log")"
echo "answers, xdplb:       $(answers "$logs/xdplbadm.log")"
if [ "$(answers "$logs/ipvsadm.log")" = "$(answers "$logs/xdplbadm.log")" ]; then
  echo "same answers in the same order: yes"
else
  echo "same answers in the same order: NO"; rc=1
fi
if diff -q <(listings "$logs/ipvsadm.log") <(listings "$logs/xdplbadm.log") >/dev/null; then
  echo "listings byte for byte the same: yes"
else
  echo "listings byte for byte the same: no (the lines marked '*' above)"
fi

# The seed's pod steps (pod to ClusterIP, dummy interface, hairpin) run through
# xdplb alone: kernel IPVS has no hairpin of its own (kube-proxy adds iptables
# masquerading for it), so there is nothing to set beside them.
echo
echo "=== seed 000 to its end through xdplb: pod to ClusterIP, dummy interface, hairpin"
"$here/scenario.sh" xdplbadm >"$logs/pods.log" || rc=1
sed -n '/Validating communication between Pod and ClusterIP/,$p' "$logs/pods.log"

secs=${BENCH_SECONDS:-5}
if [ "$secs" != 0 ]; then
  for adm in ipvsadm xdplbadm; do
    echo "### $adm: benchmark, ${secs}s per part" >&2
    "$here/bench.sh" "$adm" >"$logs/$adm.bench" || { echo "bench.sh $adm failed" >&2; rc=1; }
  done
  val() { awk -v k="$2" '$1 == k {print $2; exit}' "$1"; }
  row() {  # label key
    local i x r
    i=$(val "$logs/ipvsadm.bench" "$2"); x=$(val "$logs/xdplbadm.bench" "$2")
    r=$(awk -v i="${i:-0}" -v x="${x:-0}" 'BEGIN { if (i > 0) printf "%.2fx", x / i; else print "-" }')
    printf '%-44s %14s %14s %10s\n' "$1" "${i:--}" "${x:--}" "$r"
  }
  echo
  echo "=== benchmark, lab traffic through the lb (${secs}s each)"
  printf '%-44s %14s %14s %10s\n' "part" "kernel IPVS" "xdplb" "xdplb/IPVS"
  row "connections per second (HTTP, rr, Masq)" cps
  row "forwarded packets per second (UDP, Masq)" fwd_pps
  row "  (client sending rate, packets per second)" sent_pps
  echo "The client and the real servers share this machine's CPUs with the lb, and the"
  echo "client is Python: the rows compare the two data paths under one load, not maxima."
  if [ "${XDPLB_ACCEL:-}" = tcg ]; then
    echo "WARNING: measured under software emulation (qemu TCG): absolute figures mean"
    echo "nothing; only the ratio between kernel IPVS and xdplb does."
  fi
fi
# The benchmark's own forwarding-rate and connections-per-second parts: every
# variant (xdplb, kernel IPVS where the kernel has it, nftables, iptables,
# plain forwarding) in its own namespaces on the machine running this script.
parts=${BENCH_PARTS:-fwd,cps}
if [ "$secs" != 0 ] && [ "$parts" != none ]; then
  if xdplb bench --help >/dev/null 2>&1; then
    echo
    echo "=== xdplb bench --parts $parts ${BENCH_ARGS:-} (the benchmark's parts, IPVS and xdplb rows)"
    # shellcheck disable=SC2086  # BENCH_ARGS: extra options, word-split on purpose
    xdplb bench --parts "$parts" ${BENCH_ARGS:-} --out "$logs/bench" || { echo "xdplb bench failed" >&2; rc=1; }
    if [ "${XDPLB_ACCEL:-}" = tcg ]; then
      echo "WARNING: measured under software emulation (qemu TCG): only the ratios between rows mean anything."
    fi
  else
    echo "(xdplb bench is not available here: the benchmark's parts are skipped)" >&2
  fi
fi
[ -n "${COMPARE_LOGS:-}" ] || rm -rf "$logs"
exit "$rc"
