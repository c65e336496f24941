#!/usr/bin/env bash
# Provisioning of one VM of the Vagrant lab (run as root by Vagrant):
#   provision.sh rs1|rs2|rs3|client|lb
# Every VM: the project copied from the synced folder to /opt/xdplb, the lab
# key, TX checksum offload off on its lab interface (the netns lab does the
# same: XDP NAT rewrites need full checksums). Real servers: the lab's HTTP
# server as a systemd unit. Client: curl and python3. lb: `make setup` (the
# same target a user runs by hand), ipvsadm, forwarding, then the side-by-side
# comparison (vagrant/compare.sh with vagrant/on-vm.sh as the node runner).
set -euo pipefail
role=${1:?usage: provision.sh rs1|rs2|rs3|client|lb}
export DEBIAN_FRONTEND=noninteractive
log() { printf 'xdplb-%s: %s\n' "$role" "$*"; }

ifname_of() { ip -o -4 addr show to "$1" | awk '{print $2; exit}'; }
debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

mkdir -p /opt/xdplb
tar -C /vagrant --exclude=./.venv --exclude=./.git --exclude=./.vagrant -cf - . | tar -C /opt/xdplb -xf -
install -d -m 700 /root/.ssh
if [ -n "${XDPLB_LAB_PUBKEY:-}" ]; then
  touch /root/.ssh/authorized_keys
  grep -qF "$XDPLB_LAB_PUBKEY" /root/.ssh/authorized_keys || echo "$XDPLB_LAB_PUBKEY" >>/root/.ssh/authorized_keys
fi

case $role in
  rs1|rs2|rs3)
    n=${role#rs}
    debs python3 ethtool
    dev=$(ifname_of "172.80.0.$((n + 1))")
    ethtool -K "$dev" tx off >/dev/null
    # replies to the client go back through the lb (Masq); as pods on a node,
    # the VIP and the other real servers are reached through it too (seed
    # 000's pod steps: another real server's answer comes back through the lb)
    routes="10.0.0.0/24 1.2.3.4/32"
    for m in 1 2 3; do [ "$m" = "$n" ] || routes="$routes 172.80.0.$((m + 1))/32"; done
    unit_routes=""
    for r in $routes; do
      ip route replace "$r" via 172.80.0.1 dev "$dev"
      unit_routes+="ExecStartPre=-/usr/sbin/ip route replace $r via 172.80.0.1 dev $dev"$'\n'
    done
    cat >/etc/systemd/system/xdplb-rs.service <<EOS
[Unit]
Description=xdplb lab real server $n ("This is service #$n")
After=network-online.target
[Service]
Environment=PYTHONPATH=/opt/xdplb
ExecStartPre=-/usr/sbin/ethtool -K $dev tx off
${unit_routes}ExecStart=/usr/bin/python3 -m xdplb.httpd $n --port 80 --udp 80 --bind 172.80.0.$((n + 1))
Restart=always
[Install]
WantedBy=multi-user.target
EOS
    systemctl daemon-reload
    systemctl enable --now xdplb-rs.service
    systemctl restart xdplb-rs.service
    log "serving 'This is service #$n' on 172.80.0.$((n + 1)):80 (TCP, UDP)"
    ;;
  client)
    debs curl python3 ethtool
    dev=$(ifname_of 10.0.0.2)
    ethtool -K "$dev" tx off >/dev/null
    ip route replace 1.2.3.4/32 via 10.0.0.1 dev "$dev"
    cat >/etc/systemd/system/xdplb-client.service <<EOS
[Unit]
Description=xdplb lab client: route to the VIP via the lb
After=network-online.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-/usr/sbin/ethtool -K $dev tx off
ExecStart=/usr/sbin/ip route replace 1.2.3.4/32 via 10.0.0.1 dev $dev
[Install]
WantedBy=multi-user.target
EOS
    systemctl daemon-reload
    systemctl enable xdplb-client.service
    log "routes 1.2.3.4 via the lb 10.0.0.1"
    ;;
  lb)
    debs make ipvsadm openssh-client
    if [ -n "${XDPLB_LAB_KEY:-}" ]; then
      printf '%s' "$XDPLB_LAB_KEY" >/root/.ssh/xdplb-lab
      chmod 600 /root/.ssh/xdplb-lab
    fi
    log "make setup (installs xdplb's Debian packages, kernel headers, bpffs, .venv)"
    make -C /opt/xdplb setup
    ln -sfn /opt/xdplb/.venv/bin/xdplb /usr/local/bin/xdplb
    ln -sfn /opt/xdplb/.venv/bin/xdplbadm /usr/local/bin/xdplbadm
    printf 'net.ipv4.ip_forward = 1\n' >/etc/sysctl.d/60-xdplb-lab.conf
    sysctl -q -p /etc/sysctl.d/60-xdplb-lab.conf
    modprobe -a ip_vs ip_vs_rr ip_vs_wrr
    cat >/etc/xdplb-lab.env <<EOS
ON=/opt/xdplb/vagrant/on-vm.sh
LB_CLIENT_IFS=$(ifname_of 10.0.0.1)
LB_RS_IFS=$(ifname_of 172.80.0.1)
LB_IFS="$(ifname_of 10.0.0.1) $(ifname_of 172.80.0.1)"
XDP_MODE=native
EOS
    cat >/usr/local/sbin/xdplb-compare <<'EOS'
#!/bin/sh
# The side-by-side comparison of the Vagrant lab (see /opt/xdplb/vagrant/compare.sh).
set -a
. /etc/xdplb-lab.env
set +a
exec /opt/xdplb/vagrant/compare.sh "$@"
EOS
    chmod 755 /usr/local/sbin/xdplb-compare
    for node in client rs1 rs2 rs3; do
      /opt/xdplb/vagrant/on-vm.sh "$node" true || { log "cannot reach $node over ssh"; exit 1; }
    done
    log "the side-by-side comparison (again: vagrant ssh lb -c 'sudo xdplb-compare')"
    /usr/local/sbin/xdplb-compare 2>&1 | tee /root/xdplb-compare.log
    ;;
  *) echo "provision.sh: unknown role $role" >&2; exit 2 ;;
esac
