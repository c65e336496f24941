#!/bin/bash
# Inside the qemu guest of scripts/qemu-ipvs.sh (started by its PID 1, with
# the repository mounted read-only on /mnt/repo): copy the project, make its
# two commands available from Debian's python3 (the guest image holds
# python3-bpfcc, -click, -pyroute2; it has no network for pip), then run
# `xdplb lab compare --where here`: kernel IPVS and xdplb in the netns lab.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
arg() { sed -n "s/.*xdplb\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
accel=$(arg accel)
bench=$(arg bench)
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }

echo "guest: Debian $(cat /etc/debian_version), kernel $(uname -r), $(nproc) vCPUs, accelerator ${accel:-?}"
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns /run/xdplb
ip link set lo up
modprobe -a ip_vs ip_vs_rr ip_vs_wrr veth
dst=/opt/xdplb
mkdir -p "$dst"
# cp, not tar: tar over this 9p share reports files as removed
find /mnt/repo -mindepth 1 -maxdepth 1 ! -name .venv ! -name .git ! -name .vagrant \
  -exec cp -a {} "$dst/" \;
for cmd in xdplb:xdplb.cli xdplbadm:xdplb.adm; do
  cat >"/usr/local/bin/${cmd%%:*}" <<EOS
#!/bin/sh
PYTHONPATH=$dst exec python3 -c 'import sys; from ${cmd#*:} import main; sys.exit(main())' "\$@"
EOS
  chmod 755 "/usr/local/bin/${cmd%%:*}"
done
export PYTHONPATH=$dst
echo "guest: IPVS $(sed -n 1p /proc/net/ip_vs 2>/dev/null | awk '{print $5}'), ipvsadm $(ipvsadm -v 2>/dev/null | awk '{print $2}'), python $(python3 -V | cut -d' ' -f2), ready after $(ms) ms"
cd "$dst" || exit 1
# under software emulation the benchmark's parts run with their tiny sizes
if [ "$accel" = tcg ]; then export BENCH_ARGS=--quick; fi
XDPLB_ACCEL=$accel xdplb lab compare --where here --bench-seconds "${bench:-5}"
rc=$?
echo "guest: compare finished with status $rc after $(ms) ms in the guest"
exit "$rc"
