"""The XDP data path, packet by packet, through BPF_PROG_TEST_RUN.

Every test runs the real program compiled from bpf/xdplb.c, with map entries
written by hand, and compares every output byte with a frame scapy builds
independently (checksums recomputed from scratch).
"""
import ctypes as C
import errno
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from packets import icmp_unreach, rebuilt, tcp, udp
from xdplb import bpfsys, config, loader
from xdplb import structs as S

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

VIP, VPORT = "10.0.0.100", 80
CLIENT, CLIENT_MAC = "10.0.0.2", "02:00:00:00:01:02"
CLI_MAC, SRV_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
RS = [("172.80.0.2", "02:00:00:00:02:02"), ("172.80.0.3", "02:00:00:00:02:03"),
      ("172.80.0.4", "02:00:00:00:02:04")]
RPORT = 8080


def test_run(prog_fd, data, ifindex):
    verdict, out, _ = bpfsys.prog_test_run(prog_fd, data, ingress_ifindex=ifindex)
    return verdict, out


test_run.__test__ = False


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def ip4(addr):
    return (C.c_uint8 * 4)(*socket.inet_aton(addr))


def be16(port):
    return socket.htons(port)


class DataPath:
    def __init__(self, state, net):
        self.s, self.net = state, net
        self.cli, self.srv = net["cli_idx"], net["srv_idx"]

    def reset(self):
        # IPv6's too: zeroing rs_filter under another module's rs_table6
        # entries would leave them without their bits, which the control
        # plane (rs_join) then takes as set
        for name in ("services", "services6", "sched_ring", "conn_table", "conn_table6",
                     "rs_table", "rs_table6", "fnat_out", "fnat_out6"):
            getattr(self.s, name).clear()
        for word in range(S.XDPLB_RS_FILTER_WORDS):
            self.s.rs_filter.put(word, C.c_uint64(0))
        for slot in range(16):
            self.s.dests.put(slot, S.DestEntry())
            self.s.sched_pos.put(slot, S.SchedPos())
            self.s.svc_stats.zero(slot)
            self.s.dest_stats.zero(slot)
        for idx in range(S.XDPLB_CNT_MAX):
            self.s.counters.zero(idx)

    def service(self, slot, dests, ring=None, prefix=0, proto=socket.IPPROTO_TCP,
                vip=VIP, vport=VPORT, fwd=S.IP_VS_CONN_F_MASQ):
        """dests: {dest slot: address}; ring: dest slots in schedule order."""
        ring = list(dests) if ring is None else ring
        for dslot, addr in dests.items():
            self.s.dests.put(dslot, S.DestEntry(addr=ip4(addr), port=be16(RPORT), fwd=fwd,
                                           flags=S.XDPLB_DEST_F_AVAILABLE, svc_slot=slot,
                                           weight=1))
        for i, dslot in enumerate(ring):
            self.s.sched_ring.put(S.RingKey(slot, i), C.c_uint32(dslot))
        if fwd == S.IP_VS_CONN_F_MASQ:
            self.real_servers((proto, vip, vport), dests.values())
        self.s.services.put(S.SvcKey(addr=ip4(vip), port=be16(vport), proto=proto),
                            S.SvcEntry(slot=slot, ring_len=len(ring), ring_prefix=prefix,
                                      sched=S.XDPLB_SCHED_RR))

    def real_servers(self, svc_k, addrs, port=RPORT):
        """rs_table / rs_filter for masquerading destinations addrs:port of
        service svc_k = (proto, vip, vport), as the control plane writes them."""
        sk = S.SvcKey(addr=ip4(svc_k[1]), port=be16(svc_k[2]), proto=svc_k[0])
        for addr in addrs:
            key = S.RsKey.from_buffer_copy(config.rs_key(svc_k, socket.inet_aton(addr),
                                                         be16(port)))
            v = self.s.rs_table.get(key) or S.RsSvcs()
            v.svc[v.n] = sk
            v.n += 1
            self.s.rs_table.put(key, v)
            bit = config.rs_filter_bit(socket.inet_aton(addr))
            word = self.s.rs_filter.get(bit >> 6).value
            self.s.rs_filter.put(bit >> 6, C.c_uint64(word | 1 << (bit & 63)))

    def run(self, frame, ifindex=None):
        return test_run(self.s.prog_fd, bytes(frame), ifindex or self.cli)

    def counters(self):
        return {name: self.s.counters.sum(i) for i, name in enumerate(S.COUNTERS)}

    def conn(self, saddr, daddr, sport, dport, proto=socket.IPPROTO_TCP):
        return self.s.conn_table.get(S.ConnKey(saddr=ip4(saddr), daddr=ip4(daddr),
                                          sport=be16(sport), dport=be16(dport), proto=proto))


@pytest.fixture
def dp(datapath_state, datapath_net):
    """Empty maps, and this test inside the data-path netns."""
    with datapath_net["ns"].entered():
        d = DataPath(datapath_state, datapath_net)
        d.reset()
        yield d


def nat_in(frame, rs_ip, rs_mac, port=RPORT):
    return rebuilt(frame, {(Ether, "src"): SRV_MAC, (Ether, "dst"): rs_mac,
                           (IP, "dst"): rs_ip, (frame[IP].payload.__class__, "dport"): port})


def assert_pass_identical(dp, frame, ifindex=None):
    verdict, out = dp.run(frame, ifindex)
    assert verdict == XDP_PASS
    assert out == bytes(frame)


# --- NAT (Masq) -------------------------------------------------------------

def test_masq_tcp_in_and_reply(dp):
    dp.service(1, {1: RS[0][0]})
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    verdict, out = dp.run(syn)
    assert verdict == XDP_REDIRECT
    assert out == nat_in(syn, *RS[0])

    c = dp.conn(CLIENT, VIP, 40000, VPORT)
    assert c.dir == S.XDPLB_DIR_IN and c.fwd == S.IP_VS_CONN_F_MASQ
    assert bytes(c.addr) == socket.inet_aton(RS[0][0]) and c.port == be16(RPORT)
    assert c.dest_slot == 1 and c.svc_slot == 1
    assert c.state == S.IP_VS_TCP_S_SYN_RECV and c.last_seen > 0
    assert c.ifindex == 0       # the replies' egress: resolved by the first reply

    synack = tcp(RS[0][0], CLIENT, RPORT, 40000, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
    verdict, out = dp.run(synack, dp.srv)
    assert verdict == XDP_REDIRECT
    assert out == rebuilt(synack, {(Ether, "src"): CLI_MAC, (Ether, "dst"): CLIENT_MAC,
                                   (IP, "src"): VIP, (TCP, "sport"): VPORT})
    c = dp.conn(CLIENT, VIP, 40000, VPORT)
    assert c.state == S.IP_VS_TCP_S_SYN_RECV and c.ifindex == dp.cli
    assert bytes(c.smac) == mac(CLI_MAC) and bytes(c.dmac) == mac(CLIENT_MAC)
    # one entry per connection: the reply found it through rs_table
    assert dp.conn(RS[0][0], CLIENT, RPORT, 40000) is None
    assert len(dp.s.conn_table.keys()) == 1

    ack = tcp(CLIENT, VIP, 40000, VPORT, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n")
    verdict, out = dp.run(ack)
    assert verdict == XDP_REDIRECT and out == nat_in(ack, *RS[0])
    assert dp.conn(CLIENT, VIP, 40000, VPORT).state == S.IP_VS_TCP_S_ESTABLISHED

    svc, dst = dp.s.svc_stats.sum(1), dp.s.dest_stats.sum(1)
    for st in (svc, dst):
        assert st.conns == 1
        assert st.inpkts == 2 and st.inbytes == len(syn[IP]) + len(ack[IP])
        assert st.outpkts == 1 and st.outbytes == len(synack[IP])
    cnt = dp.counters()
    assert cnt["rx"] == 3 and cnt["fwd"] == 3 and cnt["pass"] == 0


def _unnat(frame, vip=VIP, vport=VPORT):
    return rebuilt(frame, {(Ether, "src"): CLI_MAC, (Ether, "dst"): CLIENT_MAC,
                           (IP, "src"): vip, (TCP, "sport"): vport})


def test_masq_replies_of_a_real_server_in_two_services(dp):
    """One real server addr:port behind two virtual services: rs_table lists
    both, and each reply goes back as the service its client connected to."""
    vip2 = "10.0.0.101"
    dp.service(1, {1: RS[0][0]})
    dp.service(2, {2: RS[0][0]}, vip=vip2)
    for cport, vip in ((40200, VIP), (40201, vip2)):
        syn = tcp(CLIENT, vip, cport, VPORT)
        assert dp.run(syn) == (XDP_REDIRECT, nat_in(syn, *RS[0]))
    for cport, vip in ((40201, vip2), (40200, VIP)):
        reply = tcp(RS[0][0], CLIENT, RPORT, cport, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
        assert dp.run(reply, dp.srv) == (XDP_REDIRECT, _unnat(reply, vip))
    assert dp.s.svc_stats.sum(1).outpkts == dp.s.svc_stats.sum(2).outpkts == 1
    # a reply to no connection of either is not ours
    stray = tcp(RS[0][0], CLIENT, RPORT, 40202, flags="A", smac=RS[0][1], dmac=SRV_MAC)
    assert dp.run(stray, dp.srv) == (XDP_PASS, bytes(stray))


def test_masq_replies_of_a_port_zero_service(dp):
    """A port-zero service keeps the client's port: its replies come from
    that port, and rs_table has its real server under port 0."""
    dp.service(1, {1: RS[0][0]}, vport=0)
    dp.s.rs_table.clear()
    dp.real_servers((socket.IPPROTO_TCP, VIP, 0), [RS[0][0]], port=0)
    syn = tcp(CLIENT, VIP, 40210, 443)
    assert dp.run(syn) == (XDP_REDIRECT, nat_in(syn, *RS[0], port=443))
    reply = tcp(RS[0][0], CLIENT, 443, 40210, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
    assert dp.run(reply, dp.srv) == (XDP_REDIRECT, _unnat(reply, VIP, 443))


def test_a_real_server_is_also_a_client(dp):
    """A masquerading real server's own connection to a virtual service is
    not taken for a reply: its address passes the filter, rs_table has no
    service for its port, so it is scheduled as any client's."""
    dp.service(1, {1: RS[0][0], 2: RS[1][0]})
    syn = tcp(RS[1][0], VIP, 40220, VPORT, smac=RS[1][1], dmac=SRV_MAC)
    verdict, out = dp.run(syn, dp.srv)
    assert verdict in (XDP_TX, XDP_REDIRECT) and Ether(out)[IP].dst == RS[0][0]
    assert dp.conn(RS[1][0], VIP, 40220, VPORT).dest_slot == 1


def test_masq_second_packet_sticks(dp):
    dp.service(1, {1: RS[0][0], 2: RS[1][0], 3: RS[2][0]})
    syn = tcp(CLIENT, VIP, 40001, VPORT)
    assert dp.run(syn)[1] == nat_in(syn, *RS[0])
    for flags in ("A", "PA", "A"):
        pkt = tcp(CLIENT, VIP, 40001, VPORT, flags=flags, payload=b"data")
        verdict, out = dp.run(pkt)
        assert verdict == XDP_REDIRECT and out == nat_in(pkt, *RS[0])
    assert dp.s.svc_stats.sum(1).conns == 1
    assert dp.s.sched_pos.get(1).pos == 1


def test_masq_ip_options(dp):
    dp.service(1, {1: RS[0][0]})
    syn = tcp(CLIENT, VIP, 40002, VPORT, options=[b"\x01\x01\x01\x00"])
    assert syn[IP].ihl is None and len(bytes(syn[IP])) == 44
    verdict, out = dp.run(syn)
    assert verdict == XDP_REDIRECT and out == nat_in(syn, *RS[0])


def test_masq_udp(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=53)
    q = udp(CLIENT, VIP, 5353, 53)
    verdict, out = dp.run(q)
    assert verdict == XDP_REDIRECT and out == nat_in(q, *RS[0])
    assert dp.conn(CLIENT, VIP, 5353, 53, socket.IPPROTO_UDP).state == 0
    r = udp(RS[0][0], CLIENT, RPORT, 5353, smac=RS[0][1], dmac=SRV_MAC)
    verdict, out = dp.run(r, dp.srv)
    assert verdict == XDP_REDIRECT
    assert out == rebuilt(r, {(Ether, "src"): CLI_MAC, (Ether, "dst"): CLIENT_MAC,
                              (IP, "src"): VIP, (UDP, "sport"): 53})
    assert dp.s.dest_stats.sum(1).outpkts == 1


def test_masq_udp_zero_checksum_stays_zero(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=53)
    q = udp(CLIENT, VIP, 5354, 53, chksum=0)
    verdict, out = dp.run(q)
    exp = nat_in(q, *RS[0])
    assert verdict == XDP_REDIRECT and out == exp
    assert Ether(out)[UDP].chksum == 0


def test_masq_udp_checksum_zero_becomes_ffff(dp):
    """Find a payload whose rewritten UDP checksum computes to 0: it must be
    sent as 0xffff (scapy does the same)."""
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP, vport=53)
    # a 2-byte payload adds its value to the one's-complement sum, so the one
    # that makes the rewritten sum 0xffff (checksum 0) is the rewritten
    # checksum with payload 0 (scapy confirms it below)
    i = Ether(nat_in(udp(CLIENT, VIP, 5355, 53, payload=b"\0\0"), *RS[0]))[UDP].chksum
    q = udp(CLIENT, VIP, 5355, 53, payload=i.to_bytes(2, "big"))
    exp = nat_in(q, *RS[0])
    assert Ether(exp)[UDP].chksum == 0xffff, "no zero checksum with this payload"
    verdict, out = dp.run(q)
    assert verdict == XDP_REDIRECT and out == exp


def test_vlan_tagged_nat_keeps_tag(dp):
    dp.service(1, {1: RS[0][0]})
    for tpid in (0x8100, 0x88a8):
        syn = tcp(CLIENT, VIP, 40003 + tpid % 2, VPORT, vlan=42)
        syn[Ether].type = tpid
        verdict, out = dp.run(syn)
        assert verdict == XDP_REDIRECT
        assert out == nat_in(syn, *RS[0])
        assert out[12:16] == tpid.to_bytes(2, "big") + (42).to_bytes(2, "big")


# --- direct routing ---------------------------------------------------------

def test_droute_only_macs_change(dp):
    dp.service(1, {1: RS[1][0]}, fwd=S.IP_VS_CONN_F_DROUTE)
    syn = tcp(CLIENT, VIP, 40010, VPORT)
    verdict, out = dp.run(syn)
    assert verdict == XDP_REDIRECT
    assert out == rebuilt(syn, {(Ether, "src"): SRV_MAC,
                                   (Ether, "dst"): RS[1][1]})
    assert out[12:] == bytes(syn)[12:]
    c = dp.conn(CLIENT, VIP, 40010, VPORT)
    assert c.state == S.IP_VS_TCP_S_SYN_RECV
    # no OUT entry for Route: replies bypass the director
    assert dp.conn(RS[1][0], CLIENT, RPORT, 40010) is None
    states = [("A", S.IP_VS_TCP_S_ESTABLISHED), ("FA", S.IP_VS_TCP_S_FIN_WAIT),
              ("A", S.IP_VS_TCP_S_FIN_WAIT), ("R", S.IP_VS_TCP_S_CLOSE)]
    for flags, state in states:
        pkt = tcp(CLIENT, VIP, 40010, VPORT, flags=flags)
        verdict, out = dp.run(pkt)
        assert verdict == XDP_REDIRECT and out[12:] == bytes(pkt)[12:]
        assert dp.conn(CLIENT, VIP, 40010, VPORT).state == state
    assert dp.s.dest_stats.sum(1).outpkts == 0


def test_droute_same_link_is_xdp_tx(dp):
    near_ip, near_mac = dp.net["near_rs_ip"], dp.net["near_rs_mac"]
    dp.service(1, {1: near_ip}, fwd=S.IP_VS_CONN_F_DROUTE)
    syn = tcp(CLIENT, VIP, 40011, VPORT)
    verdict, out = dp.run(syn)
    assert verdict == XDP_TX
    assert out == rebuilt(syn, {(Ether, "src"): CLI_MAC, (Ether, "dst"): near_mac})
    assert dp.counters()["fwd"] == 1


# --- scheduling -------------------------------------------------------------

def test_rr_order_over_ring(dp):
    dp.service(1, {1: RS[0][0], 2: RS[1][0], 3: RS[2][0]}, ring=[1, 2, 3])
    got = []
    for i in range(7):
        syn = tcp(CLIENT, VIP, 41000 + i, VPORT)
        verdict, out = dp.run(syn)
        assert verdict == XDP_REDIRECT
        got.append(Ether(out)[IP].dst)
        assert out == nat_in(syn, *RS[[r[0] for r in RS].index(got[-1])])
    assert got == [RS[i % 3][0] for i in range(7)]
    assert [dp.s.dest_stats.sum(s).conns for s in (1, 2, 3)] == [3, 2, 2]
    assert dp.s.svc_stats.sum(1).conns == 7


def test_ring_prefix_then_cycle(dp):
    dp.service(1, {1: RS[0][0], 2: RS[1][0], 3: RS[2][0]}, ring=[3, 1, 2], prefix=1)
    got = [Ether(dp.run(tcp(CLIENT, VIP, 42000 + i, VPORT))[1])[IP].dst for i in range(6)]
    assert got == [RS[2][0], RS[0][0], RS[1][0], RS[0][0], RS[1][0], RS[0][0]]


def test_ring_len_zero_answers_port_unreachable(dp):
    """No destination: IPVS answers ICMP port unreachable (tests/test_icmp.py)."""
    dp.service(1, {}, ring=[])
    syn = tcp(CLIENT, VIP, 40020, VPORT)
    assert dp.run(syn) == (XDP_REDIRECT, icmp_unreach(syn, 3))
    assert dp.counters()["no_dest"] == 1
    assert dp.conn(CLIENT, VIP, 40020, VPORT) is None


def test_unavailable_dest_in_ring_answers_port_unreachable(dp):
    dp.service(1, {1: RS[0][0]})
    d = dp.s.dests.get(1)
    d.flags = 0
    dp.s.dests.put(1, d)
    syn = tcp(CLIENT, VIP, 40021, VPORT)
    assert dp.run(syn) == (XDP_REDIRECT, icmp_unreach(syn, 3))
    assert dp.counters()["no_dest"] == 1


def test_failed_tail_call_counts_tail_call(dp):
    """A scheduler id without a program in new_conn: the tail call fails and
    the SYN is dropped as tail_call, not as no_dest."""
    missing = next(i for i in range(S.XDPLB_PROG_MAX) if i not in loader.NEW_CONN_PROGS)
    dp.service(1, {1: RS[0][0]})
    key = S.SvcKey(addr=ip4(VIP), port=be16(VPORT), proto=socket.IPPROTO_TCP)
    svc = dp.s.services.get(key)
    svc.sched = missing
    dp.s.services.put(key, svc)
    assert dp.run(tcp(CLIENT, VIP, 40023, VPORT))[0] == XDP_DROP
    cnt = dp.counters()
    assert (cnt["rx"], cnt["tail_call"], cnt["no_dest"]) == (1, 1, 0)
    assert dp.conn(CLIENT, VIP, 40023, VPORT) is None


def test_dest_removed_drops_tracked_conn(dp):
    dp.service(1, {1: RS[0][0]})
    assert dp.run(tcp(CLIENT, VIP, 40022, VPORT))[0] == XDP_REDIRECT
    d = dp.s.dests.get(1)
    d.flags = 0
    dp.s.dests.put(1, d)
    assert dp.run(tcp(CLIENT, VIP, 40022, VPORT, flags="A"))[0] == XDP_DROP
    assert dp.counters()["dest_gone"] == 1
    # a slot reused by another service is gone for this connection too
    d.flags, d.svc_slot = S.XDPLB_DEST_F_AVAILABLE, 2
    dp.s.dests.put(1, d)
    assert dp.run(tcp(CLIENT, VIP, 40022, VPORT, flags="A"))[0] == XDP_DROP
    assert dp.counters()["dest_gone"] == 2
    assert dp.s.dest_stats.sum(1).inpkts == 1


# --- egress resolution ------------------------------------------------------

def test_no_neigh_masq_passes_rewritten(dp):
    rs = dp.net["rs_no_neigh"]
    dp.service(1, {1: rs})
    syn = tcp(CLIENT, VIP, 40030, VPORT)
    verdict, out = dp.run(syn)
    assert verdict == XDP_PASS
    assert out == rebuilt(syn, {(IP, "dst"): rs, (TCP, "dport"): RPORT})
    assert dp.counters()["to_stack"] == 1
    assert dp.conn(CLIENT, VIP, 40030, VPORT).ifindex == 0


def test_no_neigh_droute_passes_unchanged(dp):
    dp.service(1, {1: dp.net["rs_no_neigh"]}, fwd=S.IP_VS_CONN_F_DROUTE)
    assert_pass_identical(dp, tcp(CLIENT, VIP, 40031, VPORT))
    assert dp.counters()["to_stack"] == 1


def test_no_route_passes_untouched(dp):
    dp.service(1, {1: dp.net["rs_no_route"]})
    assert_pass_identical(dp, tcp(CLIENT, VIP, 40032, VPORT))
    assert dp.counters()["no_route"] == 1


# --- not ours: passed byte-identical ----------------------------------------

def test_not_ours_passes_identical(dp):
    dp.service(1, {1: RS[0][0]})
    frames = [
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=VIP),
        Ether(src=CLIENT_MAC, dst=CLI_MAC) / IPv6(src="fd00::2", dst="fd00::1") / TCP(dport=80),
        Ether(src=CLIENT_MAC, dst=CLI_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(),
        tcp(CLIENT, VIP, 40040, 443),
        tcp(CLIENT, "10.0.0.1", 40040, VPORT),
        udp(CLIENT, VIP, 40040, VPORT),
        Ether(src=CLIENT_MAC, dst=CLI_MAC) / Dot1Q(vlan=5) / Dot1Q(vlan=6) /
        IP(src=CLIENT, dst=VIP) / TCP(sport=40041, dport=VPORT, flags="S"),
    ]
    for f in frames:
        assert_pass_identical(dp, f)
    assert dp.counters()["pass"] == len(frames)
    assert dp.s.conn_table.get(S.ConnKey()) is None and not list(dp.s.conn_table.keys())


@pytest.mark.parametrize("flags", ["A", "SA", "SR", "F", "R", "PA", ""])
def test_non_syn_without_entry_passes(dp, flags):
    dp.service(1, {1: RS[0][0]})
    assert_pass_identical(dp, tcp(CLIENT, VIP, 40050, VPORT, flags=flags))
    assert not list(dp.s.conn_table.keys())


def test_truncated_frames(dp):
    dp.service(1, {1: RS[0][0]})
    dp.service(2, {2: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=53)
    for full in (bytes(tcp(CLIENT, VIP, 40060, VPORT, payload=b"abc")),
                 bytes(tcp(CLIENT, VIP, 40061, VPORT, vlan=7)),
                 bytes(udp(CLIENT, VIP, 40062, 53))):
        for n in range(len(full)):
            try:
                verdict, out = dp.run(full[:n])
            except OSError as e:  # the kernel refuses frames shorter than ETH_HLEN
                assert n < 14 and e.errno == errno.EINVAL
                continue
            assert verdict == XDP_PASS, n
            assert out == full[:n], n
        assert dp.run(full)[0] == XDP_REDIRECT
    assert dp.counters()["no_route"] == 0


def test_malformed_ip_passes_identical(dp):
    dp.service(1, {1: RS[0][0]})
    dp.service(2, {2: RS[1][0]}, proto=socket.IPPROTO_UDP, vport=53)
    good = tcp(CLIENT, VIP, 40070, VPORT, payload=b"x" * 20)
    tl = len(good[IP])
    bad = []
    for ihl in (0, 1, 4, 15):
        f = good.copy()
        f[IP].ihl = ihl
        bad.append(f)
    for tot_len in (0, 19, 20, 39, tl + 1, 1500):
        f = good.copy()
        f[IP].len = tot_len
        bad.append(f)
    v6 = good.copy()
    v6[IP].version = 6
    bad.append(v6)
    doff = good.copy()
    doff[TCP].dataofs = 4
    bad.append(doff)
    long_doff = good.copy()
    long_doff[TCP].dataofs = 15  # 60 > 40 bytes of TCP in the packet
    bad.append(long_doff)
    short_udp = udp(CLIENT, VIP, 40071, 53, payload=b"")
    short_udp[IP].len = 27
    bad.append(short_udp)
    for f in bad:
        assert_pass_identical(dp, Ether(bytes(f)))
    assert not list(dp.s.conn_table.keys())
    # DF is not a fragment (fragments: tests/test_frag.py)
    df = tcp(CLIENT, VIP, 40072, VPORT, flags="S")
    df[IP].flags = "DF"
    assert dp.run(df)[0] == XDP_REDIRECT


def test_trailing_padding_is_kept(dp):
    """Ethernet pads short frames: bytes after tot_len are carried along."""
    dp.service(1, {1: RS[0][0]})
    syn = tcp(CLIENT, VIP, 40080, VPORT)
    frame = bytes(syn) + b"\0" * 6
    verdict, out = dp.run(frame)
    assert verdict == XDP_REDIRECT
    assert out == nat_in(syn, *RS[0]) + b"\0" * 6
    assert dp.s.dest_stats.sum(1).inbytes == len(syn[IP])


def test_masq_tcp_states_both_directions(dp):
    """INPUT and OUTPUT tables of IPVS: the client's entry holds the state."""
    dp.service(1, {1: RS[0][0]})
    steps = [  # (from client?, flags, state after)
        (True, "S", S.IP_VS_TCP_S_SYN_RECV), (False, "SA", S.IP_VS_TCP_S_SYN_RECV),
        (True, "A", S.IP_VS_TCP_S_ESTABLISHED), (False, "FA", S.IP_VS_TCP_S_FIN_WAIT),
        (True, "A", S.IP_VS_TCP_S_FIN_WAIT), (True, "FA", S.IP_VS_TCP_S_TIME_WAIT),
        (False, "A", S.IP_VS_TCP_S_TIME_WAIT), (True, "R", S.IP_VS_TCP_S_CLOSE),
    ]
    seen = []
    for client, flags, state in steps:
        if client:
            pkt = tcp(CLIENT, VIP, 40090, VPORT, flags=flags)
            verdict, out = dp.run(pkt)
        else:
            pkt = tcp(RS[0][0], CLIENT, RPORT, 40090, flags=flags, smac=RS[0][1], dmac=SRV_MAC)
            verdict, out = dp.run(pkt, dp.srv)
        assert verdict == XDP_REDIRECT
        c = dp.conn(CLIENT, VIP, 40090, VPORT)
        seen.append(c.last_seen)
        assert c.state == state, (flags, client)
    assert seen == sorted(seen)
    assert dp.conn(RS[0][0], CLIENT, RPORT, 40090) is None    # one entry, the client's


def test_masq_reply_ack_sees_state_reset_by_client_syn(dp):
    """The reply path skips the IN lookup for a pure ACK while the OUT
    entry's copy of the state says an ACK cannot move it; a client SYN that
    takes the IN state back to SYN_RECV must refresh that copy, so the
    server's ACK still moves the state to ESTABLISHED."""
    dp.service(1, {1: RS[0][0]})
    steps = [  # (from client?, flags, IN state after)
        (True, "S", S.IP_VS_TCP_S_SYN_RECV), (False, "SA", S.IP_VS_TCP_S_SYN_RECV),
        (True, "A", S.IP_VS_TCP_S_ESTABLISHED), (False, "A", S.IP_VS_TCP_S_ESTABLISHED),
        (False, "A", S.IP_VS_TCP_S_ESTABLISHED), (True, "R", S.IP_VS_TCP_S_CLOSE),
        (False, "A", S.IP_VS_TCP_S_CLOSE), (True, "S", S.IP_VS_TCP_S_SYN_RECV),
        (False, "A", S.IP_VS_TCP_S_ESTABLISHED),
    ]
    for client, flags, state in steps:
        if client:
            verdict, _ = dp.run(tcp(CLIENT, VIP, 40094, VPORT, flags=flags))
        else:
            verdict, _ = dp.run(tcp(RS[0][0], CLIENT, RPORT, 40094, flags=flags,
                                    smac=RS[0][1], dmac=SRV_MAC), dp.srv)
        assert verdict == XDP_REDIRECT
        assert dp.conn(CLIENT, VIP, 40094, VPORT).state == state, (flags, client)
    assert dp.s.dest_stats.sum(1).outpkts == 5


def test_untracked_reply_passes(dp):
    dp.service(1, {1: RS[0][0]})
    pkt = tcp(RS[0][0], CLIENT, RPORT, 40091, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
    assert_pass_identical(dp, pkt, dp.srv)


def test_ring_generation_and_base(dp):
    """The live ring is the one of ring_gen, counted from ring_base."""
    dp.service(1, {1: RS[0][0], 2: RS[1][0], 3: RS[2][0]}, ring=[1, 1, 1])
    for i, dslot in enumerate([3, 2]):
        dp.s.sched_ring.put(S.RingKey(1, S.XDPLB_RING_GEN_BIT | i), C.c_uint32(dslot))
    key = S.SvcKey(addr=ip4(VIP), port=be16(VPORT), proto=socket.IPPROTO_TCP)
    svc = dp.s.services.get(key)
    svc.ring_gen, svc.ring_len, svc.ring_base = S.XDPLB_RING_GEN_BIT, 2, 5
    dp.s.services.put(key, svc)
    dp.s.sched_pos.put(1, S.SchedPos(6))
    got = [Ether(dp.run(tcp(CLIENT, VIP, 43000 + i, VPORT))[1])[IP].dst for i in range(3)]
    assert got == [RS[1][0], RS[2][0], RS[1][0]]


def test_reply_path_uses_the_entrys_cached_egress(dp):
    """Once resolved, the replies' egress comes from the entry, not from the FIB."""
    dp.service(1, {1: RS[0][0]})
    assert dp.run(tcp(CLIENT, VIP, 40092, VPORT))[0] == XDP_REDIRECT
    reply = tcp(RS[0][0], CLIENT, RPORT, 40092, flags="SA", smac=RS[0][1], dmac=SRV_MAC)
    assert dp.run(reply, dp.srv)[0] == XDP_REDIRECT
    key = S.ConnKey(saddr=ip4(CLIENT), daddr=ip4(VIP), sport=be16(40092), dport=be16(VPORT),
                    proto=socket.IPPROTO_TCP)
    c = dp.s.conn_table.get(key)
    assert c.ifindex == dp.cli and bytes(c.dmac) == mac(CLIENT_MAC)
    c.dmac = (C.c_uint8 * 6)(2, 0, 0, 0, 0x99, 0x99)
    c.ifindex = dp.srv  # egress == ingress now: XDP_TX
    dp.s.conn_table.put(key, c)
    pkt = tcp(RS[0][0], CLIENT, RPORT, 40092, flags="A", smac=RS[0][1], dmac=SRV_MAC)
    verdict, out = dp.run(pkt, dp.srv)
    assert verdict == XDP_TX
    assert out == rebuilt(pkt, {(Ether, "src"): CLI_MAC, (Ether, "dst"): "02:00:00:00:99:99",
                                (IP, "src"): VIP, (TCP, "sport"): VPORT})


def test_egress_without_xdplb_goes_to_stack(dp):
    """No tx_ports entry for the egress: the stack forwards the NATed packet,
    which must still carry the MACs it arrived with."""
    dp.service(1, {1: RS[0][0]})
    dp.s.tx_ports.delete(dp.srv)
    try:
        syn = tcp(CLIENT, VIP, 40093, VPORT)
        verdict, out = dp.run(syn)
    finally:
        dp.s.tx_ports.put(dp.srv, dp.s.tx_ports.value_type(dp.srv))
    assert verdict == XDP_PASS
    assert out == rebuilt(syn, {(IP, "dst"): RS[0][0], (TCP, "dport"): RPORT})
    assert dp.counters()["to_stack"] == 1 and dp.counters()["fwd"] == 0


# --- assured connections: out of the LRU's reach -----------------------------

def where(dp, saddr, daddr, sport, dport, proto=socket.IPPROTO_TCP):
    """'assured', 'lru' or None: the table holding a connection entry."""
    k = S.ConnKey(saddr=ip4(saddr), daddr=ip4(daddr), sport=be16(sport), dport=be16(dport),
                  proto=proto)
    in_assured, in_lru = dp.s.conns_assured.get(k) is not None, dp.s.conns.get(k) is not None
    assert not (in_assured and in_lru), "an entry in both tables"
    return "assured" if in_assured else "lru" if in_lru else None


def test_masq_tcp_is_assured_when_established_and_leaves_when_closed(dp):
    dp.service(1, {1: RS[0][0]})
    rs, rmac = RS[0]
    # the connection's one entry, and none under the reply's tuple
    both = lambda: (where(dp, CLIENT, VIP, 40100, VPORT), where(dp, rs, CLIENT, RPORT, 40100))
    reply = lambda flags, data=b"": tcp(rs, CLIENT, RPORT, 40100, flags=flags, smac=rmac,
                                        dmac=SRV_MAC, payload=data)
    unnat = lambda f: rebuilt(f, {(Ether, "src"): CLI_MAC, (Ether, "dst"): CLIENT_MAC,
                                  (IP, "src"): VIP, (TCP, "sport"): VPORT})

    assert dp.run(tcp(CLIENT, VIP, 40100, VPORT))[0] == XDP_REDIRECT
    assert both() == ("lru", None)
    assert dp.run(reply("SA"), dp.srv)[0] == XDP_REDIRECT
    assert both() == ("lru", None)
    ack = tcp(CLIENT, VIP, 40100, VPORT, flags="A", payload=b"hello")
    assert dp.run(ack) == (XDP_REDIRECT, nat_in(ack, rs, rmac))
    assert both() == ("assured", None)
    c = dp.conn(CLIENT, VIP, 40100, VPORT)
    assert c.state == S.IP_VS_TCP_S_ESTABLISHED and c.ifindex == dp.cli and c.dest_slot == 1
    data = reply("PA", b"world")
    assert dp.run(data, dp.srv) == (XDP_REDIRECT, unnat(data))

    # client closes first: FIN (CLOSE_WAIT), the server's FIN (TIME_WAIT,
    # seen on the reply side), the client's last ACK moves it back
    fin = tcp(CLIENT, VIP, 40100, VPORT, flags="FA")
    assert dp.run(fin) == (XDP_REDIRECT, nat_in(fin, rs, rmac))
    assert dp.run(reply("FA"), dp.srv) == (XDP_REDIRECT, unnat(reply("FA")))
    assert dp.conn(CLIENT, VIP, 40100, VPORT).state == S.IP_VS_TCP_S_TIME_WAIT
    assert both() == ("assured", None)
    last = tcp(CLIENT, VIP, 40100, VPORT, flags="A")
    assert dp.run(last) == (XDP_REDIRECT, nat_in(last, rs, rmac))
    assert both() == ("lru", None)
    assert dp.conn(CLIENT, VIP, 40100, VPORT).state == S.IP_VS_TCP_S_TIME_WAIT
    assert dp.counters()["assure_full"] == 0 and dp.counters()["fwd"] == 7


def test_droute_tcp_assured_then_reset(dp):
    dp.service(1, {1: RS[1][0]}, fwd=S.IP_VS_CONN_F_DROUTE)
    assert dp.run(tcp(CLIENT, VIP, 40101, VPORT))[0] == XDP_REDIRECT
    assert where(dp, CLIENT, VIP, 40101, VPORT) == "lru"
    assert dp.run(tcp(CLIENT, VIP, 40101, VPORT, flags="A"))[0] == XDP_REDIRECT
    assert where(dp, CLIENT, VIP, 40101, VPORT) == "assured"
    rst = tcp(CLIENT, VIP, 40101, VPORT, flags="R")
    verdict, out = dp.run(rst)
    assert verdict == XDP_REDIRECT
    assert out == rebuilt(rst, {(Ether, "src"): SRV_MAC, (Ether, "dst"): RS[1][1]})
    assert where(dp, CLIENT, VIP, 40101, VPORT) == "lru"
    assert dp.conn(CLIENT, VIP, 40101, VPORT).state == S.IP_VS_TCP_S_CLOSE


def _age(dp, key_args, seconds):
    """Move a connection's last_seen back, as if it had been idle."""
    k = S.ConnKey(saddr=ip4(key_args[0]), daddr=ip4(key_args[1]), sport=be16(key_args[2]),
                  dport=be16(key_args[3]), proto=key_args[4])
    c = dp.s.conn_table.get(k)
    c.last_seen -= int(seconds * 1e9)
    dp.s.conn_table.put(k, c)


def test_udp_is_assured_once_it_outlives_a_grain(dp):
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP)
    key = (CLIENT, VIP, 40102, VPORT, socket.IPPROTO_UDP)
    for _ in range(3):
        assert dp.run(udp(CLIENT, VIP, 40102, VPORT))[0] == XDP_REDIRECT
    assert where(dp, *key) == "lru"
    _age(dp, key, 0.5)
    dgram = udp(CLIENT, VIP, 40102, VPORT, payload=b"still here")
    assert dp.run(dgram) == (XDP_REDIRECT, nat_in(dgram, *RS[0]))
    assert where(dp, *key) == "assured"
    reply = udp(RS[0][0], CLIENT, RPORT, 40102, smac=RS[0][1], dmac=SRV_MAC)
    assert dp.run(reply, dp.srv)[0] == XDP_REDIRECT     # found in conns_assured
    assert dp.s.dest_stats.sum(1).outpkts == 1


def test_assured_table_full_keeps_the_flow_in_the_lru_and_counts(dp):
    """With conns_assured full an established connection still works from
    the LRU; every refused move is counted, and retried at the next refresh."""
    n = S.XDPLB_MAX_ASSURED
    keys = [S.ConnKey(saddr=(C.c_uint8 * 4)(30, i >> 16 & 255, i >> 8 & 255, i & 255),
                      daddr=ip4(VIP), sport=be16(1), dport=be16(VPORT), proto=6)
            for i in range(n)]
    filler = S.Conn(dir=S.XDPLB_DIR_IN, state=S.IP_VS_TCP_S_ESTABLISHED)
    dp.s.conns_assured.put_many((k, filler) for k in keys)
    try:
        assert len(dp.s.conns_assured.raw_items()) == n
        dp.service(1, {1: RS[0][0]})
        key = (CLIENT, VIP, 40103, VPORT, socket.IPPROTO_TCP)
        assert dp.run(tcp(CLIENT, VIP, 40103, VPORT))[0] == XDP_REDIRECT
        ack = tcp(CLIENT, VIP, 40103, VPORT, flags="A")
        assert dp.run(ack) == (XDP_REDIRECT, nat_in(ack, *RS[0]))
        assert where(dp, *key) == "lru"
        assert dp.counters()["assure_full"] == 1
        assert dp.run(ack) == (XDP_REDIRECT, nat_in(ack, *RS[0]))
        assert dp.counters()["assure_full"] == 1      # not retried on every packet
        for k in keys[:2]:
            dp.s.conns_assured.delete(k)
        _age(dp, key, 0.5)
        assert dp.run(ack) == (XDP_REDIRECT, nat_in(ack, *RS[0]))
        assert where(dp, *key) == "assured"
        assert dp.counters()["assure_full"] == 1
        assert dp.counters()["rx"] == dp.counters()["fwd"] == 4
    finally:
        for k in keys:
            dp.s.conns_assured.delete(k)
