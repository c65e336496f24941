#!/usr/bin/env bash
# Kernel IPVS on any Linux box: boot Debian 12's stock kernel (IPVS as modules)
# under qemu and run the side-by-side comparison (kernel IPVS with ipvsadm,
# then xdplb with xdplbadm, same scenario) inside it.
#
#   scripts/qemu-ipvs.sh [--accel auto|kvm|tcg] [--bench-seconds N] [--rebuild]
#                        [--build-only] [--keep-log FILE]
#
# KVM is used when /dev/kvm works, software emulation (TCG) otherwise; under TCG
# the timings are printed with a warning that only their ratios mean anything.
#
# The guest's root file system is built once from Debian packages (debootstrap
# + apt from this host's Debian mirror) and cached in $XDPLB_QEMU_CACHE
# (default /var/cache/xdplb-qemu: root.img, vmlinuz, initrd.img, about 2 GB;
# `rm -rf /var/cache/xdplb-qemu` removes it). Every boot runs with -snapshot,
# so the cached image is never written. The repository reaches the guest as a
# read-only 9p share; the guest copies it (without .venv and .git) and runs
# `xdplb lab compare --here` with Debian's python3-bpfcc, -click, -pyroute2.
# Runs as root (debootstrap, chroot, mke2fs -d).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${XDPLB_QEMU_CACHE:-/var/cache/xdplb-qemu}
SUITE=bookworm
# Everything the guest needs; nothing is installed in the guest at run time
# (it has no network).
GUEST_PKGS=(linux-image-amd64 linux-headers-amd64 initramfs-tools kmod udev
            ipvsadm iproute2 ethtool curl procps util-linux mawk
            python3 python3-bpfcc libbpf1 python3-click python3-pyroute2
            python3-prometheus-client gcc libc6-dev nftables iptables python3-matplotlib)
IMG_VERSION="5 ${GUEST_PKGS[*]}"   # bump to rebuild the cached image

accel=auto rebuild=0 build_only=0 keep_log='' bench=5
while [ $# -gt 0 ]; do
  case $1 in
    --accel) accel=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    --bench-seconds) bench=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --keep-log) keep_log=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "qemu-ipvs: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $accel in auto|kvm|tcg) ;; *) echo "qemu-ipvs: --accel auto|kvm|tcg" >&2; exit 2 ;; esac

log() { printf 'qemu-ipvs: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { echo "qemu-ipvs: must run as root (debootstrap, chroot)" >&2; exit 1; }

# host tools -------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mirror() {  # the host's Debian mirror, else deb.debian.org
  local m=
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# the cached guest image -----------------------------------------------------------
build_image() {
  local tmp root m kver
  m=$(mirror)
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/build.XXXXXX")
  root=$tmp/root
  # shellcheck disable=SC2064  # expand now: the trap must clean this build's dir
  trap "for d in dev/pts dev sys proc; do umount -l '$root'/\$d 2>/dev/null || true; done; rm -rf '$tmp'" EXIT
  log "building the guest image from $m ($SUITE) in $tmp (once; cached in $CACHE)"
  debootstrap --variant=minbase "$SUITE" "$root" "$m" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
  cat >"$root/etc/apt/sources.list" <<EOF
deb $m $SUITE main
deb $m $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  if [ -r /etc/apt/sources.list.d/debian.sources ] && grep -q "$SUITE" /etc/apt/sources.list.d/debian.sources; then
    rm "$root/etc/apt/sources.list"   # same suites as this host: use its sources
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  fi
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  mount -t sysfs sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  log "installing into the guest image: ${GUEST_PKGS[*]}"
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${GUEST_PKGS[*]}" \
    >"$tmp/apt.log" 2>&1 || { tail -30 "$tmp/apt.log" >&2; exit 1; }
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  for d in dev/pts dev sys proc; do umount "$root/$d"; done
  echo "xdplb-qemu" >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  # PID 1 of the guest: mount the basics and the repository, run its guest script.
  cat >"$root/usr/local/sbin/xdplb-guest-init" <<'EOF'
#!/bin/sh
# PID 1 of the xdplb qemu guest (scripts/qemu-ipvs.sh): mounts, then the
# repository's scripts/qemu/guest.sh from the read-only 9p share "xdplbrepo".
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -o remount,rw /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /mnt/repo
modprobe 9pnet_virtio
if mount -t 9p -o trans=virtio,version=9p2000.L,ro xdplbrepo /mnt/repo && [ -r /mnt/repo/scripts/qemu/guest.sh ]; then
  /bin/bash /mnt/repo/scripts/qemu/guest.sh
  echo "XDPLB-GUEST-RC=$?"
else
  echo "XDPLB-GUEST-RC=99 (no repository share)"
fi
sync
echo o >/proc/sysrq-trigger
while :; do :; done   # PID 1 must not exit while the power-off runs
EOF
  chmod 755 "$root/usr/local/sbin/xdplb-guest-init"
  kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
  cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
  log "making the ext4 image (mke2fs -d)"
  mke2fs -q -t ext4 -L xdplbroot -d "$root" "$tmp/root.img" 3G >/dev/null
  mv "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/root.img" "$CACHE/"
  echo "$kver" >"$CACHE/kernel"
  echo "$IMG_VERSION" >"$CACHE/version"
  rm -rf "$tmp"
  trap - EXIT
  log "guest image ready: $CACHE/root.img (kernel $(cat "$CACHE/kernel"))"
}

if [ "$rebuild" = 1 ] || [ ! -s "$CACHE/root.img" ] || [ ! -s "$CACHE/vmlinuz" ] \
   || [ "$(cat "$CACHE/version" 2>/dev/null)" != "$IMG_VERSION" ]; then
  t0=$(date +%s)
  build_image
  log "image built in $(( $(date +%s) - t0 ))s"
fi
[ "$build_only" = 1 ] && exit 0

# accelerator ------------------------------------------------------------------------
kvm_works() {  # boot the guest kernel with no root under KVM: it must reach its panic
  [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
  local probe rc=1
  probe=$(mktemp "${TMPDIR:-/tmp}/qemu-ipvs-kvmprobe.XXXXXX")
  # (in a subshell that does not exec it, so a qemu that aborts goes unreported)
  (timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-reboot \
    -display none -monitor none -serial "file:$probe" -kernel "$CACHE/vmlinuz" \
    -append "console=ttyS0 panic=-1 root=/dev/xdplb-no-root"; true) >/dev/null 2>&1
  grep -q "Kernel panic" "$probe" && rc=0
  rm -f "$probe"
  return $rc
}
if [ "$accel" = auto ]; then
  if kvm_works; then accel=kvm; else accel=tcg; fi
fi
if [ "$accel" = kvm ]; then
  accel_args=(-accel kvm -cpu host)
else
  accel_args=(-accel 'tcg,thread=multi' -cpu max)
fi

# boot ------------------------------------------------------------------------------
out=$(mktemp "${TMPDIR:-/tmp}/qemu-ipvs.XXXXXX.log")
pidfile=$(mktemp -u "${TMPDIR:-/tmp}/qemu-ipvs.XXXXXX.pid")
qpid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  if [ -n "$keep_log" ]; then cp "$out" "$keep_log"; fi
  rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "booting Debian's $(cat "$CACHE/kernel") under qemu ($accel), 2 vCPUs, 2 GiB; repository $repo shared read-only"
[ "$accel" = tcg ] && log "no working KVM: software emulation (TCG) - slow, and timings only mean something as ratios"
t0=$(date +%s)
qemu-system-x86_64 "${accel_args[@]}" -m 2048 -smp 2 -nodefaults -no-reboot \
  -display none -monitor none -serial "file:$out" -pidfile "$pidfile" \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/usr/local/sbin/xdplb-guest-init quiet loglevel=3 panic=-1 xdplb.accel=$accel xdplb.bench=$bench" \
  -drive "file=$CACHE/root.img,format=raw,if=virtio,snapshot=on" \
  -virtfs "local,path=$repo,mount_tag=xdplbrepo,security_model=none,readonly=on,id=repo" \
  -device virtio-rng-pci -daemonize
qpid=$(cat "$pidfile")
# stream the guest console; the guest powers off when done (time limit: 40 min)
# (up to the guest's result line: what follows is its power-off)
tail -n +1 -f --pid="$qpid" "$out" 2>/dev/null | sed -u -e 's/\r$//' -e '/^XDPLB-GUEST-RC=/q' &
tailpid=$!
deadline=$(( $(date +%s) + ${XDPLB_QEMU_TIMEOUT:-2400} ))
while kill -0 "$qpid" 2>/dev/null; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    log "the guest did not finish in time: stopping qemu (pid $qpid)"
    kill "$qpid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$tailpid" 2>/dev/null || true
qpid=
log "qemu ran $(( $(date +%s) - t0 ))s ($accel)"
rc=$(tr -d '\r' <"$out" | sed -n 's/^XDPLB-GUEST-RC=\([0-9]*\).*/\1/p' | tail -1)
[ -n "$rc" ] || { log "the guest gave no result (see the console above)"; rc=1; }
exit "$rc"
