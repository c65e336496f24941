"""The configuration the fuzzer writes into the maps and the oracle models:
services and destinations of both families, Tunnel's parameters, full-NAT's
local addresses, the slots they take."""
import socket

from xdplb import structs as S
from xdplb import testnet

from .wire import V4, V6

IPIP, GUE = S.IP_VS_CONN_F_TUNNEL_TYPE_IPIP, S.IP_VS_CONN_F_TUNNEL_TYPE_GUE
# Tunnel destinations (dest slot -> tun_type, tun_port, tun_flags): GUE with
# the outer UDP checksum and without, ipip; one without a neighbour entry.
TUNNELS = {13: (GUE, 6080, S.IP_VS_TUNNEL_ENCAP_FLAG_CSUM), 22: (IPIP, 0, 0),
           23: (GUE, 6081, S.IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM)}

# IPv6's services and destinations: IPv4's (Tunnel's left out: IPv4 only
# so far) with IPv6 addresses, in slots this far past IPv4's.
SVC6, DEST6 = 16, 26


def _a6(addr):
    return socket.inet_pton(socket.AF_INET6, addr)


# Full-NAT services' local addresses (service slot -> addresses): the
# balancer's own on the real servers' link, and another; IPv6's the same.
_SRV, _SRV6 = socket.inet_aton(testnet.TOPO["srv_ip"]), _a6(testnet.TOPO["srv_ip6"])
FULLNAT_LADDRS = {15: (_SRV, socket.inet_aton("172.80.0.50")), 16: (_SRV,),
                  15 + SVC6: (_SRV6, _a6("fd00:80::50")), 16 + SVC6: (_SRV6,)}


def service_config(net):
    """Service slot -> (addr, port, proto, [(dest slot, addr, port, fwd)]) of
    both families (_services), IPv6's in slots SVC6 / DEST6 past IPv4's."""
    config = dict(_services(net.addrs[V4]))
    for slot, (addr, port, proto, dl) in _services(net.addrs[V6]).items():
        if all(fwd != S.IP_VS_CONN_F_TUNNEL for _, _, _, fwd in dl):
            config[slot + SVC6] = (addr, port, proto,
                                   [(d + DEST6, a, p, fwd) for d, a, p, fwd in dl])
    return config


def _services(a):
    """One family's services (a: its wire.Addrs), by slot: Masq, Route and
    Tunnel services (TUNNELS), one without destinations, and destinations
    without a neighbour entry or without a route; one real server
    (rs[0]:8080) behind three services and another (rs[2]:8080) behind
    two, whose replies must each find their own service's connection;
    port-zero services (all ports of an address) with destinations of port
    zero and not, two of them at one address; full-NAT services (one with
    two local addresses, FULLNAT_LADDRS), a full-NAT real server also a
    Masq one of other services.
    (ipvsadm accepts a port-zero service only with -p; these are plain rr:
    how a connection and its replies are found does not depend on it.)"""
    M, D, T = S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE, S.IP_VS_CONN_F_TUNNEL
    F = S.XDPLB_CONN_F_FULLNAT
    rs, vip, vip2, vip3 = a.rs, a.vip, a.vip2, a.vip3
    near, no_neigh, no_route = a.near_rs, a.rs_no_neigh, a.rs_no_route
    return {
        1: (vip, 80, 6, [(1, rs[0], 8080, M), (2, rs[1], 8080, M), (3, rs[2], 8080, M)]),
        2: (vip, 53, 17, [(4, rs[0], 8053, M), (5, rs[1], 8053, M)]),
        3: (vip2, 80, 6, [(6, rs[1], 80, D), (7, rs[2], 80, D)]),
        4: (vip2, 5000, 17, [(8, rs[2], 5000, D)]),
        5: (vip, 443, 6, [(9, near, 8443, M)]),
        6: (vip, 8000, 6, [(10, no_neigh, 8080, M), (11, no_route, 8080, M)]),
        7: (vip, 9000, 6, []),
        8: (vip3, 80, 6, [(12, rs[0], 8080, M)]),
        9: (vip3, 53, 17, [(13, rs[1], 53, T)]),
        10: (vip2, 8000, 6, [(14, no_neigh, 8000, D), (15, no_route, 8000, D)]),
        11: (vip2, 8080, 6, [(16, rs[0], 8080, M), (17, rs[2], 8080, M)]),
        12: (vip3, 0, 6, [(18, rs[2], 0, M), (19, rs[1], 8080, M)]),
        13: (vip2, 0, 17, [(20, rs[0], 0, M), (21, rs[0], 8053, M)]),
        14: (vip2, 443, 6, [(22, rs[0], 443, T), (23, no_neigh, 443, T)]),
        15: (vip3, 7000, 6, [(24, rs[1], 7080, F), (25, rs[0], 8080, F)]),
        16: (vip3, 7053, 17, [(26, rs[2], 7053, F)]),
    }


# service and destination slots the configuration uses, 0 included
SLOTS = 24 + DEST6
