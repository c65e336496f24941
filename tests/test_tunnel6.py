"""Tunnel forwarding (-i) with IPv6 on either side, packet by packet through
BPF_PROG_TEST_RUN, configured through the control API as xdplbadm does: IPv6
in IPv6, IPv4 in IPv6 and IPv6 in IPv4, ipip and gue. Every output byte is
compared with a frame scapy builds independently (tests/packets.py
encapsulated()), the outer UDP checksum included.
"""
import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether

from packets import encapsulated, tcp, udp
from test_datapath6 import XDP_PASS, XDP_REDIRECT, counters, icmp6_answer, run, v6  # noqa: F401
from xdplb import structs as S
from xdplb import tunnel
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP, Destination, Service

GUE_PORT = 6080
IPIP, GUE = S.IP_VS_CONN_F_TUNNEL_TYPE_IPIP, S.IP_VS_CONN_F_TUNNEL_TYPE_GUE
CSUM, NOCSUM = S.IP_VS_TUNNEL_ENCAP_FLAG_CSUM, S.IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM
TUNNELS = [(IPIP, NOCSUM), (GUE, NOCSUM), (GUE, CSUM)]
SRV_MAC = "02:00:00:00:02:01"
# (service address, client, real server, its MAC): the inner and outer families
COMBOS = {
    "6in6": ("fd00:1::100", "fd00:1::2", "fd00:80::2", "02:00:00:00:02:02"),
    "4in6": ("10.0.0.100", "10.0.0.2", "fd00:80::3", "02:00:00:00:02:03"),
    "6in4": ("fd00:1::100", "fd00:1::2", "172.80.0.4", "02:00:00:00:02:04"),
}


@pytest.fixture
def t6(v6):
    """test_datapath6's control, with tun_src and tun_src6 written for the
    test network as `xdplb attach` writes them."""
    tunnel.write_sources(v6.st)
    return v6


def tunnel_service(ctl, combo, proto=IPPROTO_TCP, tun=(IPIP, NOCSUM), port=80):
    vip, _, rs, _ = COMBOS[combo]
    ctl.add_service(Service(proto, vip, port, sched="rr"))
    tun_type, tun_flags = tun
    ctl.add_dest((proto, vip, port), Destination(
        rs, port, fwd=S.IP_VS_CONN_F_TUNNEL, tun_type=tun_type, tun_flags=tun_flags,
        tun_port=GUE_PORT if tun_type == GUE else 0))


def to_rs(ctl, combo, frame, tun):
    _, _, rs, mac = COMBOS[combo]
    src = ctl.net["srv_ip6"] if ":" in rs else ctl.net["srv_ip"]
    kw = dict(tun_port=GUE_PORT, csum=tun[1] == CSUM) if tun[0] == GUE else {}
    return encapsulated(frame, src, rs, SRV_MAC, mac, **kw)


@pytest.mark.parametrize("tun", TUNNELS, ids=["ipip", "gue", "gue-csum"])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_tcp_connection_through_the_tunnel(t6, combo, tun):
    """SYN, data, FIN, ACK: each encapsulated byte for byte, from the
    balancer's address of the outer family on the egress; as IPVS counts a
    Tunnel connection: input only, OutPkts 0, ending in FIN_WAIT."""
    vip, client, rs, _ = COMBOS[combo]
    tunnel_service(t6, combo, tun=tun)
    frames = [tcp(client, vip, 46000, 80),
              tcp(client, vip, 46000, 80, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n"),
              tcp(client, vip, 46000, 80, flags="FA"),
              tcp(client, vip, 46000, 80, flags="A")]
    for f in frames:
        assert run(t6, f) == (XDP_REDIRECT, to_rs(t6, combo, f, tun))
    [row] = t6.connections()
    assert row[6] == rs and row[8] == "FIN_WAIT"
    [svc] = t6.services(stats=True)
    st = svc.stats
    assert (st.conns, st.inpkts, st.outpkts, st.outbytes) == (1, 4, 0, 0)
    assert st.inbytes == sum(len(f[IPv6] if IPv6 in f else f[IP]) for f in frames)
    assert counters(t6)["fwd"] == 4


@pytest.mark.parametrize("combo", list(COMBOS))
def test_udp_through_gue(t6, combo):
    vip, client, _, _ = COMBOS[combo]
    tun = (GUE, CSUM)
    tunnel_service(t6, combo, proto=IPPROTO_UDP, tun=tun, port=53)
    for payload in (b"q", b"y" * 300):
        f = udp(client, vip, 46100, 53, payload=payload)
        assert run(t6, f) == (XDP_REDIRECT, to_rs(t6, combo, f, tun))


def test_outer_ipv6_copies_traffic_class_and_hop_limit(t6):
    """6in6: the traffic class (CE -> ECT(0)) and the hop limit copied, no
    flow label, whatever the inner one's."""
    vip, client, _, _ = COMBOS["6in6"]
    tunnel_service(t6, "6in6")
    for k, (tc, hlim) in enumerate(((0xbb, 17), (0xb8, 64), (0x01, 1))):
        f = tcp(client, vip, 46200 + k, 80, tc=tc, hlim=hlim, fl=0x12345)
        verdict, out = run(t6, f)
        assert (verdict, out) == (XDP_REDIRECT, to_rs(t6, "6in6", f, (IPIP, NOCSUM)))
        outer = Ether(out)[IPv6]
        assert outer.tc == (tc & ~3 | 2 if tc & 3 == 3 else tc) and outer.hlim == hlim
        assert outer.fl == 0 and outer.nh == 41


def test_ipv6_packet_too_big_for_the_tunnel_gets_packet_too_big(t6):
    """6in6 out of a 1500-byte device: a packet that fits the device but not
    once 40 bytes of outer header are added is answered "packet too big"
    with 1460, from the VIP; one that fits goes through."""
    vip, client, _, _ = COMBOS["6in6"]
    tunnel_service(t6, "6in6")
    assert run(t6, tcp(client, vip, 46300, 80))[0] == XDP_REDIRECT
    fits = tcp(client, vip, 46300, 80, flags="A", payload=b"f" * (1460 - 60))
    assert run(t6, fits)[0] == XDP_REDIRECT
    big = tcp(client, vip, 46300, 80, flags="A", payload=b"f" * (1460 - 59))
    verdict, out = run(t6, big)
    assert (verdict, out) == (XDP_REDIRECT, icmp6_answer(big, 2, mtu=1460))
    assert Ether(out)[ICMPv6PacketTooBig].mtu == 1460
    assert counters(t6)["frag_needed"] == 1


def test_no_outer_source_passes_untouched(t6):
    """No IPv6 address on the egress known (tun_src6 empty): counted, untouched."""
    vip, client, _, _ = COMBOS["4in6"]
    tunnel_service(t6, "4in6")
    t6.st.tun_src6.put(t6.net["srv_idx"], S.TunSrc6())
    f = tcp(client, vip, 46400, 80)
    assert run(t6, f) == (XDP_PASS, bytes(f))
    assert counters(t6)["tun_no_src"] == 1
