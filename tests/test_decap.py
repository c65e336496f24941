"""bpf/decap.c (`xdplb decap`), packet by packet, through BPF_PROG_TEST_RUN.

Every encapsulation xdplb produces (IPv4 or IPv6 inside IPv4 or IPv6, in
IP-in-IP or GUE with and without checksum, x TCP/UDP, with a VLAN tag) comes
out as the inner packet behind the frame's own L2 header, byte for byte;
anything else passes byte-identical.
"""
import errno
import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from packets import encapsulated, tcp, udp
from xdplb import bpfsys, decap

XDP_PASS = 2
HOST, OTHER, LB = "172.80.0.2", "172.80.0.9", "172.80.0.1"
VIP, CLIENT = "10.0.0.100", "10.0.0.2"
HOST6, OTHER6, LB6 = "2001:db8:80::2", "2001:db8:80::9", "2001:db8:80::1"
VIP6, CLIENT6 = "2001:db8::100", "2001:db8:1::2"
SMAC, DMAC = "02:00:00:00:02:01", "02:00:00:00:02:02"
GUE_PORT = 6080


@pytest.fixture(scope="module")
def prog():
    if os.geteuid() != 0:
        pytest.skip("PROG_TEST_RUN needs root")
    b, fn = decap.compile_program()
    decap.fill(b, [HOST, "127.0.0.1", HOST6, "::1"], [GUE_PORT, 7000])
    yield fn.fd
    b.cleanup()


def run(fd, frame):
    verdict, out, _ = bpfsys.prog_test_run(fd, bytes(frame))
    return verdict, out


def inner_frames(family=4):
    client, vip = (CLIENT, VIP) if family == 4 else (CLIENT6, VIP6)
    return [tcp(client, vip, 40000, 80),
            tcp(client, vip, 40001, 80, flags="PA", payload=b"GET / HTTP/1.0\r\n\r\n"),
            udp(client, vip, 40002, 53, payload=b"q" * 100),
            udp(client, vip, 40003, 53, chksum=0),
            tcp(client, vip, 40004, 80, vlan=9)]


def tunnel(f, outer=4, dst=None, tun_port=None, gue=None, csum=True, extra=b"", **l3):
    """f's IP packet (and extra bytes) inside an outer IPv4 or IPv6 header
    from the balancer to dst (the host): IP-in-IP, protocol 4 or 41 as f's
    family, or UDP to tun_port carrying the GUE header gue (variant 0 with
    f's family's protocol unless told; the UDP checksum scapy's, or 0 when
    not csum); behind f's L2 header (its VLAN tag) with the tunnel's MACs.
    l3: fields of the outer header."""
    inner = f[IPv6] if IPv6 in f else f[IP]
    proto = 41 if isinstance(inner, IPv6) else 4
    ipip = {} if tun_port is not None else {"proto": proto} if outer == 4 else {"nh": proto}
    if outer == 4:
        top = IP(src=LB, dst=dst or HOST, **{**ipip, **l3})
    else:
        top = IPv6(src=LB6, dst=dst or HOST6, **{**ipip, **l3})
    payload = Raw(bytes(inner) + extra)
    if tun_port is not None:
        u = UDP(sport=40000, dport=tun_port)
        if not csum:
            u.chksum = 0
        payload = u / Raw((gue or bytes([0, proto, 0, 0])) + bytes(payload))
    l2 = Ether(src=SMAC, dst=DMAC)
    if Dot1Q in f:
        l2 = l2 / Dot1Q(vlan=f[Dot1Q].vlan)
    return l2 / top / payload


def expect(frame):
    """What decap hands the stack: the inner packet behind the outer frame's
    L2 header (its MACs, its VLAN tag, the inner packet's EtherType)."""
    f = frame.__class__(bytes(frame))
    f[Ether].src, f[Ether].dst = SMAC, DMAC
    return bytes(f)


@pytest.mark.parametrize("kind", ["ipip", "gue", "gue-csum"])
def test_every_ipv4_encapsulation_is_stripped(prog, kind):
    """As xdplb's balancer sends them (packets.encapsulated)."""
    kw = {} if kind == "ipip" else dict(tun_port=GUE_PORT, csum=kind == "gue-csum")
    for f in inner_frames():
        outer = encapsulated(f, LB, HOST, SMAC, DMAC, **kw)
        assert run(prog, outer) == (XDP_PASS, expect(f))


@pytest.mark.parametrize("outer", [4, 6])
@pytest.mark.parametrize("inner", [4, 6])
@pytest.mark.parametrize("kind", ["ipip", "gue", "gue-nocsum"])
def test_every_family_in_every_family_is_stripped(prog, outer, inner, kind):
    """4in4, 6in4 (protocol 41), 6in6 (next header 41), 4in6 (next header 4)
    and GUE over either family carrying either (GUE protocol 4 or 41), the
    outer UDP checksum filled or 0."""
    kw = {} if kind == "ipip" else dict(tun_port=GUE_PORT, csum=kind == "gue")
    for f in inner_frames(inner):
        assert run(prog, tunnel(f, outer, **kw)) == (XDP_PASS, expect(f)), f.summary()


@pytest.mark.parametrize("outer", [4, 6])
def test_gue_with_optional_fields_and_another_port(prog, outer):
    for f in (udp(CLIENT, VIP, 40010, 53), udp(CLIENT6, VIP6, 40010, 53)):
        proto = 41 if IPv6 in f else 4
        gue = bytes([1, proto, 0, 0]) + b"\xaa\xbb\xcc\xdd"   # hlen 1: one word of options
        assert run(prog, tunnel(f, outer, tun_port=7000, gue=gue)) == (XDP_PASS, expect(f))


def test_what_is_not_ours_passes_identical(prog):
    f = tcp(CLIENT, VIP, 40020, 80)
    others = [
        f,                                                           # no tunnel
        encapsulated(f, LB, OTHER, SMAC, DMAC),                      # to another host
        encapsulated(f, LB, OTHER, SMAC, DMAC, tun_port=GUE_PORT),
        tunnel(f, tun_port=6081),                                    # not a GUE port
        tunnel(f, tun_port=GUE_PORT, gue=bytes([0x20, 4, 0, 0])),    # a GUE control message
        tunnel(f, tun_port=GUE_PORT, gue=bytes([0x40, 4, 0, 0])),    # GUE version 1
        tunnel(f, tun_port=GUE_PORT, gue=bytes([0, 41, 0, 0])),      # IPv6 said, IPv4 inside
        tunnel(f, tun_port=GUE_PORT, gue=bytes([0, 6, 0, 0])),       # not IP inside
        tunnel(f, tun_port=GUE_PORT, flags="MF"),                    # an outer fragment
        tunnel(f, tun_port=GUE_PORT, frag=10),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=4) / Raw(b"\x60" + b"\0" * 39),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=4) / Raw(bytes(f[IP]) + b"x"),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=47) / Raw(bytes(f[IP])),
        Ether(src=SMAC, dst=DMAC) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=LB, dst=HOST, proto=4)
        / Raw(bytes(f[IP])),
    ]
    for o in others:
        assert run(prog, o) == (XDP_PASS, bytes(o)), o.summary()


def test_what_is_not_ours_passes_identical_ipv6(prog):
    f4, f6 = tcp(CLIENT, VIP, 40040, 80), tcp(CLIENT6, VIP6, 40041, 80)
    bad_udp_len = Ether(bytes(tunnel(f6, 6, tun_port=GUE_PORT)))
    bad_udp_len[UDP].len += 4
    bad_udp_len4 = Ether(bytes(tunnel(f4, 4, tun_port=GUE_PORT, extra=b"abcd")))
    bad_udp_len4[UDP].len -= 4                      # (the inner packet's end, not the IP's)
    others = [
        f6,                                                          # no tunnel
        tunnel(f6, 6, dst=OTHER6),                                   # to another host
        tunnel(f4, 6, dst=OTHER6, tun_port=GUE_PORT),
        tunnel(f6, 4, dst=OTHER),
        tunnel(f6, 6, dst="::ffff:" + HOST),                         # v4-mapped: not ours
        tunnel(f6, 6, tun_port=6081),                                # not a GUE port
        tunnel(f6, 6, tun_port=GUE_PORT, gue=bytes([0x20, 41, 0, 0])),  # GUE control
        tunnel(f6, 6, tun_port=GUE_PORT, gue=bytes([0x40, 41, 0, 0])),  # GUE version 1
        tunnel(f6, 6, tun_port=GUE_PORT, gue=bytes([0, 4, 0, 0])),   # IPv4 said, IPv6 inside
        tunnel(f4, 6, tun_port=GUE_PORT, gue=bytes([0, 41, 0, 0])),  # IPv6 said, IPv4 inside
        tunnel(f4, 6, tun_port=GUE_PORT, gue=bytes([0, 6, 0, 0])),   # not IP inside
        tunnel(f4, 6, nh=41),                                        # next header 41, IPv4
        tunnel(f6, 6, nh=4),                                         # next header 4, IPv6
        tunnel(f6, 4, proto=4),                                      # protocol 4, IPv6
        tunnel(f6, 4, proto=47),                                     # GRE: not xdplb's
        tunnel(f6, 6, nh=47),
        tunnel(f6, 6, extra=b"x"),                                   # inner shorter than outer
        tunnel(f4, 6, extra=b"x"),
        tunnel(f6, 4, extra=b"x"),
        tunnel(f6, 6, tun_port=GUE_PORT, extra=b"x"),
        tunnel(f6, 6, plen=0),                                       # a jumbogram's 0
        bad_udp_len,                                                 # UDP length != IPv6's
        bad_udp_len4,                                                # UDP length != IPv4's
        tunnel(f6, 4, flags="MF"),                                   # outer IPv4 fragments
        tunnel(f6, 4, frag=10),
        # an outer fragment header (first, later, atomic), an extension header
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6)
        / IPv6ExtHdrFragment(nh=41, m=1, id=7) / Raw(bytes(f6[IPv6])),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6)
        / IPv6ExtHdrFragment(nh=41, offset=3, id=7) / Raw(bytes(f6[IPv6])),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6)
        / IPv6ExtHdrFragment(nh=4, id=7) / Raw(bytes(f4[IP])),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6)
        / IPv6ExtHdrHopByHop(nh=41) / Raw(bytes(f6[IPv6])),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6, nh=41) / Raw(b"\x60" + b"\0" * 30),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6, nh=4) / Raw(b"\x45" + b"\0" * 18),
        Ether(src=SMAC, dst=DMAC) / IPv6(src=LB6, dst=HOST6) / UDP(sport=1, dport=GUE_PORT)
        / Raw(b"\0\x29"),                                            # GUE cut short
    ]
    for o in others:
        assert run(prog, o) == (XDP_PASS, bytes(o)), o.summary()


def test_truncated_frames_pass_identical(prog):
    f4 = tcp(CLIENT, VIP, 40030, 80, payload=b"abc")
    f6 = tcp(CLIENT6, VIP6, 40031, 80, payload=b"abc")
    cases = [(f4, encapsulated(f4, LB, HOST, SMAC, DMAC)),
             (f4, encapsulated(f4, LB, HOST, SMAC, DMAC, tun_port=GUE_PORT, csum=True)),
             (f6, tunnel(f6, 4)), (f6, tunnel(f6, 6)), (f4, tunnel(f4, 6)),
             (f6, tunnel(f6, 6, tun_port=GUE_PORT)), (f4, tunnel(f4, 6, tun_port=GUE_PORT))]
    for f, full in cases:
        full = bytes(full)
        for n in range(len(full)):
            try:
                verdict, out = run(prog, full[:n])
            except OSError as e:   # the kernel refuses frames shorter than ETH_HLEN
                assert n < 14 and e.errno == errno.EINVAL
                continue
            assert (verdict, out) == (XDP_PASS, full[:n]), (f.summary(), n)
        assert run(prog, full) == (XDP_PASS, expect(f))
