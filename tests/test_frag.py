"""IPv4 fragments through the real data path (BPF_PROG_TEST_RUN), bpf/frag.h.

The first fragment carries the ports and is balanced as a whole packet; the
later ones follow it, by the record it left in `frags`, to the same real
server with the same IP-header rewrite. Every expected fragment is cut by
scapy from the datagram as the real server must reassemble it (addresses,
ports and the L4 checksum over the whole datagram computed from scratch),
so every byte of every output frame is checked.
"""
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether

from packets import icmp_unreach
from test_datapath import (CLI_MAC, CLIENT, CLIENT_MAC, RPORT, RS, SRV_MAC, VIP, XDP_DROP,
                           XDP_PASS, XDP_REDIRECT, XDP_TX, DataPath, assert_pass_identical, be16,
                           ip4, mac)
from xdplb import structs as S

UDP_PORT = 53
PAYLOAD = bytes(range(256)) * 10  # 2,560 bytes: three fragments of 1,000


@pytest.fixture
def dp(datapath_state, datapath_net):
    """Empty maps, no fragment records, inside the data-path netns."""
    with datapath_net["ns"].entered():
        d = DataPath(datapath_state, datapath_net)
        d.reset()
        d.s.frags.clear()
        try:
            yield d
        finally:
            d.s.frags.clear()


def datagram(src, dst, sport, dport, ident, proto="udp", payload=PAYLOAD, flags="PA"):
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else \
        TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=1)
    return IP(src=src, dst=dst, id=ident) / l4 / payload


def frames(dgram, smac, dmac, size=1000):
    """The datagram's fragments as Ethernet frames (bytes), as its sender's
    stack cuts them (size bytes of data each, a multiple of 8)."""
    return [bytes(Ether(src=smac, dst=dmac) / f) for f in fragment(dgram, fragsize=size)]


def to_rs(dgram, rs, rs_mac, port=RPORT):
    """What the real server must get: the datagram NATed to rs:port."""
    d = dgram.copy()
    d[IP].dst = rs
    d[IP].payload.dport = port
    del d[IP].payload.chksum
    return frames(IP(bytes(d)), SRV_MAC, rs_mac)


def to_client(dgram, vport):
    """A real server's reply as the client must get it: from the VIP."""
    d = dgram.copy()
    d[IP].src = VIP
    d[IP].payload.sport = vport
    del d[IP].payload.chksum
    return frames(IP(bytes(d)), CLI_MAC, CLIENT_MAC)


def reassembled_len(dgram):
    return len(bytes(dgram))


def frag_rec(dp, src, dst, ident, proto=socket.IPPROTO_UDP):
    return dp.s.frags.get(S.FragKey(saddr=ip4(src), daddr=ip4(dst), id=be16(ident), proto=proto))


def run_all(dp, frs, ifindex=None):
    return [dp.run(f, ifindex) for f in frs]


# --- Masq -------------------------------------------------------------------

def test_udp_first_fragment_makes_the_connection_and_the_rest_follow(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dg = datagram(CLIENT, VIP, 5000, UDP_PORT, ident=0x1234)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert len(sent) == 3
    assert run_all(dp, sent) == [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[0])]

    c = dp.conn(CLIENT, VIP, 5000, UDP_PORT, socket.IPPROTO_UDP)
    assert c.dest_slot == 1 and bytes(c.addr) == socket.inet_aton(RS[0][0])
    r = frag_rec(dp, CLIENT, VIP, 0x1234)
    assert bytes(r.addr) == socket.inet_aton(RS[0][0]) and r.out == 0
    assert r.ifindex == dp.srv and bytes(r.smac) == mac(SRV_MAC)
    assert bytes(r.dmac) == mac(RS[0][1])
    assert (r.svc_slot, r.dest_slot, r.l4_len) == (1, 1, 8) and r.stamp > 0
    # counted as IPVS counts the reassembled datagram: one packet, its length
    for st in (dp.s.svc_stats.sum(1), dp.s.dest_stats.sum(1)):
        assert (st.conns, st.inpkts, st.inbytes) == (1, 1, reassembled_len(dg))
    cnt = dp.counters()
    assert (cnt["rx"], cnt["fwd"], cnt["frag_untracked"]) == (3, 3, 0)


def test_fragments_of_a_tracked_udp_flow_and_its_replies(dp):
    dp.service(1, {1: RS[0][0], 2: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    small = datagram(CLIENT, VIP, 5001, UDP_PORT, ident=1, payload=b"hello")
    assert dp.run(frames(small, CLIENT_MAC, CLI_MAC)[0])[0] == XDP_REDIRECT
    dg = datagram(CLIENT, VIP, 5001, UDP_PORT, ident=2)
    assert run_all(dp, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[0])]

    # the real server's fragmented answer: un-NATed, first through rs_table
    reply = datagram(RS[0][0], CLIENT, RPORT, 5001, ident=0x7777, payload=PAYLOAD[:2100])
    sent = frames(reply, RS[0][1], SRV_MAC)
    assert run_all(dp, sent, dp.srv) == [(XDP_REDIRECT, f) for f in to_client(reply, UDP_PORT)]
    r = frag_rec(dp, RS[0][0], CLIENT, 0x7777)
    assert bytes(r.addr) == socket.inet_aton(VIP) and r.out == 1 and r.ifindex == dp.cli
    for st in (dp.s.svc_stats.sum(1), dp.s.dest_stats.sum(1)):
        assert (st.conns, st.inpkts, st.outpkts) == (1, 2, 1)
        assert st.inbytes == reassembled_len(small) + reassembled_len(dg)
        assert st.outbytes == reassembled_len(reply)


def test_tcp_segment_fragmented_on_a_tracked_connection(dp):
    dp.service(1, {1: RS[2][0]})
    syn = datagram(CLIENT, VIP, 40100, 80, ident=9, proto="tcp", payload=b"", flags="S")
    assert dp.run(frames(syn, CLIENT_MAC, CLI_MAC)[0])[0] == XDP_REDIRECT
    dg = datagram(CLIENT, VIP, 40100, 80, ident=10, proto="tcp")
    out = run_all(dp, frames(dg, CLIENT_MAC, CLI_MAC))
    assert out == [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[2])]
    assert frag_rec(dp, CLIENT, VIP, 10, socket.IPPROTO_TCP).l4_len == 20
    assert dp.s.dest_stats.sum(1).inbytes == reassembled_len(syn) + reassembled_len(dg)


def test_a_fragmented_syn_is_scheduled(dp):
    dp.service(1, {1: RS[1][0]})
    dg = datagram(CLIENT, VIP, 40101, 80, ident=11, proto="tcp", flags="S")
    out = run_all(dp, frames(dg, CLIENT_MAC, CLI_MAC))
    assert out == [(XDP_REDIRECT, f) for f in to_rs(dg, *RS[1])]
    assert dp.conn(CLIENT, VIP, 40101, 80).state == S.IP_VS_TCP_S_SYN_RECV
    assert dp.s.svc_stats.sum(1).conns == 1


def test_interleaved_datagrams_each_follow_their_first_fragment(dp):
    """Two flows scheduled to two real servers, their fragments interleaved
    (and one IP id shared): no fragment goes to the other's server."""
    dp.service(1, {1: RS[0][0], 2: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    a = datagram(CLIENT, VIP, 5010, UDP_PORT, ident=42)
    b = datagram(CLIENT, VIP, 5011, UDP_PORT, ident=43)
    fa, fb = frames(a, CLIENT_MAC, CLI_MAC), frames(b, CLIENT_MAC, CLI_MAC)
    ea, eb = to_rs(a, *RS[0]), to_rs(b, *RS[1])
    order = [(fa, ea, 0), (fb, eb, 0), (fb, eb, 2), (fa, ea, 1), (fa, ea, 2), (fb, eb, 1)]
    for sent, expected, i in order:
        assert dp.run(sent[i]) == (XDP_REDIRECT, expected[i])


# --- Route --------------------------------------------------------------------

def test_route_fragments_change_only_macs(dp):
    dp.service(1, {1: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT,
               fwd=S.IP_VS_CONN_F_DROUTE)
    dg = datagram(CLIENT, VIP, 5020, UDP_PORT, ident=0x4242)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert run_all(dp, sent) == [(XDP_REDIRECT, frames(dg, SRV_MAC, RS[1][1])[i])
                                 for i in range(3)]
    r = frag_rec(dp, CLIENT, VIP, 0x4242)
    assert bytes(r.addr) == bytes(4) and r.ifindex == dp.srv and r.dest_slot == 1
    assert dp.s.dest_stats.sum(1).inbytes == reassembled_len(dg)


def test_route_on_the_ingress_link_is_xdp_tx_for_every_fragment(dp):
    near_ip, near_mac = dp.net["near_rs_ip"], dp.net["near_rs_mac"]
    dp.service(1, {1: near_ip}, proto=socket.IPPROTO_UDP, vport=UDP_PORT,
               fwd=S.IP_VS_CONN_F_DROUTE)
    dg = datagram(CLIENT, VIP, 5021, UDP_PORT, ident=5)
    assert run_all(dp, frames(dg, CLIENT_MAC, CLI_MAC)) == \
        [(XDP_TX, f) for f in frames(dg, CLI_MAC, near_mac)]
    assert frag_rec(dp, CLIENT, VIP, 5).ifindex == dp.cli


# --- first fragment not forwarded by XDP ----------------------------------------

def test_no_neighbour_first_fragment_and_the_rest_go_to_the_stack_rewritten(dp):
    rs = dp.net["rs_no_neigh"]
    dp.service(1, {1: rs}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dg = datagram(CLIENT, VIP, 5030, UDP_PORT, ident=77)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    # rewritten, with the client's MACs still on: the stack resolves the neighbour
    expected = [bytes(Ether(src=CLIENT_MAC, dst=CLI_MAC) / Ether(f)[IP])
                for f in to_rs(dg, rs, "00:00:00:00:00:00")]
    assert run_all(dp, sent) == [(XDP_PASS, f) for f in expected]
    assert frag_rec(dp, CLIENT, VIP, 77).ifindex == 0
    cnt = dp.counters()
    assert (cnt["to_stack"], cnt["frag_untracked"]) == (3, 0)


def test_unscheduled_first_fragment_leaves_no_record(dp):
    """No destination: the first fragment is answered with port unreachable
    (quoting its IP header and UDP header, as for a whole datagram), and
    nothing is recorded, so the later ones pass."""
    dp.service(1, {}, ring=[], proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dg = datagram(CLIENT, VIP, 5031, UDP_PORT, ident=78)
    first, *rest = frames(dg, CLIENT_MAC, CLI_MAC)
    assert dp.run(first) == (XDP_REDIRECT, icmp_unreach(Ether(first), 3))
    assert frag_rec(dp, CLIENT, VIP, 78) is None
    for f in rest:
        assert_pass_identical(dp, f)
    cnt = dp.counters()
    assert (cnt["no_dest"], cnt["frag_untracked"]) == (1, 2)


# --- out of order, unknown, stale, overlapping, truncated ---------------------

def test_later_fragment_ahead_of_its_first_passes_untouched(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dg = datagram(CLIENT, VIP, 5040, UDP_PORT, ident=90)
    sent, expected = frames(dg, CLIENT_MAC, CLI_MAC), to_rs(dg, *RS[0])
    assert_pass_identical(dp, sent[2])
    assert dp.counters()["frag_untracked"] == 1
    assert dp.run(sent[0]) == (XDP_REDIRECT, expected[0])
    assert dp.run(sent[1]) == (XDP_REDIRECT, expected[1])
    # a later copy of the one that came early now follows its first fragment
    assert dp.run(sent[2]) == (XDP_REDIRECT, expected[2])


def test_fragments_not_for_a_service_pass_untouched(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    other = datagram(CLIENT, "10.0.0.200", 5041, UDP_PORT, ident=91)
    wrong_port = datagram(CLIENT, VIP, 5041, 54, ident=92)
    for dg in (other, wrong_port):
        for f in frames(dg, CLIENT_MAC, CLI_MAC):
            assert_pass_identical(dp, f)
    assert not list(dp.s.frags.keys())
    cnt = dp.counters()
    assert (cnt["pass"], cnt["frag_untracked"], cnt["fwd"]) == (2, 4, 0)
    # fragments of other protocols are not ours at all
    icmp = IP(src=CLIENT, dst=VIP, id=93, proto=1) / (b"\x08\x00" + PAYLOAD)
    for f in frames(icmp, CLIENT_MAC, CLI_MAC):
        assert_pass_identical(dp, f)
    assert dp.counters()["pass"] == 5


def test_a_stale_record_is_not_followed(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dg = datagram(CLIENT, VIP, 5042, UDP_PORT, ident=94)
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert dp.run(sent[0])[0] == XDP_REDIRECT
    key = S.FragKey(saddr=ip4(CLIENT), daddr=ip4(VIP), id=be16(94), proto=socket.IPPROTO_UDP)
    r = dp.s.frags.get(key)
    r.stamp -= S.XDPLB_FRAG_TTL_NS + 300_000_000  # past the lifetime, beyond a clock tick
    dp.s.frags.put(key, r)
    assert_pass_identical(dp, sent[1])
    assert dp.counters()["frag_untracked"] == 1


def test_fragment_overlapping_the_tcp_header_is_dropped(dp):
    """RFC 1858: a later fragment starting inside the first fragment's TCP
    header could change the ports the real server sees after xdplb chose it."""
    dp.service(1, {1: RS[0][0]})
    assert dp.run(frames(datagram(CLIENT, VIP, 40110, 80, ident=1, proto="tcp", payload=b"",
                                  flags="S"), CLIENT_MAC, CLI_MAC)[0])[0] == XDP_REDIRECT
    dg = datagram(CLIENT, VIP, 40110, 80, ident=95, proto="tcp")
    sent = frames(dg, CLIENT_MAC, CLI_MAC)
    assert dp.run(sent[0]) == (XDP_REDIRECT, to_rs(dg, *RS[0])[0])
    overlap = Ether(sent[1])
    overlap[IP].frag = 1                     # 8 bytes in: inside the 20-byte header
    del overlap[IP].chksum
    verdict, _ = dp.run(bytes(overlap.__class__(bytes(overlap))))
    assert verdict == XDP_DROP and dp.counters()["frag_overlap"] == 1
    # at the header's end it is an ordinary (if overlapping-data) fragment
    overlap[IP].frag = 3
    del overlap[IP].chksum
    again = bytes(overlap.__class__(bytes(overlap)))
    verdict, out = dp.run(again)
    assert verdict == XDP_REDIRECT and Ether(out)[IP].dst == RS[0][0]


def test_truncated_fragments_pass_untouched(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=UDP_PORT)
    dp.service(2, {2: RS[1][0]})
    dg = datagram(CLIENT, VIP, 5043, UDP_PORT, ident=96)
    tiny = [bytes(Ether(src=CLIENT_MAC, dst=CLI_MAC) / f) for f in fragment(dg, fragsize=8)]
    tiny_tcp = Ether(src=CLIENT_MAC, dst=CLI_MAC) / fragment(
        datagram(CLIENT, VIP, 40120, 80, ident=97, proto="tcp", flags="S"), fragsize=16)[0]
    first = Ether(frames(dg, CLIENT_MAC, CLI_MAC)[0])
    cut = bytes(first)[:len(first) - 100]     # tot_len beyond the frame
    later = frames(dg, CLIENT_MAC, CLI_MAC)[1][:60]
    # an 8-byte first fragment holds a whole UDP header: it is balanced
    assert dp.run(tiny[0])[0] == XDP_REDIRECT
    for f in (bytes(tiny_tcp), cut, later):
        assert_pass_identical(dp, f)
    assert frag_rec(dp, CLIENT, VIP, 97, socket.IPPROTO_TCP) is None
    assert dp.conn(CLIENT, VIP, 40120, 80) is None
