"""Equivalent rule sets for N services x D destinations: kube-proxy-style
iptables (iptables-restore input), nftables DNAT, and ipvsadm/xdplbadm -R.

kube-proxy's iptables mode, as it writes it: every packet of the FORWARD
chain goes through KUBE-FORWARD; a new connection walks the nat table's
KUBE-SERVICES (one rule per service, matched in order), jumps to the
service's KUBE-SVC-* chain (statistic-mode random rules, one per endpoint)
and to a KUBE-SEP-* chain that marks hairpin traffic for masquerade and DNATs.
"""
import hashlib


def vip(i):
    """Service i's address in 10.100.0.0/14 (i >= 1; the benchmark's own VIP,
    10.96.0.10, is outside it)."""
    return f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def endpoint(i, j):
    """Destination j of service i in 10.128.0.0/9 (never routed: rules only)."""
    n = i * 16 + j
    return f"10.{128 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def _chain(prefix, *parts):
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16].upper()
    return f"{prefix}-{h}"


def services(n, dests, target=None):
    """[(vip, [(addr, port)])] for n services; `target`, if given, is
    (index, vip, [(addr, port)]) placed at that position instead."""
    out = []
    for i in range(1, n + 1):
        out.append((vip(i), [(endpoint(i, j), 8080) for j in range(dests)]))
    if target is not None:
        idx, tvip, tdests = target
        out[min(idx, n - 1)] = (tvip, tdests)
    return out


def iptables_restore(svcs, proto="tcp", port=80):
    """iptables-restore text of kube-proxy-style chains for svcs."""
    f = ["*filter", ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]",
         '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
         '-A FORWARD -m conntrack --ctstate NEW -m comment --comment '
         '"kubernetes service portals" -j KUBE-SERVICES',
         "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
         "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
         "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
         "COMMIT"]
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    rules = ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
             '-j KUBE-POSTROUTING',
             "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
             "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
             "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
             "-A KUBE-POSTROUTING -j MASQUERADE --random-fully"]
    for si, (v, dests) in enumerate(svcs):
        svc = _chain("KUBE-SVC", v, port, proto)
        chains.append(f":{svc} - [0:0]")
        rules.append(f'-A KUBE-SERVICES -d {v}/32 -p {proto} -m comment --comment '
                     f'"ns/svc{si}:p cluster IP" -m {proto} --dport {port} -j {svc}')
        for j, (addr, rport) in enumerate(dests):
            sep = _chain("KUBE-SEP", v, addr, rport)
            chains.append(f":{sep} - [0:0]")
            left = len(dests) - j
            stat = (f" -m statistic --mode random --probability {1 / left:.11f}"
                    if left > 1 else "")
            rules.append(f"-A {svc} -m comment --comment \"ns/svc{si}:p -> {addr}:{rport}\""
                         f"{stat} -j {sep}")
            rules.append(f"-A {sep} -s {addr}/32 -j KUBE-MARK-MASQ")
            rules.append(f"-A {sep} -p {proto} -m {proto} -j DNAT --to-destination "
                         f"{addr}:{rport}")
    return "\n".join(f + ["*nat"] + chains + rules + ["COMMIT", ""])


def nft_dnat(svcs, proto="udp", port=80):
    """nft -f text: one DNAT through a map keyed by daddr . dport (first dest)."""
    elems = ", ".join(f"{v} . {port} : {d[0][0]} . {d[0][1]}" for v, d in svcs)
    return (f"table ip xbench {{\n"
            f"  map svc {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; "
            f"elements = {{ {elems} }} }}\n"
            f"  chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n"
            f"    dnat ip to ip daddr . {proto} dport map @svc\n  }}\n}}\n")


def ipvsadm_restore(svcs, proto_flag="-t", port=80, sched="rr", fwd="-m", weights=None):
    """ipvsadm -R / xdplbadm -R input; weights(j): destination j's weight (1)."""
    out = []
    for v, dests in svcs:
        out.append(f"-A {proto_flag} {v}:{port} -s {sched}")
        for j, (addr, rport) in enumerate(dests):
            w = weights(j) if weights else 1
            out.append(f"-a {proto_flag} {v}:{port} -r {addr}:{rport} {fwd} -w {w}")
    return "\n".join(out) + "\n"
