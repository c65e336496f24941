"""IPv6 through the real data path, packet by packet (BPF_PROG_TEST_RUN),
configured through the control API exactly as xdplbadm does: Masq both
ways and Route, TCP and UDP, extension headers, the schedulers' hashes of
the folded address, persistence by prefix, and what is not ours passing
untouched. Every output byte is compared with a frame scapy builds
independently (checksums recomputed from scratch).
"""
import socket

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import Ether

from packets import rebuilt, tcp, udp
from xdplb import bpfsys
from xdplb import sched as S
from xdplb import structs as T
from xdplb.model import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_SVC_F_PERSISTENT,
                         IPPROTO_TCP, IPPROTO_UDP, Destination, Service)

XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
VIP, VPORT, RPORT = "fd00:1::100", 80, 8080
CLIENT, CLIENT_MAC = "fd00:1::2", "02:00:00:00:01:02"
CLI_MAC, SRV_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
RS = [("fd00:80::2", "02:00:00:00:02:02"), ("fd00:80::3", "02:00:00:00:02:03"),
      ("fd00:80::4", "02:00:00:00:02:04")]


def a6(addr):
    return socket.inet_pton(socket.AF_INET6, addr)


def fold(addr):
    """The kernel's addr_fold of an IPv6 address, host order (its hashes' input)."""
    b = a6(addr)
    return int.from_bytes(bytes(b[i] ^ b[4 + i] ^ b[8 + i] ^ b[12 + i] for i in range(4)), "big")


@pytest.fixture
def v6(ctl, datapath_net):
    ctl.net = datapath_net
    return ctl


def run(ctl, frame, side="cli"):
    verdict, out, _ = bpfsys.prog_test_run(ctl.st.prog_fd, bytes(frame),
                                           ingress_ifindex=ctl.net[side + "_idx"])
    return verdict, out


def counters(ctl):
    return {name: ctl.st.counters.sum(i) for i, name in enumerate(T.COUNTERS)}


def service(ctl, rss, proto=IPPROTO_TCP, fwd=IP_VS_CONN_F_MASQ, sched="rr", port=VPORT, **kw):
    ctl.add_service(Service(proto, VIP, port, sched=sched, **kw))
    for addr in rss:
        ctl.add_dest((proto, VIP, port), Destination(addr, RPORT, fwd=fwd, weight=1))


def key6(saddr, sport, proto=IPPROTO_TCP, daddr=VIP, dport=VPORT):
    return T.ConnKey6.from_buffer_copy(a6(saddr) + a6(daddr) + sport.to_bytes(2, "big")
                                       + dport.to_bytes(2, "big") + bytes([proto, 0, 0, 0]))


def conn6(ctl, saddr, sport, proto=IPPROTO_TCP):
    return ctl.st.conn_table6.get(key6(saddr, sport, proto))


def nat_in(frame, rs_ip, rs_mac, port=RPORT):
    return rebuilt(frame, {(Ether, "src"): SRV_MAC, (Ether, "dst"): rs_mac,
                           (IPv6, "dst"): rs_ip, (frame[IPv6].payload.__class__, "dport"): port})


def unnat(frame):
    return rebuilt(frame, {(Ether, "src"): CLI_MAC, (Ether, "dst"): CLIENT_MAC,
                           (IPv6, "src"): VIP, (frame[IPv6].payload.__class__, "sport"): VPORT})


def l3_len(frame):
    return len(frame[IPv6])


# --- Masq ---------------------------------------------------------------------------

def test_masq_tcp_both_ways(v6):
    service(v6, [RS[0][0]])
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    verdict, out = run(v6, syn)
    assert (verdict, out) == (XDP_REDIRECT, nat_in(syn, *RS[0]))
    c = conn6(v6, CLIENT, 40000)
    assert bytes(c.addr6) == a6(RS[0][0]) and c.c.port == socket.htons(RPORT)
    assert c.c.dir == T.XDPLB_DIR_IN and c.c.fwd == T.IP_VS_CONN_F_MASQ
    assert c.c.state == T.IP_VS_TCP_S_SYN_RECV
    assert int.from_bytes(bytes(c.c.addr), "big") == fold(RS[0][0])
    assert len(v6.st.conn_table.keys()) == 0          # nothing in IPv4's tables

    synack = tcp(RS[0][0], CLIENT, RPORT, 40000, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
    verdict, out = run(v6, synack, "srv")
    assert (verdict, out) == (XDP_REDIRECT, unnat(synack))

    ack = tcp(CLIENT, VIP, 40000, VPORT, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n")
    verdict, out = run(v6, ack)
    assert (verdict, out) == (XDP_REDIRECT, nat_in(ack, *RS[0]))
    assert conn6(v6, CLIENT, 40000).c.state == T.IP_VS_TCP_S_ESTABLISHED
    assert v6.st.conn_table6.is_assured(key6(CLIENT, 40000))

    [svc] = v6.services(stats=True)
    [d] = svc.dests
    for st in (svc.stats, d.stats):
        assert st.conns == 1
        assert st.inpkts == 2 and st.inbytes == l3_len(syn) + l3_len(ack)
        assert st.outpkts == 1 and st.outbytes == l3_len(synack)
    assert d.active == 1
    cnt = counters(v6)
    assert cnt["rx"] == 3 and cnt["fwd"] == 3 and cnt["pass"] == 0

    [row] = v6.connections()
    assert row[1] == socket.AF_INET6 and row[2] == CLIENT and row[4] == VIP
    assert row[8] == "ESTABLISHED"


def test_masq_udp_both_ways(v6):
    service(v6, [RS[1][0]], proto=IPPROTO_UDP)
    dgram = udp(CLIENT, VIP, 5353, VPORT)
    verdict, out = run(v6, dgram)
    assert (verdict, out) == (XDP_REDIRECT, nat_in(dgram, *RS[1]))
    reply = udp(RS[1][0], CLIENT, RPORT, 5353, smac=RS[1][1], dmac=SRV_MAC, payload=b"y" * 40)
    verdict, out = run(v6, reply, "srv")
    assert (verdict, out) == (XDP_REDIRECT, unnat(reply))
    assert conn6(v6, CLIENT, 5353, IPPROTO_UDP).c.state == 0


def test_extension_headers_are_walked_and_kept(v6):
    """Hop-by-hop, routing and destination options before TCP: balanced, the
    headers carried unchanged, the TCP checksum right after the NAT."""
    service(v6, [RS[0][0]])
    syn = (Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst=VIP)
           / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[], segleft=0)
           / IPv6ExtHdrDestOpt() / TCP(sport=40001, dport=VPORT, flags="S"))
    verdict, out = run(v6, syn)
    assert (verdict, out) == (XDP_REDIRECT, nat_in(syn, *RS[0]))
    assert Ether(out)[TCP].chksum == Ether(nat_in(syn, *RS[0]))[TCP].chksum
    assert v6.services(stats=True)[0].stats.inbytes == l3_len(syn)


@pytest.mark.parametrize("frame", [
    pytest.param(Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst="ff02::1:ff00:100")
                 / ICMPv6ND_NS(tgt=VIP), id="neighbour-solicitation"),
    pytest.param(Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst=VIP)
                 / ICMPv6EchoRequest(), id="echo-request"),
    pytest.param(Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst=VIP)
                 / IPv6ExtHdrFragment(m=1, id=7) / TCP(sport=40002, dport=VPORT, flags="S"),
                 id="fragment"),
    pytest.param(Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst=VIP)
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                 / TCP(sport=40003, dport=VPORT, flags="S"), id="five-extension-headers"),
    pytest.param(tcp(CLIENT, VIP, 40004, 81), id="no-service"),
])
def test_not_ours_passes_untouched(v6, frame):
    service(v6, [RS[0][0]])
    assert run(v6, frame) == (XDP_PASS, bytes(frame))
    assert v6.connections() == []


@pytest.mark.parametrize("cut", [14, 20, 53, 54, 60, 73])
def test_truncated_frames_pass_untouched(v6, cut):
    service(v6, [RS[0][0]])
    frame = bytes(tcp(CLIENT, VIP, 40005, VPORT))[:cut]
    assert run(v6, frame) == (XDP_PASS, frame)


def test_payload_length_past_the_frame_passes(v6):
    service(v6, [RS[0][0]])
    frame = tcp(CLIENT, VIP, 40006, VPORT)
    frame[IPv6].plen = len(frame[IPv6].payload) + 1
    assert run(v6, frame) == (XDP_PASS, bytes(frame))


def test_no_destination_is_dropped_and_counted(v6):
    """IPVS answers ICMPv6 port unreachable; xdplb does not answer ICMPv6 yet."""
    v6.add_service(Service(IPPROTO_TCP, VIP, VPORT, sched="rr"))
    assert run(v6, tcp(CLIENT, VIP, 40007, VPORT))[0] == XDP_DROP
    assert counters(v6)["no_dest"] == 1 and v6.connections() == []


# --- Route --------------------------------------------------------------------------

def test_route_only_macs_change(v6):
    service(v6, [RS[2][0]], fwd=IP_VS_CONN_F_DROUTE)
    for flags in ("S", "A", "FA"):
        pkt = tcp(CLIENT, VIP, 40010, VPORT, flags=flags)
        verdict, out = run(v6, pkt)
        assert verdict == XDP_REDIRECT
        assert out == rebuilt(pkt, {(Ether, "src"): SRV_MAC, (Ether, "dst"): RS[2][1]})
        assert out[12:] == bytes(pkt)[12:]
    assert conn6(v6, CLIENT, 40010).c.state == T.IP_VS_TCP_S_FIN_WAIT


def test_route_same_link_is_xdp_tx(v6):
    near = v6.net["near_rs_ip6"]
    service(v6, [near], fwd=IP_VS_CONN_F_DROUTE)
    syn = udp(CLIENT, VIP, 40011, VPORT)
    v6.flush()
    service(v6, [near], proto=IPPROTO_UDP, fwd=IP_VS_CONN_F_DROUTE)
    verdict, out = run(v6, syn)
    assert verdict == XDP_TX
    assert out == rebuilt(syn, {(Ether, "src"): CLI_MAC, (Ether, "dst"): v6.net["near_rs_mac"]})


# --- schedulers and persistence -----------------------------------------------------

def _backend(verdict, out):
    return Ether(out)[IPv6].dst if verdict == XDP_REDIRECT else None


def test_rr_goes_round(v6):
    service(v6, [a for a, _ in RS])
    got = [_backend(*run(v6, tcp(CLIENT, VIP, 41000 + k, VPORT))) for k in range(6)]
    newest_first = [a for a, _ in reversed(RS)]
    assert got == newest_first * 2


def test_sh_hashes_the_folded_client_address(v6):
    """ip_vs_sh_hashkey folds an IPv6 address to 32 bits (XOR of its words)."""
    service(v6, [a for a, _ in RS], sched="sh")
    table = S.sh_table([(a, 1) for a, _ in reversed(RS)])
    clients = [f"fd00:1::{k:x}:{k * 7:x}" for k in range(1, 13)]
    got = [_backend(*run(v6, tcp(c, VIP, 42000, VPORT))) for c in clients]
    assert got == [table[S.sh_hashkey(fold(c), 0)] for c in clients]
    assert len(set(got)) > 1


def test_persistence_by_prefix(v6):
    """-p with -M 64: clients of one /64 share a template, another /64 is
    scheduled anew; the template names the real server by its IPv6 address."""
    service(v6, [a for a, _ in RS], flags=IP_VS_SVC_F_PERSISTENT, timeout=300, netmask=64)
    first = _backend(*run(v6, tcp("fd00:1::2", VIP, 43000, VPORT)))
    same_net = [_backend(*run(v6, tcp(f"fd00:1::{k:x}", VIP, 43001, VPORT)))
                for k in range(3, 9)]
    assert same_net == [first] * 6
    other = _backend(*run(v6, tcp("fd00:1:0:1::2", VIP, 43002, VPORT)))
    assert other != first
    [svc] = v6.services()
    assert sorted(d.persist for d in svc.dests) == [0, 1, 1]
    tmpl = [r for r in v6.connections() if r[3] == 0]
    assert sorted(r[2] for r in tmpl) == ["fd00:1:0:1::", "fd00:1::"]


def test_ipv4_and_ipv6_services_side_by_side(v6):
    """Slots are shared across families: each service counts its own."""
    v6.add_service(Service(IPPROTO_TCP, "10.0.0.100", VPORT, sched="rr"))
    v6.add_dest((IPPROTO_TCP, "10.0.0.100", VPORT),
                Destination("172.80.0.2", RPORT, fwd=IP_VS_CONN_F_MASQ))
    service(v6, [RS[0][0]])
    assert run(v6, tcp(CLIENT, VIP, 44000, VPORT))[0] == XDP_REDIRECT
    assert run(v6, tcp("10.0.0.2", "10.0.0.100", 44000, VPORT))[0] == XDP_REDIRECT
    assert run(v6, tcp("10.0.0.2", "10.0.0.100", 44001, VPORT))[0] == XDP_REDIRECT
    got = {s.addr: s.stats.conns for s in v6.services(stats=True)}
    assert got == {"10.0.0.100": 2, VIP: 1}
