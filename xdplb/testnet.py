"""The data-path test network: one veth pair inside a private netns.

The client side (cli0) and the real-server side (srv0) are the two ends, so a
NATed packet coming in on one end leaves through the other; permanent
neighbours make bpf_fib_lookup deterministic. The packet tests and the fuzzer
both run the program through BPF_PROG_TEST_RUN against it.
"""
import socket

from .netns import NetNs

TOPO = {
    "cli_if": "cli0", "cli_mac": "02:00:00:00:01:01", "cli_ip": "10.0.0.1",
    "srv_if": "srv0", "srv_mac": "02:00:00:00:02:01", "srv_ip": "172.80.0.1",
    "client_ip": "10.0.0.2", "client_mac": "02:00:00:00:01:02",
    # a real server on the client-facing link: egress == ingress -> XDP_TX
    "near_rs_ip": "10.0.0.3", "near_rs_mac": "02:00:00:00:01:03",
    "rs": [("172.80.0.2", "02:00:00:00:02:02"), ("172.80.0.3", "02:00:00:00:02:03"),
           ("172.80.0.4", "02:00:00:00:02:04")],
    "rs_no_neigh": "172.80.0.9",	# on-link, no neighbour entry
    "rs_no_route": "192.0.2.1",	# no route at all
    "vip": "10.0.0.100",
}


def build(name):
    """Create netns `name` with TOPO; returns TOPO plus ns, cli_idx, srv_idx.
    The caller deletes ns (also when this raises, it is already gone)."""
    n = TOPO
    ns = NetNs(name)
    try:
        ns.ip("link", "set", "lo", "up")
        ns.ip("link", "add", n["cli_if"], "address", n["cli_mac"], "type", "veth",
              "peer", "name", n["srv_if"], "address", n["srv_mac"])
        ns.ip("addr", "add", n["cli_ip"] + "/24", "dev", n["cli_if"])
        ns.ip("addr", "add", n["srv_ip"] + "/24", "dev", n["srv_if"])
        ns.ip("link", "set", n["cli_if"], "up")
        ns.ip("link", "set", n["srv_if"], "up")
        ns.sysctl("net.ipv4.ip_forward=1")  # bpf_fib_lookup only forwards
        neighs = [(n["client_ip"], n["client_mac"], n["cli_if"]),
                  (n["near_rs_ip"], n["near_rs_mac"], n["cli_if"])]
        neighs += [(addr, mac, n["srv_if"]) for addr, mac in n["rs"]]
        for addr, mac, dev in neighs:
            ns.ip("neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
        with ns.entered():
            idx = {"cli_idx": socket.if_nametoindex(n["cli_if"]),
                   "srv_idx": socket.if_nametoindex(n["srv_if"])}
    except BaseException:
        ns.delete()
        raise
    return dict(n, ns=ns, **idx)
