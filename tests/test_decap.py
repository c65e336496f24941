"""bpf/decap.c (`xdplb decap`), packet by packet, through BPF_PROG_TEST_RUN.

Every encapsulation xdplb produces (ipip, GUE with and without checksum, x
TCP/UDP, with a VLAN tag) comes out as the inner packet behind the frame's
own L2 header, byte for byte; anything else passes byte-identical.
"""
import errno
import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from packets import encapsulated, tcp, udp
from xdplb import bpfsys, decap

XDP_PASS = 2
HOST, OTHER, LB = "172.80.0.2", "172.80.0.9", "172.80.0.1"
VIP, CLIENT = "10.0.0.100", "10.0.0.2"
SMAC, DMAC = "02:00:00:00:02:01", "02:00:00:00:02:02"
GUE_PORT = 6080


@pytest.fixture(scope="module")
def prog():
    if os.geteuid() != 0:
        pytest.skip("PROG_TEST_RUN needs root")
    b, fn = decap.compile_program()
    decap.fill(b, [HOST, "127.0.0.1"], [GUE_PORT, 7000])
    yield fn.fd
    b.cleanup()


def run(fd, frame):
    verdict, out, _ = bpfsys.prog_test_run(fd, bytes(frame))
    return verdict, out


def inner_frames():
    return [tcp(CLIENT, VIP, 40000, 80),
            tcp(CLIENT, VIP, 40001, 80, flags="PA", payload=b"GET / HTTP/1.0\r\n\r\n"),
            udp(CLIENT, VIP, 40002, 53, payload=b"q" * 100),
            udp(CLIENT, VIP, 40003, 53, chksum=0),
            tcp(CLIENT, VIP, 40004, 80, vlan=9)]


def expect(frame):
    """What decap hands the stack: the inner packet behind the outer frame's
    L2 header (its MACs, its VLAN tag, the inner packet's EtherType)."""
    f = frame.__class__(bytes(frame))
    f[Ether].src, f[Ether].dst = SMAC, DMAC
    return bytes(f)


@pytest.mark.parametrize("kind", ["ipip", "gue", "gue-csum"])
def test_every_encapsulation_is_stripped(prog, kind):
    kw = {} if kind == "ipip" else dict(tun_port=GUE_PORT, csum=kind == "gue-csum")
    for f in inner_frames():
        outer = encapsulated(f, LB, HOST, SMAC, DMAC, **kw)
        assert run(prog, outer) == (XDP_PASS, expect(f))


def test_gue_with_optional_fields_and_another_port(prog):
    f = udp(CLIENT, VIP, 40010, 53)
    gue = bytes([1, 4, 0, 0]) + b"\xaa\xbb\xcc\xdd"       # hlen 1: one word of options
    outer = (Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST) / UDP(sport=40000, dport=7000)
             / Raw(gue + bytes(f[IP])))
    assert run(prog, outer) == (XDP_PASS, expect(f))


def _gue(f, first=0, proto=4, dport=GUE_PORT, dst=HOST, **ip):
    return (Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=dst, **ip) / UDP(sport=40000, dport=dport)
            / Raw(bytes([first, proto, 0, 0]) + bytes(f[IP])))


def test_what_is_not_ours_passes_identical(prog):
    f = tcp(CLIENT, VIP, 40020, 80)
    others = [
        f,                                                           # no tunnel
        encapsulated(f, LB, OTHER, SMAC, DMAC),                      # to another host
        encapsulated(f, LB, OTHER, SMAC, DMAC, tun_port=GUE_PORT),
        _gue(f, dport=6081),                                         # not a GUE port
        _gue(f, first=0x20),                                         # a GUE control message
        _gue(f, first=0x40),                                         # GUE version 1
        _gue(f, proto=41),                                           # not IPv4 inside
        _gue(f, flags="MF"),                                         # an outer fragment
        _gue(f, frag=10),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=4) / Raw(b"\x60" + b"\0" * 39),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=4) / Raw(bytes(f[IP]) + b"x"),
        Ether(src=SMAC, dst=DMAC) / IP(src=LB, dst=HOST, proto=47) / Raw(bytes(f[IP])),
        Ether(src=SMAC, dst=DMAC) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=LB, dst=HOST, proto=4)
        / Raw(bytes(f[IP])),
    ]
    for o in others:
        assert run(prog, o) == (XDP_PASS, bytes(o)), o.summary()


def test_truncated_frames_pass_identical(prog):
    f = tcp(CLIENT, VIP, 40030, 80, payload=b"abc")
    for full in (encapsulated(f, LB, HOST, SMAC, DMAC),
                 encapsulated(f, LB, HOST, SMAC, DMAC, tun_port=GUE_PORT, csum=True)):
        for n in range(len(full)):
            try:
                verdict, out = run(prog, full[:n])
            except OSError as e:   # the kernel refuses frames shorter than ETH_HLEN
                assert n < 14 and e.errno == errno.EINVAL
                continue
            assert (verdict, out) == (XDP_PASS, full[:n]), n
        assert run(prog, full) == (XDP_PASS, expect(f))
