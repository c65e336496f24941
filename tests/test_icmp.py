"""ICMP errors and path MTU in the data path, packet by packet (PROG_TEST_RUN).

As IPVS (ip_vs_in_icmp, ip_vs_out_icmp, ip_vs_nat_icmp, ensure_mtu_is_adequate):
errors quoting a tracked connection reach the other party, translated for
Masq; a client's packet over the egress MTU is answered with fragmentation
needed (DF) or handed to the stack; a new connection with no destination is
answered with port unreachable. Every output byte is compared with a frame
scapy builds on its own, checksums recomputed from scratch (the quoted TCP/UDP
checksum excepted: the kernel leaves it, and so does xdplb).
"""
import contextlib
import ctypes as C
import os
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from packets import icmp_unreach, rebuilt, tcp, udp
from test_datapath import (CLI_MAC, CLIENT, CLIENT_MAC, RPORT, RS, SRV_MAC, VIP, VPORT,
                           XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, assert_pass_identical,
                           dp, nat_in)  # noqa: F401 (dp: the fixture)
from xdplb import bpfsys
from xdplb import structs as S
from xdplb.bench.pkt import prog_map_info
from xdplb.loader import NEW_CONN_PIN
from xdplb.maps import PerCpuMap

ROUTER = "10.0.0.9"          # a router on the client's side
RS_ROUTER = "172.80.0.9"     # a router between the balancer and the real servers
LOCKED_MTU = 1400            # the route to RS[2] in mtu_route()
FRAG_NEEDED, PORT_UNREACH = 0, 1     # bpf/maps.h's XDPLB_ICMP_KIND_*: the buckets


class IcmpBucket(C.Structure):
    """bpf/maps.h's struct icmp_bucket (private to the program)."""
    _fields_ = [("stamp", C.c_uint64), ("tokens", C.c_uint64)]


def private_map(st, name, value_type, prog_index=None):
    """A map the program keeps private (not pinned), found among the maps of
    xdplb_main or of the new_conn program at prog_index."""
    fd = st.prog_fd
    if prog_index is not None:
        arr = bpfsys.obj_get(os.path.join(st.folder, NEW_CONN_PIN))
        try:
            prog_id = C.c_uint32()
            assert bpfsys.lookup(arr, C.c_uint32(prog_index), prog_id)
        finally:
            os.close(arr)
        fd = bpfsys._lib.bpf_prog_get_fd_by_id(prog_id.value)
    try:
        mi = prog_map_info(fd, name)
    finally:
        if fd != st.prog_fd:
            os.close(fd)
    return PerCpuMap(bpfsys._lib.bpf_map_get_fd_by_id(mi.id), C.c_uint32, value_type, name)


@pytest.fixture
def icmp_dp(dp):
    """The data path with ICMP buckets last filled long ago (full at their
    first use), before and after the test, and an empty egress cache (a
    cached egress would hide a route's MTU for a second)."""
    st = dp.s
    dp.buckets = private_map(st, "icmp_bucket", IcmpBucket, S.XDPLB_PROG_ICMP)
    egress = private_map(st, "egress_cache", C.c_uint8 * 40)
    try:
        for kind in (FRAG_NEEDED, PORT_UNREACH):
            dp.buckets.put(kind, IcmpBucket())
        for slot in range(16):
            egress.put(slot, (C.c_uint8 * 40)())
        yield dp
    finally:
        for kind in (FRAG_NEEDED, PORT_UNREACH):
            dp.buckets.put(kind, IcmpBucket())
        for m in (dp.buckets, egress):
            os.close(m.fd)


def error_frame(src, dst, quoted, type_=3, code=4, mtu=0, smac=CLIENT_MAC, dmac=CLI_MAC,
                quote_len=None):
    """An ICMP error src -> dst quoting the IP packet `quoted`, cut to quote_len bytes."""
    icmp = ICMP(type=type_, code=code, nexthopmtu=mtu) if type_ == 3 else ICMP(type=type_,
                                                                              code=code)
    return Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / icmp \
        / Raw(bytes(quoted)[:quote_len])


def requoted(quoted, quote_len=None, **fields):
    """The quoted packet with IP / L4 fields changed (ip_src, ip_dst, sport,
    dport): its IP checksum recomputed, its L4 checksum left as it was."""
    q = IP(bytes(quoted))
    l4 = q.payload
    old_l4_sum = l4.chksum
    for name, value in fields.items():
        if name.startswith("ip_"):
            setattr(q, name[3:], value)
        else:
            setattr(l4, name, value)
    del q.chksum
    l4.chksum = old_l4_sum
    return bytes(q)[:quote_len]


def translated(frame, smac, dmac, quoted, outer_src=None, outer_dst=None):
    """frame (an error_frame) with new MACs, outer addresses and quoted bytes;
    outer IP and ICMP checksums recomputed by scapy."""
    f = Ether(bytes(frame))
    ip, icmp = f[IP], f[ICMP]
    out_ip = IP(src=outer_src or ip.src, dst=outer_dst or ip.dst, id=ip.id, ttl=ip.ttl,
                tos=ip.tos, flags=ip.flags)
    new_icmp = ICMP(bytes(icmp)[:8])
    del new_icmp.chksum
    return bytes(Ether(src=smac, dst=dmac) / out_ip / new_icmp / Raw(quoted))


# --- errors from the client's side, about packets sent to the client --------

@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_in_masq_error_reaches_the_real_server_translated(icmp_dp, proto):
    """A router towards the client says the balancer's reply (VIP:vport ->
    client) was too big: the real server gets it about its own packet
    (rs:rport -> client), addressed to it (ip_vs_nat_icmp, inout 0)."""
    dp = icmp_dp
    p = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
    dp.service(1, {1: RS[0][0]}, proto=p)
    first = tcp(CLIENT, VIP, 41000, VPORT) if proto == "tcp" else udp(CLIENT, VIP, 41000, VPORT)
    assert dp.run(first)[0] == XDP_REDIRECT
    l4 = TCP(sport=VPORT, dport=41000, flags="A", seq=5000, ack=1001) if proto == "tcp" \
        else UDP(sport=VPORT, dport=41000)
    sent = IP(src=VIP, dst=CLIENT, flags="DF") / l4 / (b"y" * 1400)
    code, mtu, type_ = (4, 1280, 3) if proto == "tcp" else (0, 0, 11)
    err = error_frame(ROUTER, VIP, sent, type_=type_, code=code, mtu=mtu, quote_len=548)
    verdict, out = dp.run(err)
    assert verdict == XDP_REDIRECT
    want_quote = requoted(sent, 548, ip_src=RS[0][0], sport=RPORT)
    assert out == translated(err, SRV_MAC, RS[0][1], want_quote, outer_dst=RS[0][0])
    # the quoted L4 checksum is the one the client got, not recomputed
    assert out[14 + 28 + 20 + (16 if proto == "tcp" else 6):][:2] == \
        bytes(IP(bytes(sent)).payload)[16 if proto == "tcp" else 6:][:2]
    cnt = dp.counters()
    assert (cnt["fwd"], cnt["icmp_xlate"], cnt["pass"]) == (2, 1, 0)
    st = dp.s.svc_stats.sum(1)
    assert st.inpkts == 2 and st.inbytes == len(first[IP]) + len(err[IP])


def test_in_route_error_is_forwarded_as_it_is(icmp_dp):
    """Route: the real server sent VIP:vport -> client itself; the error
    (to the VIP) goes to it unchanged but for the MACs (ip_vs_dr_xmit)."""
    dp = icmp_dp
    dp.service(1, {1: RS[1][0]}, fwd=S.IP_VS_CONN_F_DROUTE)
    assert dp.run(tcp(CLIENT, VIP, 41010, VPORT))[0] == XDP_REDIRECT
    sent = IP(src=VIP, dst=CLIENT, flags="DF") / TCP(sport=VPORT, dport=41010, flags="A") \
        / (b"z" * 1400)
    err = error_frame(ROUTER, VIP, sent, mtu=1200, quote_len=28)
    verdict, out = dp.run(err)
    assert verdict == XDP_REDIRECT
    assert out == rebuilt(err, {(Ether, "src"): SRV_MAC, (Ether, "dst"): RS[1][1]})
    assert dp.counters()["icmp_xlate"] == 1


# --- errors from the real servers' side, about a client's packets ------------

def test_out_masq_port_unreachable_of_the_real_server_reaches_the_client(icmp_dp):
    """The real server has no UDP socket on rport: its port unreachable,
    quoting client -> rs:rport, reaches the client from the VIP, quoting
    client -> VIP:vport (ip_vs_nat_icmp, inout 1)."""
    dp = icmp_dp
    dp.service(1, {1: RS[0][0]}, proto=socket.IPPROTO_UDP)
    dgram = udp(CLIENT, VIP, 41020, VPORT)
    verdict, out = dp.run(dgram)
    assert verdict == XDP_REDIRECT
    got = Ether(out)[IP]            # what the real server received
    err = error_frame(RS[0][0], CLIENT, got, code=3, smac=RS[0][1], dmac=SRV_MAC)
    verdict, out = dp.run(err, dp.srv)
    assert verdict == XDP_REDIRECT
    want_quote = requoted(got, ip_dst=VIP, dport=VPORT)
    assert out == translated(err, CLI_MAC, CLIENT_MAC, want_quote, outer_src=VIP)
    st = dp.s.svc_stats.sum(1)
    assert st.outpkts == 1 and st.outbytes == len(err[IP])
    assert dp.counters()["icmp_xlate"] == 1


def test_out_masq_frag_needed_of_a_router_reaches_the_client(icmp_dp):
    """A router between the balancer and the real server: its source becomes
    the VIP too, as IPVS rewrites every such error's source."""
    dp = icmp_dp
    dp.service(1, {1: RS[0][0]})
    syn = tcp(CLIENT, VIP, 41030, VPORT)
    assert dp.run(syn)[0] == XDP_REDIRECT
    got = IP(bytes(Ether(nat_in(tcp(CLIENT, VIP, 41030, VPORT, flags="A",
                                    payload=b"q" * 1300), *RS[0]))[IP]))
    err = error_frame(RS_ROUTER, CLIENT, got, mtu=1000, quote_len=60, smac=RS[0][1],
                      dmac=SRV_MAC)
    verdict, out = dp.run(err, dp.srv)
    assert verdict == XDP_REDIRECT
    want_quote = requoted(got, 60, ip_dst=VIP, dport=VPORT)
    assert out == translated(err, CLI_MAC, CLIENT_MAC, want_quote, outer_src=VIP)


# --- what is not translated --------------------------------------------------

def test_errors_quoting_nothing_tracked_or_garbage_pass_untouched(icmp_dp):
    dp = icmp_dp
    dp.service(1, {1: RS[0][0]})
    assert dp.run(tcp(CLIENT, VIP, 41040, VPORT))[0] == XDP_REDIRECT
    sent = IP(src=VIP, dst=CLIENT) / TCP(sport=VPORT, dport=41040, flags="A") / (b"w" * 100)
    good = error_frame(ROUTER, VIP, sent, mtu=1200)
    untracked = IP(src=VIP, dst=CLIENT) / TCP(sport=VPORT, dport=41041)
    bad_icmp_sum = Ether(bytes(good))
    bad_icmp_sum[ICMP].chksum ^= 0x0101
    bad_ip_sum = Ether(bytes(good))
    bad_ip_sum[IP].chksum ^= 0x0101
    options = Ether(src=CLIENT_MAC, dst=CLI_MAC) / IP(src=ROUTER, dst=VIP, options=b"\x01" * 4) \
        / ICMP(type=3, code=4, nexthopmtu=1200) / Raw(bytes(sent))
    fragment = IP(bytes(sent))
    fragment.frag = 100
    del fragment.chksum
    frames = [
        error_frame(ROUTER, VIP, untracked),                        # no connection
        error_frame(ROUTER, "10.0.0.77", sent),                     # not to the quoted source
        error_frame(ROUTER, VIP, sent, type_=5, code=1),            # a redirect: no error
        error_frame(ROUTER, VIP, sent, type_=12, code=0),           # IPVS leaves parameter problem
        error_frame(ROUTER, VIP, fragment),                         # a later fragment: no ports
        bad_icmp_sum, bad_ip_sum, options,
        Ether(src=CLIENT_MAC, dst=CLI_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=8) / b"ping",
    ]
    frames += [error_frame(ROUTER, VIP, sent, quote_len=n) for n in range(0, 24)]
    raw = bytes(good)
    frames += [raw[:n] for n in range(14, len(raw))]    # cut short after Ethernet
    for frame in frames:
        assert_pass_identical(dp, frame)
    cnt = dp.counters()
    assert cnt["icmp_xlate"] == 0 and cnt["pass"] == len(frames)


def test_echo_request_to_a_vip_goes_to_the_stack(icmp_dp):
    """Echo is not IPVS's: the stack answers it where the VIP is local."""
    dp = icmp_dp
    dp.service(1, {1: RS[0][0]})
    assert_pass_identical(dp, Ether(src=CLIENT_MAC, dst=CLI_MAC) / IP(src=CLIENT, dst=VIP)
                          / ICMP(type=8, id=7, seq=1) / b"ping")


# --- no destination: port unreachable ------------------------------------------

@pytest.mark.parametrize("frame", [tcp(CLIENT, VIP, 41050, VPORT),
                                   udp(CLIENT, VIP, 41050, VPORT),
                                   tcp(CLIENT, VIP, 41051, VPORT, vlan=7),
                                   tcp(CLIENT, VIP, 41052, VPORT, options=b"\x01" * 8)],
                         ids=["tcp", "udp", "vlan", "ip-options"])
def test_no_destination_answers_port_unreachable(icmp_dp, frame):
    """Every real server at weight 0 (an empty schedule): each SYN or
    datagram is answered with port unreachable from the VIP, no connection
    entry, the stats unchanged (ipvs-behaviour.md §11)."""
    dp = icmp_dp
    proto = socket.IPPROTO_UDP if UDP in frame else socket.IPPROTO_TCP
    dp.service(1, {}, ring=[], proto=proto)
    verdict, out = dp.run(frame)
    assert verdict == XDP_REDIRECT
    assert out == icmp_unreach(frame, 3)
    cnt = dp.counters()
    assert (cnt["no_dest"], cnt["rx"], cnt["icmp_limited"]) == (1, 1, 0)
    assert len(dp.s.conn_table.keys()) == 0
    st = dp.s.svc_stats.sum(1)
    assert (st.conns, st.inpkts, st.inbytes) == (0, 0, 0)


def test_answers_are_rate_limited_per_kind(icmp_dp):
    """An empty bucket (its refill time far ahead) drops the packet
    unanswered and counts it; one token answers once."""
    dp = icmp_dp
    dp.service(1, {}, ring=[])
    syn = tcp(CLIENT, VIP, 41060, VPORT)
    far = (1 << 63) - 1
    dp.buckets.put(PORT_UNREACH, IcmpBucket(stamp=far, tokens=1))
    assert dp.run(syn) == (XDP_REDIRECT, icmp_unreach(syn, 3))
    assert dp.run(syn)[0] == XDP_DROP
    assert dp.run(syn)[0] == XDP_DROP
    cnt = dp.counters()
    assert (cnt["no_dest"], cnt["icmp_limited"], cnt["rx"]) == (3, 2, 3)
    # the other kind keeps its own bucket
    assert all((b.tokens, b.stamp) == (0, 0) for b in dp.buckets.get(FRAG_NEEDED))


def test_a_bucket_holds_at_most_a_burst(icmp_dp):
    """A bucket last filled long ago is refilled to XDPLB_ICMP_BURST tokens,
    no more; with its refill time ahead, exactly that many answers go out."""
    dp = icmp_dp
    dp.service(1, {}, ring=[])
    syn = tcp(CLIENT, VIP, 41070, VPORT)
    assert dp.run(syn)[0] == XDP_REDIRECT
    (used,) = [b for b in dp.buckets.get(PORT_UNREACH) if b.stamp]     # this CPU's
    assert used.tokens == S.XDPLB_ICMP_BURST - 1
    dp.buckets.put(PORT_UNREACH, IcmpBucket(stamp=(1 << 63) - 1, tokens=S.XDPLB_ICMP_BURST))
    verdicts = [dp.run(syn)[0] for _ in range(S.XDPLB_ICMP_BURST + 1)]
    assert verdicts == [XDP_REDIRECT] * S.XDPLB_ICMP_BURST + [XDP_DROP]


def test_answer_leaves_by_the_ingress(icmp_dp):
    """An answer goes back out of the interface its packet came in by: a
    redirect to it when it is a redirect target (xdplb attached), else
    XDP_TX (here: lo, not in tx_ports)."""
    dp = icmp_dp
    dp.service(1, {}, ring=[])
    syn = tcp(CLIENT, VIP, 41075, VPORT)
    assert dp.run(syn, 1) == (XDP_TX, icmp_unreach(syn, 3))
    assert dp.run(syn, dp.srv) == (XDP_REDIRECT, icmp_unreach(syn, 3))


def test_no_answer_to_a_multicast_or_zero_source(icmp_dp):
    dp = icmp_dp
    dp.service(1, {}, ring=[], proto=socket.IPPROTO_UDP)
    for src in ("0.0.0.0", "127.0.0.1", "224.0.0.5", "255.255.255.255"):
        assert dp.run(udp(src, VIP, 41080, VPORT))[0] == XDP_DROP
    cnt = dp.counters()
    assert (cnt["no_dest"], cnt["icmp_limited"]) == (4, 0)


# --- path MTU ---------------------------------------------------------------------

@contextlib.contextmanager
def mtu_route(dp, addr, mtu):
    """A route to addr (IPv4 or IPv6) with a locked MTU (what the FIB then reports)."""
    ns = dp.net["ns"]
    host = f"{addr}/{128 if ':' in addr else 32}"
    ns.run(["ip", "route", "replace", host, "dev", dp.net["srv_if"], "mtu", "lock", str(mtu)])
    try:
        yield
    finally:
        ns.run(["ip", "route", "del", host], check=False)


@pytest.mark.parametrize("fwd", [S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE], ids=["masq", "route"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_df_packet_over_the_route_mtu_gets_frag_needed(icmp_dp, fwd, proto):
    """A client's packet larger than the route's MTU with DF set is answered
    with fragmentation needed, the route's MTU, from the VIP, quoting the
    packet as the client sent it; nothing goes on."""
    dp = icmp_dp
    p = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
    dp.service(1, {9: RS[2][0]}, proto=p, fwd=fwd)
    with mtu_route(dp, RS[2][0], LOCKED_MTU):
        small = tcp(CLIENT, VIP, 41100, VPORT) if proto == "tcp" else udp(CLIENT, VIP, 41100,
                                                                          VPORT)
        assert dp.run(small)[0] == XDP_REDIRECT
        size = LOCKED_MTU - 20 - (20 if proto == "tcp" else 8)
        big = _big(proto, size + 1)
        ok = _big(proto, size)
        assert dp.run(ok)[0] == XDP_REDIRECT
        verdict, out = dp.run(big)
        assert verdict == XDP_REDIRECT
        assert out == icmp_unreach(big, 4, LOCKED_MTU)
    cnt = dp.counters()
    assert (cnt["frag_needed"], cnt["fwd"], cnt["rx"]) == (1, 2, 3)
    # IPVS counts the packet before its transmit fails
    assert dp.s.svc_stats.sum(1).inpkts == 3


def _big(proto, payload_len, df=True, vip=VIP):
    """A client's packet on 41100 -> vip:VPORT with payload_len bytes."""
    ip = IP(src=CLIENT, dst=vip, flags="DF" if df else 0)
    l4 = TCP(sport=41100, dport=VPORT, flags="A", seq=1000, ack=1) if proto == "tcp" \
        else UDP(sport=41100, dport=VPORT)
    return Ether(src=CLIENT_MAC, dst=CLI_MAC) / ip / l4 / (b"f" * payload_len)


def test_packet_over_the_mtu_without_df(icmp_dp):
    """Without DF, Masq hands the rewritten packet to the stack to fragment;
    Route drops it (the stack would keep a packet for the VIP)."""
    dp = icmp_dp
    dp.service(1, {9: RS[2][0]})
    dp.service(2, {10: RS[2][0]}, vip="10.0.0.101", fwd=S.IP_VS_CONN_F_DROUTE)
    with mtu_route(dp, RS[2][0], LOCKED_MTU):
        assert dp.run(tcp(CLIENT, VIP, 41100, VPORT))[0] == XDP_REDIRECT
        big = _big("tcp", LOCKED_MTU, df=False)
        verdict, out = dp.run(big)
        assert verdict == XDP_PASS
        assert out == rebuilt(big, {(IP, "dst"): RS[2][0], (TCP, "dport"): RPORT})
        assert dp.run(tcp(CLIENT, "10.0.0.101", 41100, VPORT))[0] == XDP_REDIRECT
        assert dp.run(_big("tcp", LOCKED_MTU, df=False, vip="10.0.0.101"))[0] == XDP_DROP
    cnt = dp.counters()
    assert (cnt["too_big"], cnt["frag_needed"]) == (2, 0)


@pytest.mark.parametrize("df", [True, False], ids=["df", "no-df"])
def test_reply_over_the_device_mtu_goes_to_the_stack(icmp_dp, df):
    """A Masq reply larger than the client side's MTU (1500) takes the
    kernel's forwarding path, as IPVS's replies do: with DF untouched (the
    stack answers the real server), without DF un-NATed (it fragments)."""
    dp = icmp_dp
    dp.service(1, {1: RS[0][0]})
    assert dp.run(tcp(CLIENT, VIP, 41110, VPORT))[0] == XDP_REDIRECT
    reply = Ether(src=RS[0][1], dst=SRV_MAC) / IP(src=RS[0][0], dst=CLIENT,
                                                  flags="DF" if df else 0) \
        / TCP(sport=RPORT, dport=41110, flags="A", seq=5000, ack=1001) / (b"r" * 1500)
    verdict, out = dp.run(reply, dp.srv)
    assert verdict == XDP_PASS
    if df:
        assert out == bytes(reply)
    else:
        assert out == rebuilt(reply, {(IP, "src"): VIP, (TCP, "sport"): VPORT})
    assert dp.counters()["too_big"] == 1
    fits = Ether(bytes(reply)[:14 + 1500])
    fits[IP].len = 1500
    del fits[IP].chksum, fits[TCP].chksum
    assert dp.run(Ether(bytes(fits)), dp.srv)[0] == XDP_REDIRECT
