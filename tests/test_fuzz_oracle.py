"""The fuzzer's oracle tested on its own (tests/fuzz/; the fuzzing itself is
tests/test_fuzz.py): its frame builders and checksums against scapy, what it
takes for a frame of ours, and faults injected into the program's answers,
into rs_table and into the connection table, each of which it must report.
"""
import ctypes as C
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig
from scapy.layers.l2 import Ether

from fuzz import wire as F
from xdplb import structs as S


def test_builders_and_checksums_agree_with_scapy():
    src, dst = F.a4("10.0.0.2"), F.a4("10.0.0.100")
    cases = [
        F.ipv4(src, dst, 6, F.tcp_seg(src, dst, 40000, 80, F.TCP_SYN, b"hello",
                                      b"\x02\x04\x05\xb4"), opts=b"\x94\x04\x00\x00"),
        F.ipv4(src, dst, 17, F.udp_dgram(src, dst, 5353, 53, b"x" * 11)),
        F.ipv4(src, dst, 17, F.udp_dgram(src, dst, 5353, 53, b"odd")),
    ]
    for raw in cases:
        frame = F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IP) + raw
        p = F.parse(frame)
        assert p is not None and F.input_checksums_valid(frame, p)
        ref = Ether(frame)
        l4 = ref[IP].payload.__class__
        del ref[IP].chksum
        del ref[l4].chksum
        assert bytes(Ether(bytes(ref))) == frame
        # one flipped payload bit makes the L4 checksum invalid, not the IP one
        bad = bytearray(frame)
        bad[-1] ^= 1
        assert not F.input_checksums_valid(bad, p)
        assert F.residue(bad[p.l3:p.l3 + p.ihl]) == 0
    zero = F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IP) + F.ipv4(
        src, dst, 17, F.udp_dgram(src, dst, 1, 53, b"abc", zero_check=True))
    assert Ether(zero)[UDP].chksum == 0 and F.input_checksums_valid(zero, F.parse(zero))


def test_oracle_classification():
    """What the oracle treats as ours: the README's rules, case by case."""
    src, dst = F.a4("10.0.0.2"), F.a4("10.0.0.100")
    seg = F.tcp_seg(src, dst, 40000, 80, F.TCP_SYN)

    def frame(tags=(), **ip):
        return bytearray(F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IP, tags) +
                         F.ipv4(src, dst, 6, seg, **ip))

    assert F.parse(frame()) is not None
    assert F.parse(frame(opts=b"\x01" * 4)).ihl == 24
    assert F.parse(frame(tags=((F.ETH_P_8021Q, 1),))).l3 == 18
    assert F.parse(frame(tags=((F.ETH_P_8021AD, 1),))).l3 == 18
    assert F.parse(frame(tags=((F.ETH_P_8021AD, 1), (F.ETH_P_8021Q, 2)))) is None
    assert F.parse(frame(frag=0x4000)) is not None           # DF only
    assert not F.parse(frame(frag=0x4000)).first_frag
    for frag in (0x2000, 0x6000):                           # a first fragment: ports
        assert F.parse(frame(frag=frag)).first_frag and F.parse_later(frame(frag=frag)) is None
    for frag in (0x0001, 0x1FFF, 0x6001):                   # a later one: none
        assert F.parse(frame(frag=frag)) is None
        assert F.parse_later(frame(frag=frag)).offset == (frag & 0x1FFF) * 8
    f = frame()
    assert F.parse(f[:-1]) is None                           # truncated
    assert F.parse(f + b"\0" * 6) is not None                # Ethernet padding
    for ihl in (0, 4, 6, 15):
        g = bytearray(f)
        g[14] = 0x40 | ihl
        assert F.parse(g) is None, ihl
    for tot in (0, 19, 20, 39, len(f) - 13):
        g = bytearray(f)
        g[16:18] = tot.to_bytes(2, "big")
        assert F.parse(g) is None, tot
    g = bytearray(f)
    g[14 + 20 + 12] = 0x40                                   # data offset 4
    assert F.parse(g) is None


def test_ipv6_builders_and_checksums_agree_with_scapy():
    """IPv6 frames (extension headers before TCP/UDP, an ICMPv6 error) as
    scapy writes them, checksums (with IPv6's pseudo-header) included."""
    src, dst = F.a6("fd00:1::2"), F.a6("fd00:1::100")
    seg = F.tcp_seg(src, dst, 40000, 80, F.TCP_SYN, b"hello", b"\x02\x04\x05\xb4")
    exts = F.ext_header(F.NH_ROUTING, 0) + F.ext_header(F.NH_DEST, 1, b"\x01\x0c") + \
        F.ext_header(6, 0)
    cases = [F.ipv6(src, dst, F.NH_HOP, seg, exts),
             F.ipv6(src, dst, 17, F.udp_dgram(src, dst, 5353, 53, b"odd")),
             F.ipv6(src, dst, F.NH_ICMPV6, icmp6_too_big(src, dst, b"\x60" + b"\0" * 47))]
    for raw in cases:
        frame = F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IPV6) + raw
        ref = Ether(frame)
        for layer in (TCP, UDP, ICMPv6PacketTooBig):
            if layer in ref:
                delattr(ref[layer], "cksum" if layer is ICMPv6PacketTooBig else "chksum")
        assert bytes(Ether(bytes(ref))) == frame
    p = F.parse(F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IPV6) + cases[0])
    assert (p.l3, p.ihl, p.tot, p.l4, p.dport) == (14, 40 + 8 + 16 + 8, 40 + 32 + len(seg), 86, 80)
    assert F.input_checksums_valid(F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IPV6) + cases[0], p)
    zero = F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IPV6) + F.ipv6(
        src, dst, 17, F.udp_dgram(src, dst, 1, 53, b"abc", zero_check=True))
    assert not F.input_checksums_valid(zero, F.parse(zero))     # RFC 8200 8.1


def icmp6_too_big(src, dst, quoted, mtu=1280):
    """A packet too big quoting `quoted`, its checksum computed."""
    msg = bytearray(bytes((2, 0, 0, 0)) + mtu.to_bytes(4, "big") + quoted)
    msg[2:4] = F.csum_for(F.pseudo(src, dst, F.NH_ICMPV6, len(msg)) + msg).to_bytes(2, "big")
    return bytes(msg)


def test_oracle_classification_ipv6():
    """What the oracle takes for an IPv6 packet of ours: TCP/UDP after at
    most four hop-by-hop, routing and destination-options headers, the
    payload length not 0 and inside the frame, the headers inside it."""
    src, dst = F.a6("fd00:1::2"), F.a6("fd00:1::100")
    seg = F.tcp_seg(src, dst, 40000, 80, F.TCP_SYN)

    def frame(chain=(), tags=()):
        exts, nh = b"", 6
        for kind in reversed(chain):
            exts, nh = (F.ext_header(nh, 0) if kind in F.EXT_WALKED else
                        bytes((nh, 0)) + b"\0" * 6) + exts, kind
        return bytearray(F.eth(b"\x02" * 6, b"\x04" * 6, F.ETH_P_IPV6, tags) +
                         F.ipv6(src, dst, nh, seg, exts))

    assert F.parse(frame()).key == (src, dst, 40000, 80, 6)
    assert F.parse(frame(tags=((F.ETH_P_8021Q, 1),))).l3 == 18
    assert F.parse(frame(chain=(F.NH_HOP, F.NH_ROUTING, F.NH_DEST, F.NH_DEST))).ihl == 72
    assert F.parse(frame(chain=(F.NH_DEST,) * 5)) is None        # a fifth
    for other in (50, 51, 59, 135, 253):                          # not walked
        assert F.parse(frame(chain=(F.NH_HOP, other))) is None, other
    # a fragment header after the walked ones, TCP right after it: an atomic
    # fragment is whole, a first one has the ports, a later one none
    assert not F.parse(frame(chain=(F.NH_HOP, 44))).first_frag
    assert F.parse(frame(chain=(44, F.NH_DEST))) is None           # nothing walked past it
    for field, first, later in ((1, True, None), (8, None, 8), (0xFFF9, None, 0xFFF8)):
        g = frame(chain=(F.NH_HOP, 44))
        g[14 + 40 + 8 + 2:14 + 40 + 8 + 4] = field.to_bytes(2, "big")
        g[14 + 40 + 8 + 4:14 + 40 + 8 + 8] = (0xDEADBEEF).to_bytes(4, "big")
        p, q = F.parse(g), F.parse_later(g)
        assert (p and (p.first_frag, p.ident)) == (first and (True, 0xDEADBEEF)), field
        assert (q and (q.offset, q.frag_key())) == \
            (later and (later, (src, dst, 0xDEADBEEF, 6))), field
    f = frame()
    assert F.parse(f + b"\0" * 6) is not None                   # Ethernet padding
    assert F.parse(f[:-1]) is None                               # truncated
    for plen in (0, 19, len(f) - 14 - 40 + 1):                   # jumbo, short, past
        g = bytearray(f)
        g[18:20] = plen.to_bytes(2, "big")
        assert F.parse(g) is None, plen
    g = bytearray(f)
    g[14] = 0x45                                                 # IPv4 behind 86DD
    assert F.parse(g) is None


class FaultyRunner:
    """The real runner whose answers are corrupted by fault(frame, verdict, out)."""

    def __init__(self, real, fault):
        self.real, self.fault = real, fault

    def run(self, data, ifindex):
        verdict, out, duration = self.real.run(data, ifindex)
        return (*self.fault(bytes(data), verdict, bytearray(out)), duration)


def _flip_not_ours(f, verdict, out):
    if F.parse(f) is None and len(out) > 30:
        out[-1] ^= 0x40
    return verdict, bytes(out)


def _abort_some(f, verdict, out):
    return (F.XDP_ABORTED if len(f) % 97 == 0 else verdict), bytes(out)


def _bad_l4_checksum(f, verdict, out):
    p = F.parse(out)
    if verdict in (F.XDP_TX, F.XDP_REDIRECT) and p and bytes(out[12:]) != f[12:]:
        co = F.l4_check_off(p)
        if out[co] or out[co + 1]:
            out[co] ^= 0x01
    return verdict, bytes(out)


def _bad_ip_checksum(f, verdict, out):
    p = F.parse(out)
    if verdict in (F.XDP_TX, F.XDP_REDIRECT) and p:
        out[p.l3 + 10] ^= 0x10
    return verdict, bytes(out)


def _udp_zero_filled(f, verdict, out):
    p = F.parse(out)
    if verdict in (F.XDP_TX, F.XDP_REDIRECT) and p and p.proto == 17:
        co = F.l4_check_off(p)
        if out[co] == 0 and out[co + 1] == 0:
            out[co + 1] = 1
    return verdict, bytes(out)


def _wrong_field(f, verdict, out):
    p = F.parse(out)
    if verdict in (F.XDP_TX, F.XDP_REDIRECT) and p:
        out[p.l3 + 8] ^= 0xFF  # TTL
    return verdict, bytes(out)


def _pass_instead_of_forward(f, verdict, out):
    if verdict in (F.XDP_TX, F.XDP_REDIRECT):
        return F.XDP_PASS, f
    return verdict, bytes(out)


def _later_fragment_left_behind(f, verdict, out):
    if F.parse_later(f) is not None and verdict in (F.XDP_TX, F.XDP_REDIRECT):
        return F.XDP_PASS, f
    return verdict, bytes(out)


def _later_fragment_data_changed(f, verdict, out):
    q = F.parse_later(f)
    if q is not None and verdict in (F.XDP_TX, F.XDP_REDIRECT):
        out[q.l3 + q.tot - 1] ^= 0x04
    return verdict, bytes(out)


def _outer_source_changed(f, verdict, out):
    p = F.parse(f)
    if p and len(out) > len(f):      # encapsulated: the outer source is at l3 + 12
        out[p.l3 + 12] ^= 1
    return verdict, bytes(out)


def _encapsulation_dropped(f, verdict, out):
    if len(out) > len(f) and verdict in (F.XDP_TX, F.XDP_REDIRECT):
        return verdict, f
    return verdict, bytes(out)


def _ipv6(f):
    h = F.l3_start(f)
    return h is not None and h[1] == F.ETH_P_IPV6


def _ipv6_flip(name, offset, mask):
    """A fault: an IPv6 TCP/UDP frame the program sent on rewritten, with
    the byte at offset(parsed output) (None: none) XORed with mask."""
    def fault(f, verdict, out):
        p = F.parse(out)
        if _ipv6(f) and p and verdict in (F.XDP_TX, F.XDP_REDIRECT) and bytes(out[12:]) != f[12:]:
            at = offset(p)
            if at is not None:
                out[at] ^= mask
        return verdict, bytes(out)
    fault.__name__ = f"_ipv6_{name}"
    return fault


def _icmpv6_checksum(f, verdict, out):
    """A translated ICMPv6 error (or an ICMPv6 answer) sent on with its
    checksum one off."""
    if _ipv6(f) and F.parse(f) is None and verdict in (F.XDP_TX, F.XDP_REDIRECT):
        out[F.l3_start(out)[0] + 42] ^= 0x01
    return verdict, bytes(out)


def _icmpv6_answer_hop_limit(f, verdict, out):
    if _ipv6(f) and F.parse(f) and F.parse(out) is None and verdict in (F.XDP_TX,
                                                                       F.XDP_REDIRECT):
        out[F.l3_start(out)[0] + 7] = 255
    return verdict, bytes(out)


def _ipv6_not_ours_changed(f, verdict, out):
    if _ipv6(f) and F.parse(f) is None and verdict == F.XDP_PASS and len(out) > 60:
        out[-1] ^= 0x40
    return verdict, bytes(out)


@pytest.mark.parametrize("fault, what", [
    (_ipv6_flip("l4_checksum", F.l4_check_off, 0x01), "L4 checksum invalid"),
    (_ipv6_flip("hop_limit", lambda p: p.l3 + 7, 0xFF), "bytes other than NAT/DR fields differ"),
    (_ipv6_flip("extension_header", lambda p: p.l3 + 42 if p.ihl > 40 else None, 0x20),
     "bytes other than NAT/DR fields differ"),
    # the destination's last bit: Route changes nothing but MACs, Masq sets it
    (_ipv6_flip("destination", lambda p: p.dst_at + 15, 0x01),
     "bytes other than NAT/DR fields differ"),
    (_icmpv6_checksum, "not translated as it must be"),
    (_icmpv6_answer_hop_limit, "not the ICMP answer it must be"),
    (_ipv6_not_ours_changed, "not ours, but not passed byte-identical"),
    (_later_fragment_left_behind, "later fragment not sent as its first fragment was"),
    (_later_fragment_data_changed, "not its first fragment's rewrite"),
    (_outer_source_changed, "bytes differ from the encapsulation"),
    (_encapsulation_dropped, "bytes added"),
    (_flip_not_ours, "not ours, but not passed byte-identical"),
    (_abort_some, "XDP_ABORTED"),
    (_bad_l4_checksum, "L4 checksum invalid"),
    (_bad_ip_checksum, "IP checksum invalid"),
    (_udp_zero_filled, "zero UDP checksum was changed"),
    (_wrong_field, "bytes other than NAT/DR fields differ"),
    (_pass_instead_of_forward, "passed a frame the FIB can forward"),
])
def test_oracle_reports_injected_faults(fuzzer, fault, what):
    fuzzer.runner = FaultyRunner(fuzzer.runner, fault)
    fuzzer.max_violations = 1000
    fuzzer.run(3000)
    assert fuzzer.violations, f"the oracle missed {fault.__name__}"
    assert any(what in v["what"] for v in fuzzer.violations), fuzzer.violations[:3]


def _filter_cleared(fz):
    fz.s.rs_filter.put_zeros(range(S.XDPLB_RS_FILTER_WORDS))


def _port_zero_forgotten(fz):
    for k in list(fz.s.rs_table.keys()):
        if k.port == 0:
            fz.s.rs_table.delete(k)


def _first_service_only(fz):
    for k, v in list(fz.s.rs_table.items()):
        v.n = 1
        fz.s.rs_table.put(k, v)


@pytest.mark.parametrize("drift", [_filter_cleared, _port_zero_forgotten, _first_service_only])
def test_oracle_reports_rs_table_drift(fuzzer, drift):
    """rs_table / rs_filter not as the control plane writes them: replies
    the oracle finds through them are passed untouched, which it reports."""
    write_config = fuzzer.write_config

    def drifted():
        write_config()
        drift(fuzzer)

    fuzzer.write_config = drifted
    fuzzer.max_violations = 1000
    fuzzer.run(5000)
    assert any("passed a frame the FIB can forward" in v["what"] for v in fuzzer.violations), \
        fuzzer.violations[:3]


def _conn_key(key):
    return S.ConnKey(saddr=(C.c_uint8 * 4)(*key[0]), daddr=(C.c_uint8 * 4)(*key[1]),
                     sport=socket.htons(key[2]), dport=socket.htons(key[3]), proto=key[4])


def test_oracle_reports_table_drift(fuzzer):
    """An entry the program did not make (or lost) fails the batch check."""
    fuzzer.start_batch()
    assert fuzzer.s.conn_table.delete(_conn_key(fuzzer.oracle.flows_in[F.V4][0]))
    fuzzer.end_batch()
    assert any("conns map differs" in v["what"] for v in fuzzer.violations)


def test_oracle_reports_reply_egress_drift(fuzzer):
    """An entry caches its replies' egress exactly when a reply was
    forwarded: one lost, or one cached without a reply, fails the batch."""
    fz, net = fuzzer, fuzzer.net
    fz.start_batch()
    rs, client, rport, cport, _ = next(k for k in fz.oracle.flows_out[F.V4]
                                       if k[1] == net.client and k[0] in net.rs_mac and k[4] == 6)
    reply = bytearray(F.eth(net.srv_mac, net.rs_mac[rs], F.ETH_P_IP) +
                      F.ipv4(rs, client, 6, F.tcp_seg(rs, client, rport, cport, F.TCP_ACK)))
    fz.check(reply, net.srv, "reply")
    replied = _conn_key(fz.oracle.reply_of(F.parse(reply)).key)
    quiet = _conn_key(next(k for k in fz.oracle.flows_in[F.V4] if k not in fz.oracle.replied))
    for k, ifindex in ((replied, 0), (quiet, net.cli)):
        v = fz.s.conn_table.get(k)
        v.ifindex = ifindex
        fz.s.conn_table.put(k, v)
    fz.end_batch()
    whats = {v["what"] for v in fz.violations}
    assert whats == {"a reply was forwarded, but its egress is not cached",
                     "reply egress cached without a forwarded reply"}, fz.violations
