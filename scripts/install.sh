#!/usr/bin/env bash
# `make install` / `make uninstall`: xdplb as a system tool, in a virtualenv of
# its own (Debian's pip refuses to install into the system Python), with its
# commands linked into sbin, systemd units, and bash completion.
#
#   scripts/install.sh install|uninstall
#
# Where things go (environment variables, for packagers and the tests):
#   XDPLB_OPT          /opt/xdplb                          the virtualenv
#   XDPLB_SBIN         /usr/local/sbin                     xdplb, xdplbadm
#   XDPLB_UNITDIR      /usr/local/lib/systemd/system       the three units
#   XDPLB_COMPLETIONS  /usr/local/share/bash-completion/completions
# What was installed is listed in $XDPLB_OPT/installed, which uninstall reads.
# /etc/xdplb (written by `xdplb save`) is the administrator's: uninstall keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

OPT=${XDPLB_OPT:-/opt/xdplb}
SBIN=${XDPLB_SBIN:-/usr/local/sbin}
UNITDIR=${XDPLB_UNITDIR:-/usr/local/lib/systemd/system}
COMPLETIONS=${XDPLB_COMPLETIONS:-/usr/local/share/bash-completion/completions}
UNITS=(xdplb.service xdplb-daemon.service xdplb-exporter.service)

log() { printf 'install: %s\n' "$*"; }

# systemd reads units only when told to; not when installing into a test root.
reload_systemd() {
  if [ -d /run/systemd/system ] && [ "$UNITDIR" = /usr/local/lib/systemd/system ]; then
    systemctl daemon-reload
  fi
}

install() {
  [ -e "$OPT" ] && [ ! -f "$OPT/installed" ] && {
    echo "install: $OPT exists and is not an xdplb installation: not touching it" >&2; exit 1; }
  rm -rf "$OPT"
  log "creating the virtualenv $OPT"
  /usr/bin/python3 -m venv "$OPT"
  site=$("$OPT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # Only Debian's bcc (python3-bpfcc), as scripts/setup.sh links it for .venv.
  ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
  # pip builds in the source tree: build from a copy so the checkout stays clean.
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp -r pyproject.toml README.md xdplb bpf "$src/"
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  log "installing xdplb into $OPT"
  "$OPT/bin/pip" install -q --disable-pip-version-check "$src"
  installed=()
  mkdir -p "$SBIN" "$UNITDIR" "$COMPLETIONS"
  for cmd in xdplb xdplbadm; do
    ln -sfn "$OPT/bin/$cmd" "$SBIN/$cmd"
    installed+=("$SBIN/$cmd")
  done
  for unit in "${UNITS[@]}"; do
    sed "s|@SBIN@|$SBIN|g" "scripts/systemd/$unit" > "$UNITDIR/$unit"
    chmod 0644 "$UNITDIR/$unit"
    installed+=("$UNITDIR/$unit")
  done
  _XDPLB_COMPLETE=bash_source "$OPT/bin/xdplb" > "$COMPLETIONS/xdplb"
  installed+=("$COMPLETIONS/xdplb")
  printf '%s\n' "${installed[@]}" > "$OPT/installed"
  reload_systemd
  log "installed: $OPT, ${installed[*]}"
  log "next: xdplb attach IFNAME; xdplbadm ...; xdplb save;" \
      "systemctl enable --now ${UNITS[*]}"
}

uninstall() {
  if [ ! -f "$OPT/installed" ]; then
    echo "install: no xdplb installation in $OPT" >&2
    exit 1
  fi
  while read -r path; do
    rm -f "$path"
  done < "$OPT/installed"
  rm -rf "$OPT"
  reload_systemd
  log "removed $OPT and what it listed (kept /etc/xdplb)"
}

case "${1:-}" in
  install) install ;;
  uninstall) uninstall ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
