#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 host, run as root by `make demo` / `make test`:
# Debian packages (bcc from python3-bpfcc, never PyPI's unrelated "bcc"), kernel
# headers bcc can compile against, a bpffs mount, and the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "setup: must run as root (XDP, bpffs and netns need it)" >&2; exit 1; }

debs=(python3 python3-venv python3-bpfcc libbpf1 linux-headers-amd64 iproute2 ethtool gcc libc6-dev
      curl iptables nftables kmod procps vagrant shellcheck systemd prometheus)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc needs /lib/modules/$(uname -r)/build. Kernels without their own headers get
# Debian's: XDP programs only use UAPI structures, which are stable across versions.
kdir=/lib/modules/$(uname -r)
if [ ! -e "$kdir/build" ]; then
  hdr=$(find /lib/modules -maxdepth 1 -name '*-amd64' -type d | sort -V | tail -1)
  [ -n "$hdr" ] && [ -e "$hdr/build" ] || { echo "setup: no kernel headers found under /lib/modules" >&2; exit 1; }
  if [ -e "$kdir" ] && [ ! -L "$kdir" ]; then
    ln -sfn "$hdr/build" "$kdir/build"
    ln -sfn "$hdr/source" "$kdir/source" 2>/dev/null || true
  else
    ln -sfn "$hdr" "$kdir"
  fi
  log "linked $kdir to the headers of $(basename "$hdr")"
fi

mountpoint -q /sys/fs/bpf || { mount -t bpf bpf /sys/fs/bpf; log "mounted bpffs on /sys/fs/bpf"; }

py=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  log "creating .venv"
  rm -rf .venv
  "$py" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Only the bcc package from Debian, not all of dist-packages.
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # The test extra for `make test`, the bench extra (matplotlib) for `make bench`
  # and for the benchmark's smoke test, which draws the plots.
  log "installing Python dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
  touch "$stamp"
fi
.venv/bin/python -c 'import bcc, pyroute2, click' || { echo "setup: .venv is incomplete" >&2; exit 1; }
