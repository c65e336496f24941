"""Network topologies as data, built and removed by one pair of functions.

The lab (xdplb/lab.py), the data-path test network (xdplb/testnet.py), the
benchmark's client/balancer/server and the tests' throwaway namespaces are
each a Topology: nodes (one namespace each, named <prefix>-<node>), veth
pairs with their addresses, bridges (a switch joining veth ends), routes,
permanent neighbours and sysctls.
build() makes one and returns a Net, whose close() deletes what it made (build
does that itself when it fails half way); remove() deletes a topology's
namespaces by name, from any process, whatever is left of them.
"""
from dataclasses import dataclass

from .netns import NetNs, NetnsError


@dataclass(frozen=True)
class End:
    """One end of a veth pair: node, device, MAC (None: the kernel picks one),
    addresses ("10.0.0.1/24"), and whether the other end runs XDP (then this
    end gets the lab's veth settings, NetNs.face_xdp: GRO on, TX checksum off)
    and whether that XDP sends frames back out to this end (XDP_TX: this end
    then runs an XDP_PASS program, NetNs.xdp_pass, or they never arrive)."""
    node: str
    dev: str
    mac: str | None = None
    addrs: tuple[str, ...] = ()
    faces_xdp: bool = False
    gets_xdp_tx: bool = False


@dataclass(frozen=True)
class Veth:
    a: End
    b: End


@dataclass(frozen=True)
class Bridge:
    """A bridge in node, made of veth ends of that node (its ports): one L2
    segment for several namespaces, as a switch joins hosts."""
    node: str
    dev: str
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    node: str
    dst: str                 # "default" or a prefix
    via: str | None = None
    dev: str | None = None
    onlink: bool = False


@dataclass(frozen=True)
class Neigh:
    """A permanent neighbour (bpf_fib_lookup needs one to forward)."""
    node: str
    dev: str
    addr: str
    mac: str


@dataclass(frozen=True)
class Sysctl:
    node: str
    key: str                 # "net.ipv4.ip_forward"
    value: str | int


@dataclass(frozen=True)
class Topology:
    nodes: tuple[str, ...]
    veths: tuple[Veth, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neigh, ...] = ()
    sysctls: tuple[Sysctl, ...] = ()

    def ns_name(self, prefix, node):
        if node not in self.nodes:
            raise NetnsError(f"no node {node!r} (nodes: {', '.join(self.nodes)})")
        return f"{prefix}-{node}"


class Net:
    """A built topology: .ns[node] is its NetNs; close() deletes them all."""

    def __init__(self, topo, prefix):
        self.topo, self.prefix = topo, prefix
        self.ns = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        namespaces, self.ns = list(self.ns.values()), {}
        _delete(namespaces)


def build(topo, prefix):
    """Create topo's namespaces <prefix>-<node> and everything in them; a
    Net. On any failure what was made is removed before the error propagates."""
    net = Net(topo, prefix)
    try:
        for node in topo.nodes:
            net.ns[node] = NetNs.create(topo.ns_name(prefix, node))
            net.ns[node].link_up("lo")
        for v in topo.veths:
            peer_ns = net.ns[v.b.node] if v.b.node != v.a.node else None
            net.ns[v.a.node].add_veth(v.a.dev, v.b.dev, v.a.mac, v.b.mac, peer_ns)
        for s in topo.sysctls:
            net.ns[s.node].sysctl(s.key, s.value)
        for end in (e for v in topo.veths for e in (v.a, v.b)):
            ns = net.ns[end.node]
            for cidr in end.addrs:
                ns.addr("add", end.dev, cidr)
            ns.link_up(end.dev)
            if end.faces_xdp:
                ns.face_xdp(end.dev)
            if end.gets_xdp_tx:
                ns.xdp_pass(end.dev)
        for b in topo.bridges:
            net.ns[b.node].add_bridge(b.dev, b.ports)
        for r in topo.routes:
            net.ns[r.node].route("add", r.dst, r.via, r.dev, r.onlink)
        for n in topo.neighbours:
            net.ns[n.node].neigh_permanent(n.dev, n.addr, n.mac)
    except BaseException:
        net.close()
        raise
    return net


def remove(topo, prefix):
    """Delete every namespace of topo under prefix that exists, built by this
    process or another; the names removed."""
    namespaces = (NetNs(topo.ns_name(prefix, node)) for node in topo.nodes)
    return _delete([ns for ns in namespaces if ns.exists()])


def _delete(namespaces):
    """Delete each namespace (its links go with it), all of them even if one
    fails, then raise the first failure; the names removed."""
    removed, errors = [], []
    for ns in namespaces:
        try:
            ns.delete()
            removed.append(ns.name)
        except NetnsError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    return removed
