"""Full-NAT and hairpin over IPv6 through the real data path, packet by
packet (BPF_PROG_TEST_RUN), configured through the control API: TCP and UDP
both ways byte for byte against scapy's frames, the reply tuple lent
through fnat_out6, ICMPv6 errors translated for both addresses, hairpin's
source NAT from the balancer's own address (tun_src6), and the sweep
releasing the mapping of an entry gone.
"""
import ctypes as C
import socket

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from packets import rebuilt, tcp, udp
from test_datapath6 import a6, icmp6_error, requoted
from xdplb import bpfsys, config
from xdplb import structs as T
from xdplb.control import Control
from xdplb.model import IP_VS_CONN_F_MASQ, IPPROTO_TCP, IPPROTO_UDP, Destination, Service
from xdplb.structs import XDPLB_CONN_F_FULLNAT, XDPLB_SVC_F_HAIRPIN

XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
VIP, VPORT, RPORT = "fd00:1::100", 80, 8080
CLIENT, CLIENT_MAC = "fd00:1::2", "02:00:00:00:01:02"
NEAR_RS, NEAR_RS_MAC = "fd00:1::3", "02:00:00:00:01:03"
CLI_MAC, SRV_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
RS, RS_MAC = "fd00:80::2", "02:00:00:00:02:02"
LADDR = "fd00:80::1"            # the balancer's own on the servers' link
CLI_IP = "fd00:1::1"


@pytest.fixture
def fn6(ctl, datapath_net):
    ctl.net = datapath_net
    ctl.counted = _counters(ctl)
    return ctl


def _counters(ctl):
    return {name: ctl.st.counters.sum(i) for i, name in enumerate(T.COUNTERS)}


def counters(ctl):
    return {n: v - ctl.counted[n] for n, v in _counters(ctl).items() if v - ctl.counted[n]}


def run(ctl, frame, side="cli"):
    verdict, out, _ = bpfsys.prog_test_run(ctl.st.prog_fd, bytes(frame),
                                           ingress_ifindex=ctl.net[side + "_idx"])
    return verdict, out


def service(ctl, proto=IPPROTO_TCP, rs=RS, laddrs=(LADDR,), fwd=XDPLB_CONN_F_FULLNAT, flags=0):
    key = (proto, VIP, VPORT)
    ctl.add_service(Service(*key, sched="rr", flags=flags))
    for la in laddrs:
        ctl.apply(config.add_laddr, key, la, 0)
    ctl.add_dest(key, Destination(rs, RPORT, fwd=fwd, weight=1))
    return key


def key6(saddr, sport, proto=IPPROTO_TCP):
    return T.ConnKey6.from_buffer_copy(a6(saddr) + a6(VIP) + sport.to_bytes(2, "big")
                                       + VPORT.to_bytes(2, "big") + bytes([proto, 0, 0, 0]))


def entry(ctl, saddr, sport, proto=IPPROTO_TCP):
    return ctl.st.conn_table6.get(key6(saddr, sport, proto))


def lent(v):
    return socket.inet_ntop(socket.AF_INET6, bytes(v.laddr6)), socket.ntohs(v.c.lport)


def to_rs(frame, la, lport):
    l4 = frame[IPv6].payload.__class__
    return rebuilt(frame, {(Ether, "src"): SRV_MAC, (Ether, "dst"): RS_MAC, (IPv6, "src"): la,
                           (IPv6, "dst"): RS, (l4, "sport"): lport, (l4, "dport"): RPORT})


def to_client(frame, cport, client=CLIENT, mac=CLIENT_MAC):
    l4 = frame[IPv6].payload.__class__
    return rebuilt(frame, {(Ether, "src"): CLI_MAC, (Ether, "dst"): mac, (IPv6, "src"): VIP,
                           (IPv6, "dst"): client, (l4, "sport"): VPORT, (l4, "dport"): cport})


def test_fullnat6_tcp_both_ways(fn6):
    service(fn6)
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    verdict, out = run(fn6, syn)
    v = entry(fn6, CLIENT, 40000)
    la, lport = lent(v)
    assert v.c.fwd == XDPLB_CONN_F_FULLNAT and la == LADDR
    assert T.XDPLB_FNAT_PORT_MIN <= lport <= T.XDPLB_FNAT_PORT_MAX
    assert (verdict, out) == (XDP_REDIRECT, to_rs(syn, la, lport))
    [(kb, vb)] = fn6.st.fnat_out6.raw_items()
    assert kb == a6(RS) + a6(LADDR) + RPORT.to_bytes(2, "big") + lport.to_bytes(2, "big") + \
        bytes([IPPROTO_TCP, 0, 0, 0])
    assert vb == bytes(key6(CLIENT, 40000))
    synack = tcp(RS, LADDR, RPORT, lport, flags="SA", smac=RS_MAC, dmac=SRV_MAC)
    assert run(fn6, synack, "srv") == (XDP_REDIRECT, to_client(synack, 40000))
    ack = tcp(CLIENT, VIP, 40000, VPORT, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n")
    assert run(fn6, ack) == (XDP_REDIRECT, to_rs(ack, la, lport))
    assert fn6.st.conn_table6.is_assured(key6(CLIENT, 40000))
    assert counters(fn6) == {"rx": 3, "fwd": 3}
    [row] = Control(fn6.st).connections()
    assert row[2:9] + row[12:] == (CLIENT, 40000, VIP, VPORT, RS, RPORT, "ESTABLISHED",
                                   ("FullNat", LADDR, lport))
    # a reply to another port is not ours; with the entry gone, nor is its own
    stray = tcp(RS, LADDR, RPORT, lport ^ 1, flags="A", smac=RS_MAC, dmac=SRV_MAC)
    assert run(fn6, stray, "srv") == (XDP_PASS, bytes(stray))
    fn6.st.conn_table6.delete(key6(CLIENT, 40000))
    assert run(fn6, synack, "srv") == (XDP_PASS, bytes(synack))
    Control(fn6.st).sweep()
    assert fn6.st.fnat_out6.raw_items() == []


def test_fullnat6_udp_both_ways(fn6):
    service(fn6, proto=IPPROTO_UDP)
    dgram = udp(CLIENT, VIP, 5353, VPORT)
    verdict, out = run(fn6, dgram)
    la, lport = lent(entry(fn6, CLIENT, 5353, IPPROTO_UDP))
    assert (verdict, out) == (XDP_REDIRECT, to_rs(dgram, la, lport))
    reply = udp(RS, LADDR, RPORT, lport, smac=RS_MAC, dmac=SRV_MAC, payload=b"answer")
    assert run(fn6, reply, "srv") == (XDP_REDIRECT, to_client(reply, 5353))


def test_fullnat6_icmp_errors_both_ways(fn6):
    """Port unreachable from the real server about the client's datagram (as
    sent: laddr:lport -> rs) reaches the client about its own (client ->
    VIP:vport); packet too big from the client's side about a reply reaches
    the real server about the reply as it sent it (rs -> laddr:lport)."""
    service(fn6, proto=IPPROTO_UDP)
    _, sent = run(fn6, udp(CLIENT, VIP, 5354, VPORT))
    la, lport = lent(entry(fn6, CLIENT, 5354, IPPROTO_UDP))
    quoted = bytes(Ether(sent)[IPv6])
    err = icmp6_error(RS, LADDR, quoted, type_=1, code=4, smac=RS_MAC, dmac=SRV_MAC)
    want = icmp6_error(VIP, CLIENT, requoted(quoted, src=CLIENT, dst=VIP, sport=5354,
                                             dport=VPORT), type_=1, code=4, smac=CLI_MAC,
                       dmac=CLIENT_MAC)
    assert run(fn6, err, "srv") == (XDP_REDIRECT, bytes(want))
    reply = bytes(udp(VIP, CLIENT, VPORT, 5354, payload=b"r" * 64)[IPv6])
    err = icmp6_error("fd00:1::9", VIP, reply, mtu=1280)
    want = icmp6_error(LADDR, RS, requoted(reply, src=RS, dst=LADDR, sport=RPORT, dport=lport),
                       mtu=1280, smac=SRV_MAC, dmac=RS_MAC)
    assert run(fn6, err) == (XDP_REDIRECT, bytes(want))
    assert counters(fn6)["icmp_xlate"] == 2


def test_hairpin6_from_the_balancers_own_address(fn6):
    """--hairpin over IPv6: the real server on the client link connecting to
    its own service is source-NATed from the balancer's address there
    (tun_src6, as `xdplb attach` writes it), and its reply un-NATed."""
    idx = fn6.net["cli_idx"]
    fn6.st.tun_src6.put(idx, T.TunSrc6((C.c_uint8 * 16)(*a6(CLI_IP))))
    try:
        service(fn6, rs=NEAR_RS, laddrs=(), fwd=IP_VS_CONN_F_MASQ, flags=XDPLB_SVC_F_HAIRPIN)
        own = tcp(NEAR_RS, VIP, 40000, VPORT, smac=NEAR_RS_MAC)
        verdict, out = run(fn6, own)
        la, lport = lent(entry(fn6, NEAR_RS, 40000))
        assert la == CLI_IP
        assert (verdict, out) == (XDP_TX, rebuilt(own, {
            (Ether, "src"): CLI_MAC, (Ether, "dst"): NEAR_RS_MAC, (IPv6, "src"): CLI_IP,
            (IPv6, "dst"): NEAR_RS, (TCP, "sport"): lport, (TCP, "dport"): RPORT}))
        reply = tcp(NEAR_RS, CLI_IP, RPORT, lport, flags="SA", smac=NEAR_RS_MAC, dmac=CLI_MAC)
        assert run(fn6, reply) == (XDP_TX, to_client(reply, 40000, NEAR_RS, NEAR_RS_MAC))
        # without the flag: Masq
        fn6.edit_service(Service(IPPROTO_TCP, VIP, VPORT, sched="rr"))
        run(fn6, tcp(CLIENT, VIP, 40001, VPORT))
        assert entry(fn6, CLIENT, 40001).c.lport == 0
    finally:
        fn6.st.tun_src6.put(idx, T.TunSrc6())


def test_fullnat6_needs_a_local_address_of_its_family(fn6):
    key = (IPPROTO_TCP, VIP, VPORT)
    fn6.add_service(Service(*key, sched="rr"))
    with pytest.raises(Exception) as e:
        fn6.apply(config.add_laddr, key, "172.80.0.1", 0)
    assert "address family" in str(e.value)
    with pytest.raises(Exception) as e:
        fn6.add_dest(key, Destination(RS, RPORT, fwd=XDPLB_CONN_F_FULLNAT))
    assert "needs a local address" in str(e.value)
