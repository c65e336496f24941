"""Tunnel forwarding (-i), packet by packet, through BPF_PROG_TEST_RUN.

A Tunnel connection's packet leaves inside an outer IPv4 header (ipip) or
outer IPv4 + UDP + GUE (gue), from the balancer's address on the egress
interface (tun_src) to the real server; every output byte is compared with a
frame scapy builds independently (tests/packets.py encapsulated()), UDP
checksum included.
"""
import ctypes as C
import socket

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from packets import encapsulated, icmp_unreach, tcp, udp
from test_datapath import (CLI_MAC, CLIENT, RS, SRV_MAC, VIP, VPORT, XDP_PASS, XDP_REDIRECT,
                           XDP_TX, DataPath, be16, ip4)
from xdplb import structs as S

GUE_PORT = 6080
IPIP, GUE = S.IP_VS_CONN_F_TUNNEL_TYPE_IPIP, S.IP_VS_CONN_F_TUNNEL_TYPE_GUE
CSUM, NOCSUM = S.IP_VS_TUNNEL_ENCAP_FLAG_CSUM, S.IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM
REMCSUM = S.IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM
# --tun-remcsum sends what --tun-csum sends (bpf/encap.h outer_gue)
TUNNELS = [(IPIP, NOCSUM), (GUE, NOCSUM), (GUE, CSUM), (GUE, REMCSUM)]


class TunnelPath(DataPath):
    def tunnel(self, slot, dests, proto=socket.IPPROTO_TCP, tun_type=IPIP, tun_flags=NOCSUM,
               vport=VPORT):
        """A service whose destinations {dest slot: address} are Tunnel ones
        (port forced to the virtual port, as ipvsadm does)."""
        self.service(slot, dests, proto=proto, vport=vport, fwd=S.IP_VS_CONN_F_TUNNEL)
        for dslot, addr in dests.items():
            self.s.dests.put(dslot, S.DestEntry(
                addr=ip4(addr), port=be16(vport), fwd=S.IP_VS_CONN_F_TUNNEL,
                flags=S.XDPLB_DEST_F_AVAILABLE, svc_slot=slot, weight=1,
                tun_type=tun_type, tun_flags=tun_flags,
                tun_port=be16(GUE_PORT) if tun_type == GUE else 0))

    def sources(self, **by_ifindex):
        """tun_src as `xdplb attach` writes it: {ifindex: address}, the rest 0."""
        for idx in (self.cli, self.srv):
            self.s.tun_src.put(idx, C.c_uint32(0))
        for idx, addr in by_ifindex.items():
            self.s.tun_src.put(int(idx), C.c_uint32.from_buffer_copy(socket.inet_aton(addr)))


@pytest.fixture
def tp(datapath_state, datapath_net):
    with datapath_net["ns"].entered():
        t = TunnelPath(datapath_state, datapath_net)
        t.reset()
        t.sources(**{str(t.srv): datapath_net["srv_ip"], str(t.cli): datapath_net["cli_ip"]})
        yield t
        t.sources()


def to_rs(tp, frame, rs=0, **kw):
    return encapsulated(frame, tp.net["srv_ip"], RS[rs][0], SRV_MAC, RS[rs][1], **kw)


@pytest.mark.parametrize("tun_type,tun_flags", TUNNELS)
def test_tcp_connection_through_the_tunnel(tp, tun_type, tun_flags):
    """SYN, ACK with data, FIN, ACK: each encapsulated byte for byte; the
    entry is a Tunnel one, input-only states end in FIN_WAIT, OutPkts 0,
    InBytes the inner packets'."""
    tp.tunnel(1, {1: RS[0][0]}, tun_type=tun_type, tun_flags=tun_flags)
    kw = dict(tun_port=GUE_PORT, csum=tun_flags != NOCSUM) if tun_type == GUE else {}
    frames = [tcp(CLIENT, VIP, 40000, VPORT),
              tcp(CLIENT, VIP, 40000, VPORT, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n"),
              tcp(CLIENT, VIP, 40000, VPORT, flags="FA"),
              tcp(CLIENT, VIP, 40000, VPORT, flags="A")]
    states = []
    for f in frames:
        verdict, out = tp.run(f)
        assert verdict == XDP_REDIRECT
        assert out == to_rs(tp, f, **kw)
        states.append(tp.conn(CLIENT, VIP, 40000, VPORT).state)
    assert states == [S.IP_VS_TCP_S_SYN_RECV, S.IP_VS_TCP_S_ESTABLISHED,
                      S.IP_VS_TCP_S_FIN_WAIT, S.IP_VS_TCP_S_FIN_WAIT]
    c = tp.conn(CLIENT, VIP, 40000, VPORT)
    assert c.fwd == S.IP_VS_CONN_F_TUNNEL and bytes(c.addr) == socket.inet_aton(RS[0][0])
    for st in (tp.s.svc_stats.sum(1), tp.s.dest_stats.sum(1)):
        assert (st.conns, st.inpkts, st.outpkts, st.outbytes) == (1, 4, 0, 0)
        assert st.inbytes == sum(len(f[IP]) for f in frames)
    cnt = tp.counters()
    assert cnt["fwd"] == 4 and cnt["rx"] == 4


@pytest.mark.parametrize("tun_type,tun_flags", TUNNELS)
def test_udp_through_the_tunnel(tp, tun_type, tun_flags):
    tp.tunnel(1, {1: RS[1][0]}, proto=socket.IPPROTO_UDP, tun_type=tun_type,
              tun_flags=tun_flags, vport=53)
    kw = dict(tun_port=GUE_PORT, csum=tun_flags != NOCSUM) if tun_type == GUE else {}
    for payload in (b"q", b"x" * 11, b"y" * 300):
        f = udp(CLIENT, VIP, 40100, 53, payload=payload)
        assert tp.run(f) == (XDP_REDIRECT, to_rs(tp, f, rs=1, **kw))
    assert tp.s.svc_stats.sum(1).outpkts == 0


def test_gue_csum_with_inner_udp_without_checksum(tp):
    """An inner datagram without checksum gives nothing to derive the outer
    one from: the outer UDP checksum is 0 as well (RFC 768 allows it)."""
    tp.tunnel(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, tun_type=GUE, tun_flags=CSUM,
              vport=53)
    f = udp(CLIENT, VIP, 40110, 53, chksum=0)
    verdict, out = tp.run(f)
    assert verdict == XDP_REDIRECT
    assert out == to_rs(tp, f, tun_port=GUE_PORT, csum=False)
    assert Ether(out)[UDP].chksum == 0


def test_outer_header_copies_df_ttl_and_tos(tp):
    """DF set: outer DF, ID 0; TTL copied; DSCP copied and CE -> ECT(0)."""
    tp.tunnel(1, {1: RS[0][0]}, tun_type=GUE, tun_flags=CSUM)
    for tos, ttl in ((0xbb, 17), (0xb8, 64), (0x01, 1)):
        f = tcp(CLIENT, VIP, 40120 + ttl, VPORT, flags="S", tos=tos, ttl=ttl, id=4242)
        f[IP].flags = "DF"
        verdict, out = tp.run(f)
        assert verdict == XDP_REDIRECT
        assert out == to_rs(tp, f, tun_port=GUE_PORT, csum=True)
        o = Ether(out)[IP]
        assert o.id == 0 and o.flags == 2 and o.ttl == ttl and o.tos == (0xba if tos == 0xbb
                                                                            else tos)


def test_flow_port_differs_between_flows(tp):
    tp.tunnel(1, {1: RS[0][0]}, tun_type=GUE)
    ports = set()
    for cport in range(40200, 40210):
        verdict, out = tp.run(tcp(CLIENT, VIP, cport, VPORT))
        assert verdict == XDP_REDIRECT
        sport = Ether(out)[UDP].sport
        assert 32768 <= sport < 61000
        ports.add(sport)
    assert len(ports) == 10


def test_vlan_tag_is_kept(tp):
    tp.tunnel(1, {1: RS[0][0]})
    f = tcp(CLIENT, VIP, 40300, VPORT, vlan=7)
    assert tp.run(f) == (XDP_REDIRECT, to_rs(tp, f))


def test_egress_is_ingress_goes_out_by_xdp_tx(tp):
    near, near_mac = tp.net["near_rs_ip"], tp.net["near_rs_mac"]
    tp.tunnel(1, {1: near})
    f = tcp(CLIENT, VIP, 40310, VPORT)
    assert tp.run(f) == (XDP_TX, encapsulated(f, tp.net["cli_ip"], near, CLI_MAC, near_mac))


def test_too_big_once_encapsulated_passes_untouched(tp):
    """1500 bytes fit the veth's MTU, 1500 + 20 do not: not forwarded
    oversize; without DF passed as it came and counted; 1480 still goes."""
    tp.tunnel(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=53)
    big = udp(CLIENT, VIP, 40400, 53, payload=b"z" * (1500 - 28))
    verdict, out = tp.run(big)
    assert (verdict, out) == (XDP_PASS, bytes(big))
    assert tp.counters()["tun_too_big"] == 1
    fits = udp(CLIENT, VIP, 40401, 53, payload=b"z" * (1480 - 28))
    assert tp.run(fits) == (XDP_REDIRECT, to_rs(tp, fits))
    tp.tunnel(2, {2: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=54, tun_type=GUE)
    gue_big = udp(CLIENT, VIP, 40402, 54, payload=b"z" * (1500 - 32 - 28 + 1))
    assert tp.run(gue_big) == (XDP_PASS, bytes(gue_big))
    assert tp.counters()["tun_too_big"] == 2


def test_too_big_with_df_is_answered_fragmentation_needed(tp):
    """As IPVS's tunnel xmit: from the VIP, quoting the packet, with the MTU
    left inside the tunnel (the veth's 1500 less ipip's 20 or GUE's 32)."""
    for slot, vport, tun_type, overhead in ((1, 53, None, 20), (2, 54, GUE, 32)):
        kw = {} if tun_type is None else {"tun_type": tun_type}
        tp.tunnel(slot, {slot: RS[slot - 1][0]}, proto=socket.IPPROTO_UDP, vport=vport, **kw)
        big = Ether(src="02:00:00:00:01:02", dst="02:00:00:00:01:01") / IP(
            src=CLIENT, dst=VIP, flags="DF") / UDP(sport=40450 + slot, dport=vport) / (
            b"z" * (1500 - 28 - overhead + 1))
        assert tp.run(big) == (XDP_REDIRECT, icmp_unreach(big, 4, mtu=1500 - overhead))
    cnt = tp.counters()
    assert (cnt["frag_needed"], cnt["tun_too_big"]) == (2, 0)


def test_without_a_source_address_passes_untouched(tp):
    tp.sources()
    tp.tunnel(1, {1: RS[0][0]})
    f = tcp(CLIENT, VIP, 40500, VPORT)
    assert tp.run(f) == (XDP_PASS, bytes(f))
    assert tp.counters()["tun_no_src"] == 1


def test_unresolved_neighbour_goes_to_the_stack_encapsulated(tp):
    """As Masq's NATed packet does: the kernel resolves the real server's MAC
    (the MACs are still the ones the frame came with)."""
    tp.tunnel(1, {1: tp.net["rs_no_neigh"]})
    f = tcp(CLIENT, VIP, 40600, VPORT)
    verdict, out = tp.run(f)
    assert verdict == XDP_PASS
    assert out == encapsulated(f, tp.net["srv_ip"], tp.net["rs_no_neigh"], f[Ether].src,
                               f[Ether].dst)
    assert tp.counters()["to_stack"] == 1


def test_no_route_passes_untouched(tp):
    tp.tunnel(1, {1: tp.net["rs_no_route"]})
    f = tcp(CLIENT, VIP, 40700, VPORT)
    assert tp.run(f) == (XDP_PASS, bytes(f))
    assert tp.counters()["no_route"] == 1
