"""IPv6 fragments through the real data path (BPF_PROG_TEST_RUN), bpf/frag.h
compiled for IPv6: as tests/test_frag.py for IPv4.

The first fragment (offset 0, M) carries the ports and is balanced as a
whole packet; the later ones follow it, by the record it left in
`frags6` (source, destination, identification, next header), to the same
real server with the same IPv6-header rewrite. Every expected fragment is
cut by scapy (fragment6) from the datagram as the real server must
reassemble it (addresses, ports and the L4 checksum over the whole datagram
computed from scratch), so every byte of every output frame is checked.
"""
import socket

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting, fragment6)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from test_datapath6 import (CLI_MAC, CLIENT, CLIENT_MAC, RPORT, RS, SRV_MAC, VIP,  # noqa: F401
                            VPORT, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, a6, conn6, counters,
                            icmp6, icmp6_answer, run, service, v6)
from xdplb import structs as T
from xdplb.model import IP_VS_CONN_F_DROUTE, IPPROTO_TCP, IPPROTO_UDP, Service

PAYLOAD = bytes(range(256)) * 10  # 2,560 bytes: three fragments of 1,000


@pytest.fixture
def f6(v6):
    """conftest's control over the data path, no fragment records before or after."""
    v6.st.frags6.clear()
    try:
        yield v6
    finally:
        v6.st.frags6.clear()


def datagram(src, dst, sport, dport, ident, proto="udp", payload=PAYLOAD, flags="PA", exts=None):
    """The datagram as its sender's stack fragments it: a fragment header
    (after exts, the unfragmentable part) before TCP or UDP."""
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else \
        TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=1)
    ip = IPv6(src=src, dst=dst)
    if exts is not None:
        ip = ip / exts
    return ip / IPv6ExtHdrFragment(id=ident) / l4 / payload


def frames(dgram, smac, dmac, size=1064):
    """The datagram's fragments as Ethernet frames (bytes), as fragment6 cuts
    them: size bytes of IPv6 packet each (1,000 of data after 40 + 8 + 16)."""
    return [bytes(Ether(src=smac, dst=dmac) / f) for f in fragment6(dgram, size)]


def _rewritten(dgram, changes):
    d = IPv6(bytes(dgram))
    for (layer, field), value in changes.items():
        setattr(d[layer], field, value)
    del d[d[IPv6ExtHdrFragment].payload.__class__].chksum
    return IPv6(bytes(d))


def to_rs(dgram, rs, rs_mac, port=RPORT):
    """What the real server must get: the datagram NATed to rs:port."""
    l4 = dgram[IPv6ExtHdrFragment].payload.__class__
    return frames(_rewritten(dgram, {(IPv6, "dst"): rs, (l4, "dport"): port}), SRV_MAC, rs_mac)


def to_client(dgram, vport=VPORT):
    """A real server's reply as the client must get it: from the VIP."""
    l4 = dgram[IPv6ExtHdrFragment].payload.__class__
    return frames(_rewritten(dgram, {(IPv6, "src"): VIP, (l4, "sport"): vport}), CLI_MAC,
                  CLIENT_MAC)


def reassembled_len(dgram):
    """The datagram's IPv6 length once reassembled (no fragment header):
    what IPVS counts."""
    return len(bytes(dgram)) - 8


def server_of(ctl, sport, proto=IPPROTO_UDP):
    """(address, MAC) of the real server the client's flow from sport went to."""
    addr = socket.inet_ntop(socket.AF_INET6, bytes(conn6(ctl, CLIENT, sport, proto).addr6))
    return next(rs for rs in RS if rs[0] == addr)


def frag_rec(ctl, src, dst, ident, proto=IPPROTO_UDP):
    key = T.FragKey6.from_buffer_copy(a6(src) + a6(dst) + ident.to_bytes(4, "big")
                                      + bytes([proto, 0, 0, 0]))
    return ctl.st.frags6.get(key)


def run_all(ctl, frs, side="cli"):
    return [run(ctl, f, side) for f in frs]


def svc_stats(ctl):
    [svc] = ctl.services(stats=True)
    return svc.stats, svc.dests[0].stats


# --- Masq ---------------------------------------------------------------------------

def test_udp_first_fragment_makes_the_connection_and_the_rest_follow(f6):
    service(f6, [RS[0][0]], proto=IPPROTO_UDP)
    dg = datagram(CLIENT, VIP, 5000, VPORT, ident=0x12345678)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert len(sent) == 3
    assert run_all(f6, sent) == [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[0])]

    c = conn6(f6, CLIENT, 5000, IPPROTO_UDP)
    assert bytes(c.addr6) == a6(RS[0][0]) and c.c.port == socket.htons(RPORT)
    r = frag_rec(f6, CLIENT, VIP, 0x12345678)
    assert bytes(r.addr6) == a6(RS[0][0]) and r.r.out == 0
    assert r.r.ifindex == f6.net["srv_idx"] and bytes(r.r.smac) == bytes.fromhex("020000000201")
    assert bytes(r.r.dmac) == bytes.fromhex(RS[0][1].replace(":", ""))
    assert r.r.dest_slot == c.c.dest_slot and r.r.svc_slot == c.c.svc_slot
    assert r.r.l4_len == 8 and r.r.stamp > 0
    assert not list(f6.st.frags.keys())     # nothing in IPv4's records
    # counted as IPVS counts the reassembled datagram: one packet, its length
    for st in svc_stats(f6):
        assert (st.conns, st.inpkts, st.inbytes) == (1, 1, reassembled_len(dg))
    cnt = counters(f6)
    assert (cnt["rx"], cnt["fwd"], cnt["frag_untracked"]) == (3, 3, 0)


def test_fragments_of_a_tracked_udp_flow_and_its_replies(f6):
    service(f6, [RS[0][0], RS[1][0]], proto=IPPROTO_UDP)
    # one datagram in one packet: an atomic fragment, counted whole
    small = datagram(CLIENT, VIP, 5001, VPORT, ident=1, payload=b"hello")
    [atomic] = frames(small, CLIENT_MAC, CLI_MAC)
    assert run(f6, atomic)[0] == XDP_REDIRECT
    rs = server_of(f6, 5001)
    dg = datagram(CLIENT, VIP, 5001, VPORT, ident=2)
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_REDIRECT, f) for f in to_rs(dg, *rs)]

    # the real server's fragmented answer: un-NATed, the first through rs_table6
    reply = datagram(rs[0], CLIENT, RPORT, 5001, ident=0x7777, payload=PAYLOAD[:2100])
    sent = frames(reply, rs[1], SRV_MAC)
    assert run_all(f6, sent, "srv") == [(XDP_REDIRECT, f) for f in to_client(reply)]
    r = frag_rec(f6, rs[0], CLIENT, 0x7777)
    assert bytes(r.addr6) == a6(VIP) and r.r.out == 1 and r.r.ifindex == f6.net["cli_idx"]
    [svc] = f6.services(stats=True)
    [d] = [d for d in svc.dests if d.stats.conns]
    for st in (svc.stats, d.stats):
        assert (st.conns, st.inpkts, st.outpkts) == (1, 2, 1)
        assert st.inbytes == len(bytes(small)) + reassembled_len(dg)
        assert st.outbytes == reassembled_len(reply)


def test_tcp_segment_fragmented_on_a_tracked_connection(f6):
    service(f6, [RS[2][0]])
    syn = datagram(CLIENT, VIP, 40100, VPORT, ident=9, proto="tcp", payload=b"", flags="S")
    assert run(f6, frames(syn, CLIENT_MAC, CLI_MAC)[0])[0] == XDP_REDIRECT
    dg = datagram(CLIENT, VIP, 40100, VPORT, ident=10, proto="tcp")
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[2])]
    assert frag_rec(f6, CLIENT, VIP, 10, IPPROTO_TCP).r.l4_len == 20
    assert conn6(f6, CLIENT, 40100).c.state == T.IP_VS_TCP_S_ESTABLISHED
    assert svc_stats(f6)[1].inbytes == len(bytes(syn)) + reassembled_len(dg)   # syn: atomic


def test_extension_headers_before_the_fragment_header_are_kept(f6):
    """Hop-by-hop, routing and destination options (the unfragmentable part)
    before the fragment header: in every fragment, carried unchanged."""
    service(f6, [RS[1][0]])
    exts = IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[], segleft=0) / \
        IPv6ExtHdrDestOpt()
    dg = datagram(CLIENT, VIP, 40101, VPORT, ident=11, proto="tcp", flags="S", exts=exts)
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[1])]
    assert conn6(f6, CLIENT, 40101).c.state == T.IP_VS_TCP_S_SYN_RECV
    assert svc_stats(f6)[0].inbytes == reassembled_len(dg)


def test_interleaved_datagrams_each_follow_their_first_fragment(f6):
    """Two flows scheduled to two real servers, their fragments interleaved
    (one identification shared): no fragment goes to the other's server."""
    service(f6, [RS[0][0], RS[1][0]], proto=IPPROTO_UDP)
    a = datagram(CLIENT, VIP, 5010, VPORT, ident=42)
    b = datagram(CLIENT, VIP, 5011, VPORT, ident=43)
    fa, fb = frames(a, CLIENT_MAC, CLI_MAC), frames(b, CLIENT_MAC, CLI_MAC)
    assert run(f6, fa[0])[0] == run(f6, fb[0])[0] == XDP_REDIRECT
    ra, rb = server_of(f6, 5010), server_of(f6, 5011)
    assert ra != rb
    ea, eb = to_rs(a, *ra), to_rs(b, *rb)
    for sent, expected, i in [(fb, eb, 2), (fa, ea, 1), (fa, ea, 2), (fb, eb, 1)]:
        assert run(f6, sent[i]) == (XDP_REDIRECT, expected[i])


def test_atomic_fragment_is_a_whole_packet(f6):
    """Offset 0 without M: balanced as a whole packet, its fragment header
    kept, counted whole, nothing recorded."""
    service(f6, [RS[0][0]], proto=IPPROTO_UDP)
    dg = datagram(CLIENT, VIP, 5012, VPORT, ident=44, payload=b"atomic")
    frame = bytes(Ether(src=CLIENT_MAC, dst=CLI_MAC) / dg)
    assert run(f6, frame) == (XDP_REDIRECT, bytes(Ether(src=SRV_MAC, dst=RS[0][1]) / _rewritten(
        dg, {(IPv6, "dst"): RS[0][0], (UDP, "dport"): RPORT})))
    assert frag_rec(f6, CLIENT, VIP, 44) is None
    assert svc_stats(f6)[0].inbytes == len(bytes(dg))


# --- Route --------------------------------------------------------------------

def test_route_fragments_change_only_macs(f6):
    service(f6, [RS[1][0]], proto=IPPROTO_UDP, fwd=IP_VS_CONN_F_DROUTE)
    dg = datagram(CLIENT, VIP, 5020, VPORT, ident=0x4242)
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_REDIRECT, f) for f in frames(dg, SRV_MAC, RS[1][1])]
    r = frag_rec(f6, CLIENT, VIP, 0x4242)
    assert bytes(r.addr6) == bytes(16) and r.r.ifindex == f6.net["srv_idx"]
    assert svc_stats(f6)[1].inbytes == reassembled_len(dg)


def test_route_on_the_ingress_link_is_xdp_tx_for_every_fragment(f6):
    near_ip, near_mac = f6.net["near_rs_ip6"], f6.net["near_rs_mac"]
    service(f6, [near_ip], proto=IPPROTO_UDP, fwd=IP_VS_CONN_F_DROUTE)
    dg = datagram(CLIENT, VIP, 5021, VPORT, ident=5)
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_TX, f) for f in frames(dg, CLI_MAC, near_mac)]
    assert frag_rec(f6, CLIENT, VIP, 5).r.ifindex == f6.net["cli_idx"]


# --- first fragment not forwarded by XDP ----------------------------------------

def test_no_neighbour_first_fragment_and_the_rest_go_to_the_stack_rewritten(f6):
    rs = f6.net["rs6_no_neigh"]
    service(f6, [rs], proto=IPPROTO_UDP)
    dg = datagram(CLIENT, VIP, 5030, VPORT, ident=77)
    # rewritten, with the client's MACs still on: the stack resolves the neighbour
    expected = [bytes(Ether(src=CLIENT_MAC, dst=CLI_MAC) / Ether(f)[IPv6])
                for f in to_rs(dg, rs, "00:00:00:00:00:00")]
    assert run_all(f6, frames(dg, CLIENT_MAC, CLI_MAC)) == [(XDP_PASS, f) for f in expected]
    assert frag_rec(f6, CLIENT, VIP, 77).r.ifindex == 0
    cnt = counters(f6)
    assert (cnt["to_stack"], cnt["frag_untracked"]) == (3, 0)


def test_unscheduled_first_fragment_leaves_no_record(icmp6):
    """No destination: the first fragment is answered port unreachable
    (quoting it, as a whole datagram would be), nothing is recorded, and
    the later ones pass."""
    icmp6.st.frags6.clear()
    icmp6.add_service(Service(IPPROTO_UDP, VIP, VPORT, sched="rr"))
    dg = datagram(CLIENT, VIP, 5031, VPORT, ident=78)
    first, *rest = frames(dg, CLIENT_MAC, CLI_MAC)
    assert run(icmp6, first) == (XDP_REDIRECT, icmp6_answer(Ether(first), 1, code=4))
    assert frag_rec(icmp6, CLIENT, VIP, 78) is None
    for f in rest:
        assert run(icmp6, f) == (XDP_PASS, f)
    cnt = counters(icmp6)
    assert (cnt["no_dest"], cnt["frag_untracked"]) == (1, 2)


# --- out of order, unknown, stale, overlapping, not ours, truncated ---------------

def test_later_fragment_ahead_of_its_first_passes_untouched(f6):
    service(f6, [RS[0][0]], proto=IPPROTO_UDP)
    dg = datagram(CLIENT, VIP, 5040, VPORT, ident=90)
    sent, expected = frames(dg, CLIENT_MAC, CLI_MAC), to_rs(dg, *RS[0])
    assert run(f6, sent[2]) == (XDP_PASS, sent[2])
    assert counters(f6)["frag_untracked"] == 1
    assert run(f6, sent[0]) == (XDP_REDIRECT, expected[0])
    assert run(f6, sent[1]) == (XDP_REDIRECT, expected[1])
    # a later copy of the one that came early now follows its first fragment
    assert run(f6, sent[2]) == (XDP_REDIRECT, expected[2])


def test_a_stale_record_is_not_followed(f6):
    service(f6, [RS[0][0]], proto=IPPROTO_UDP)
    dg = datagram(CLIENT, VIP, 5042, VPORT, ident=94)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert run(f6, sent[0])[0] == XDP_REDIRECT
    key = T.FragKey6.from_buffer_copy(a6(CLIENT) + a6(VIP) + (94).to_bytes(4, "big")
                                      + bytes([IPPROTO_UDP, 0, 0, 0]))
    r = f6.st.frags6.get(key)
    r.r.stamp -= T.XDPLB_FRAG_TTL_NS + 300_000_000  # past the lifetime, beyond a clock tick
    f6.st.frags6.put(key, r)
    assert run(f6, sent[1]) == (XDP_PASS, sent[1])
    assert counters(f6)["frag_untracked"] == 1


def test_fragment_overlapping_the_tcp_header_is_dropped(f6):
    """RFC 5722 / RFC 1858: a later fragment starting inside the first
    fragment's TCP header could change the ports the real server sees
    after xdplb chose it."""
    service(f6, [RS[0][0]])
    syn = datagram(CLIENT, VIP, 40110, VPORT, ident=1, proto="tcp", payload=b"", flags="S")
    assert run(f6, frames(syn, CLIENT_MAC, CLI_MAC)[0])[0] == XDP_REDIRECT
    dg = datagram(CLIENT, VIP, 40110, VPORT, ident=95, proto="tcp")
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert run(f6, sent[0]) == (XDP_REDIRECT, to_rs(dg, *RS[0])[0])
    overlap = Ether(sent[1])
    overlap[IPv6ExtHdrFragment].offset = 2     # 16 bytes in: inside the 20-byte header
    verdict, out = run(f6, bytes(overlap))
    assert (verdict, out) == (XDP_DROP, bytes(overlap))
    assert counters(f6)["frag_overlap"] == 1
    # at the header's end it is an ordinary (if overlapping-data) fragment
    overlap[IPv6ExtHdrFragment].offset = 3
    verdict, out = run(f6, bytes(overlap))
    assert verdict == XDP_REDIRECT and Ether(out)[IPv6].dst == RS[0][0]


def test_fragments_not_ours_pass_untouched(f6):
    service(f6, [RS[0][0]], proto=IPPROTO_UDP)
    other = datagram(CLIENT, "fd00:1::200", 5041, VPORT, ident=91)
    wrong_port = datagram(CLIENT, VIP, 5041, VPORT + 1, ident=92)
    for dg in (other, wrong_port):
        for f in frames(dg, CLIENT_MAC, CLI_MAC):
            assert run(f6, f) == (XDP_PASS, f)
    assert not list(f6.st.frags6.keys())
    cnt = counters(f6)
    assert (cnt["pass"], cnt["frag_untracked"], cnt["fwd"]) == (2, 4, 0)
    # fragments of other protocols, and a destination-options header in the
    # fragmentable part (its first fragment's TCP/UDP is not right after the
    # fragment header), are not ours at all: every fragment passes, uncounted
    icmp = IPv6(src=CLIENT, dst=VIP) / IPv6ExtHdrFragment(id=93) / Raw(b"\x80\x00" + PAYLOAD)
    dest = IPv6(src=CLIENT, dst=VIP) / IPv6ExtHdrFragment(id=96) / IPv6ExtHdrDestOpt() / \
        UDP(sport=5041, dport=VPORT) / PAYLOAD
    for dg in (icmp, dest):
        for f in frames(dg, CLIENT_MAC, CLI_MAC):
            assert run(f6, f) == (XDP_PASS, f)
    assert counters(f6)["pass"] == 2 + 6 and counters(f6)["frag_untracked"] == 4
    assert f6.connections() == []


def test_truncated_fragments_pass_untouched(f6):
    service(f6, [RS[0][0]])
    tcp_first = Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src=CLIENT, dst=VIP) / \
        IPv6ExtHdrFragment(id=97, m=1) / Raw(bytes(TCP(sport=40120, dport=VPORT, flags="S"))[:16])
    first = frames(datagram(CLIENT, VIP, 40121, VPORT, ident=98, proto="tcp", flags="S"),
                   CLIENT_MAC, CLI_MAC)[0]
    cut = first[:len(first) - 100]               # payload length beyond the frame
    no_frag_hdr = first[:14 + 40 + 4]            # the fragment header cut
    short_plen = Ether(first)
    short_plen[IPv6].plen = 4                    # the fragment header past the payload
    for f in (bytes(tcp_first), cut, no_frag_hdr, bytes(short_plen)):
        assert run(f6, f) == (XDP_PASS, f)
    assert frag_rec(f6, CLIENT, VIP, 97, IPPROTO_TCP) is None
    assert f6.connections() == []
