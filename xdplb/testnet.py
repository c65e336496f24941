"""The data-path test network: one veth pair inside a private netns.

The client side (cli0) and the real-server side (srv0) are the two ends, so a
NATed packet coming in on one end leaves through the other; permanent
neighbours make bpf_fib_lookup deterministic. The packet tests and the fuzzer
both run the program through BPF_PROG_TEST_RUN against it.
"""
from . import topology as T

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
    # IPv6: the same roles on the same links
    "cli_ip6": "fd00:1::1", "srv_ip6": "fd00:80::1", "client_ip6": "fd00:1::2",
    "near_rs_ip6": "fd00:1::3",
    "rs6": [("fd00:80::2", "02:00:00:00:02:02"), ("fd00:80::3", "02:00:00:00:02:03"),
            ("fd00:80::4", "02:00:00:00:02:04")],
    "rs6_no_neigh": "fd00:80::9",
    "vip6": "fd00:1::100",
}

NODE = "dp"


def _topology():
    n = TOPO
    cli, srv = n["cli_if"], n["srv_if"]
    neighs = [(n["client_ip"], n["client_mac"], cli), (n["near_rs_ip"], n["near_rs_mac"], cli)]
    neighs += [(addr, mac, srv) for addr, mac in n["rs"] + n["rs6"]]
    neighs += [(n["client_ip6"], n["client_mac"], cli), (n["near_rs_ip6"], n["near_rs_mac"], cli)]
    return T.Topology(
        nodes=(NODE,),
        veths=(T.Veth(T.End(NODE, cli, n["cli_mac"], (n["cli_ip"] + "/24", n["cli_ip6"] + "/64")),
                      T.End(NODE, srv, n["srv_mac"], (n["srv_ip"] + "/24", n["srv_ip6"] + "/64"))),),
        neighbours=tuple(T.Neigh(NODE, dev, addr, mac) for addr, mac, dev in neighs),
        # bpf_fib_lookup only forwards
        sysctls=(T.Sysctl(NODE, "net.ipv4.ip_forward", 1),
                 T.Sysctl(NODE, "net.ipv6.conf.all.forwarding", 1)))


TOPOLOGY = _topology()


def build(prefix):
    """Netns `<prefix>-dp` with TOPO; returns TOPO plus ns, cli_idx, srv_idx.
    The caller deletes ns (also when this raises, it is already gone)."""
    net = T.build(TOPOLOGY, prefix)
    ns = net.ns[NODE]
    try:
        idx = {"cli_idx": ns.ifindex(TOPO["cli_if"]), "srv_idx": ns.ifindex(TOPO["srv_if"])}
    except BaseException:
        net.close()
        raise
    return dict(TOPO, ns=ns, **idx)
