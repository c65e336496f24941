"""IPv6 through the real data path, packet by packet (BPF_PROG_TEST_RUN),
configured through the control API exactly as xdplbadm does: Masq both
ways and Route, TCP and UDP, extension headers, the schedulers' hashes of
the folded address, persistence by prefix, and what is not ours passing
untouched. Every output byte is compared with a frame scapy builds
independently (checksums recomputed from scratch).
"""
import ctypes as C
import os
import socket

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6ND_NS,
                                ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from packets import rebuilt, tcp, udp
from test_icmp import IcmpBucket, mtu_route, private_map
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
    """conftest's control, with the test network and the counters as they
    stood when the test began (counters() reports what the test added)."""
    ctl.net = datapath_net
    ctl.counted = _counters(ctl)
    return ctl


def run(ctl, frame, side="cli"):
    verdict, out, _ = bpfsys.prog_test_run(ctl.st.prog_fd, bytes(frame),
                                           ingress_ifindex=ctl.net[side + "_idx"])
    return verdict, out


def _counters(ctl):
    return {name: ctl.st.counters.sum(i) for i, name in enumerate(T.COUNTERS)}


def counters(ctl):
    return {name: n - ctl.counted[name] for name, n in _counters(ctl).items()}


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
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                 / TCP(sport=40003, dport=VPORT, flags="S"), id="five-extension-headers"),
    pytest.param(tcp(CLIENT, VIP, 40004, 81), id="no-service"),
    pytest.param(udp("fe80::2", VIP, 40009, VPORT), id="link-local-source"),
    pytest.param(udp("ff02::2", VIP, 40009, VPORT), id="multicast-source"),
    pytest.param(tcp("::1", VIP, 40009, VPORT), id="loopback-source"),
    pytest.param(tcp("::", VIP, 40009, VPORT), id="unspecified-source"),
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


# --- ICMPv6 answers -----------------------------------------------------------------

@pytest.fixture
def icmp6(v6):
    """The ICMP buckets full and the egress cache empty (a cached egress would
    hide a route's MTU for a second), before and after."""
    buckets = private_map(v6.st, "icmp_bucket", IcmpBucket, T.XDPLB_PROG_ICMP6)
    egress = private_map(v6.st, "egress_cache", C.c_uint8 * 40)
    try:
        for m, n, empty in ((buckets, 2, IcmpBucket), (egress, 16, C.c_uint8 * 40)):
            for i in range(n):
                m.put(i, empty())
        yield v6
    finally:
        for kind in range(2):
            buckets.put(kind, IcmpBucket())
        for m in (buckets, egress):
            os.close(m.fd)


def icmp6_answer(frame, type_, code=0, mtu=0):
    """An independent expected answer: from the VIP back to the client, the
    frame quoted up to 1232 bytes, hop limit 64, checksum by scapy."""
    quoted = bytes(frame[IPv6])[:1232]
    msg = (ICMPv6PacketTooBig(mtu=mtu) if type_ == 2 else ICMPv6DestUnreach(code=code))
    return bytes(Ether(src=frame[Ether].dst, dst=frame[Ether].src)
                 / IPv6(src=frame[IPv6].dst, dst=frame[IPv6].src, hlim=64) / msg / quoted)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_no_destination_answers_port_unreachable(icmp6, proto):
    """No real server: ICMPv6 destination unreachable, port unreachable
    (type 1 code 4), from the VIP, no connection, stats unchanged."""
    p = IPPROTO_TCP if proto == "tcp" else IPPROTO_UDP
    icmp6.add_service(Service(p, VIP, VPORT, sched="rr"))
    frame = tcp(CLIENT, VIP, 40007, VPORT) if proto == "tcp" else udp(CLIENT, VIP, 40007, VPORT)
    verdict, out = run(icmp6, frame)
    assert (verdict, out) == (XDP_REDIRECT, icmp6_answer(frame, 1, code=4))
    cnt = counters(icmp6)
    assert (cnt["no_dest"], cnt["rx"], cnt["icmp_limited"]) == (1, 1, 0)
    assert icmp6.connections() == []
    assert icmp6.services(stats=True)[0].stats.inpkts == 0


@pytest.mark.parametrize("fwd", [IP_VS_CONN_F_MASQ, IP_VS_CONN_F_DROUTE], ids=["masq", "route"])
def test_packet_over_the_route_mtu_gets_packet_too_big(icmp6, fwd):
    """Over the route's MTU: "packet too big" with that MTU, from the VIP,
    quoting the client's packet up to IPv6's minimum MTU; nothing goes on."""
    service(icmp6, [RS[2][0]], fwd=fwd)
    mtu = 1400
    with mtu_route(icmp6, RS[2][0], mtu):
        assert run(icmp6, tcp(CLIENT, VIP, 41100, VPORT))[0] == XDP_REDIRECT
        fits = tcp(CLIENT, VIP, 41100, VPORT, flags="A", payload=b"f" * (mtu - 60))
        assert run(icmp6, fits)[0] == XDP_REDIRECT
        big = tcp(CLIENT, VIP, 41100, VPORT, flags="A", payload=b"f" * (mtu - 59))
        verdict, out = run(icmp6, big)
        assert (verdict, out) == (XDP_REDIRECT, icmp6_answer(big, 2, mtu=mtu))
        assert len(out) == 14 + 1280
    cnt = counters(icmp6)
    assert (cnt["frag_needed"], cnt["fwd"], cnt["rx"]) == (1, 2, 3)


def test_masq_reply_over_the_mtu_goes_to_the_stack_untouched(icmp6):
    """A reply larger than the client-side device's MTU: the stack answers
    the real server "packet too big" itself (IPVS's replies take the
    kernel's forwarding path)."""
    service(icmp6, [RS[0][0]])
    assert run(icmp6, tcp(CLIENT, VIP, 41200, VPORT))[0] == XDP_REDIRECT
    reply = tcp(RS[0][0], CLIENT, RPORT, 41200, flags="A", smac=RS[0][1], dmac=SRV_MAC,
                payload=b"r" * 1500)
    assert run(icmp6, reply, "srv") == (XDP_PASS, bytes(reply))
    assert counters(icmp6)["too_big"] == 1


# --- ICMPv6 errors about connections ------------------------------------------------

ROUTER6 = "fd00:1::9"        # a router on the client's side


def icmp6_error(src, dst, quoted, type_=2, code=0, mtu=1280, smac=CLIENT_MAC, dmac=CLI_MAC):
    """An ICMPv6 error src -> dst quoting the bytes `quoted` (an IPv6 packet)."""
    msg = ICMPv6PacketTooBig(mtu=mtu) if type_ == 2 else ICMPv6DestUnreach(code=code)
    return Ether(src=smac, dst=dmac) / IPv6(src=src, dst=dst) / msg / Raw(quoted)


def requoted(quoted, src=None, dst=None, sport=None, dport=None):
    """The quoted packet's bytes with addresses or ports replaced (its own
    checksums left as they are, as the kernel leaves them)."""
    b = bytearray(quoted)
    for off, addr in ((8, src), (24, dst)):
        if addr:
            b[off:off + 16] = a6(addr)
    for off, port in ((40, sport), (42, dport)):
        if port:
            b[off:off + 2] = port.to_bytes(2, "big")
    return bytes(b)


def test_packet_too_big_from_a_router_reaches_the_real_server(v6):
    """A router on the client's side answers a Masq reply (VIP -> client)
    with "packet too big" to the VIP: translated for the real server (outer
    destination, quoted source address and port), the ICMPv6 checksum right."""
    service(v6, [RS[0][0]])
    assert run(v6, tcp(CLIENT, VIP, 45000, VPORT))[0] == XDP_REDIRECT
    reply = bytes(tcp(VIP, CLIENT, VPORT, 45000, flags="A", payload=b"d" * 64)[IPv6])
    err = icmp6_error(ROUTER6, VIP, reply, mtu=1280)
    verdict, out = run(v6, err)
    want = icmp6_error(ROUTER6, RS[0][0], requoted(reply, src=RS[0][0], sport=RPORT),
                       mtu=1280, smac=SRV_MAC, dmac=RS[0][1])
    assert (verdict, out) == (XDP_REDIRECT, bytes(want))
    assert counters(v6)["icmp_xlate"] == 1


def test_port_unreachable_from_the_real_server_reaches_the_client(v6):
    """A real server's "port unreachable" about a client's datagram (client
    -> rs:rport) goes to the client as the VIP's, quoting client -> VIP:vport."""
    service(v6, [RS[1][0]], proto=IPPROTO_UDP)
    dgram = udp(CLIENT, VIP, 45001, VPORT)
    verdict, out = run(v6, dgram)
    assert verdict == XDP_REDIRECT
    quoted = bytes(Ether(out)[IPv6])
    err = icmp6_error(RS[1][0], CLIENT, quoted, type_=1, code=4, smac=RS[1][1], dmac=SRV_MAC)
    verdict, out = run(v6, err, "srv")
    want = icmp6_error(VIP, CLIENT, requoted(quoted, dst=VIP, dport=VPORT), type_=1, code=4,
                       smac=CLI_MAC, dmac=CLIENT_MAC)
    assert (verdict, out) == (XDP_REDIRECT, bytes(want))
    assert counters(v6)["icmp_xlate"] == 1


@pytest.mark.parametrize("case", ["untracked", "bad-checksum", "not-to-the-source", "echo"])
def test_other_icmpv6_passes_untouched(v6, case):
    service(v6, [RS[0][0]])
    assert run(v6, tcp(CLIENT, VIP, 45002, VPORT))[0] == XDP_REDIRECT
    reply = bytes(tcp(VIP, CLIENT, VPORT, 45002 if case != "untracked" else 45003,
                      flags="A")[IPv6])
    err = icmp6_error(ROUTER6, VIP if case != "not-to-the-source" else "fd00:1::77", reply)
    if case == "bad-checksum":
        err[ICMPv6PacketTooBig].cksum = 0x1234
    if case == "echo":
        err = Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=ROUTER6, dst=VIP) / \
            ICMPv6EchoRequest() / Raw(reply)
    assert run(v6, err) == (XDP_PASS, bytes(err))
    assert counters(v6)["icmp_xlate"] == 0
