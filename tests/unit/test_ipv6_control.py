"""IPv6 services and real servers through Control on the fake maps: what the
planner writes (services6, dests' af/addr6/fold, rs_table6, one slot space
with IPv4), the listings and -S in ipvsadm's IPv6 forms and sort order, and
conns6 in the counts, -L -c and the sweep. (The clock is fixed: conns.now_ns.)"""
import ctypes as C
import socket
import sys

import pytest

from xdplb import conns, ipvsfmt
from xdplb import structs as S
from xdplb.control import Control
from xdplb.model import (E_SVC_EXISTS, IPPROTO_TCP, IPPROTO_UDP, Destination, Service,
                         XdplbError)
from xdplb.structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_SVC_F_PERSISTENT,
                           IP_VS_TCP_S_CLOSE, IP_VS_TCP_S_ESTABLISHED, XDPLB_AF_INET,
                           XDPLB_AF_INET6, XDPLB_DIR_IN, XDPLB_DIR_TEMPLATE, Conn, Conn6,
                           ConnKey6, RsKey6, SvcKey, SvcKey6)
from xdplb.keys import fold, key_tuple, rs_filter_bit

from .test_control_reads import HEAD, NOW, SEC, dline

V6 = (IPPROTO_TCP, "2001:db8::1", 80)
V6U = (IPPROTO_UDP, "fd00:100::1", 53)
V4 = (IPPROTO_TCP, "10.0.0.1", 80)


def a16(addr):
    return (C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, addr))


@pytest.fixture
def ctl(fake_state, monkeypatch):
    """An IPv6 wrr TCP service (slot 0) with a Masq and a Route server, an
    IPv4 service (slot 1) with one, and a persistent IPv6 UDP service
    (slot 2, /64) with one Masq server; written through Control."""
    monkeypatch.setattr(conns, "now_ns", lambda: NOW)
    c = Control(fake_state)
    c.add_service(Service(*V6, sched="wrr"))
    c.add_service(Service(*V4, sched="rr"))
    c.add_service(Service(*V6U, sched="rr", flags=IP_VS_SVC_F_PERSISTENT, timeout=360,
                          netmask=64))
    c.add_dest(V6, Destination("2001:db8:80::2", 8080, IP_VS_CONN_F_MASQ, 3))
    c.add_dest(V6, Destination("2001:db8:80::3", 80, IP_VS_CONN_F_DROUTE, 1))
    c.add_dest(V4, Destination("10.1.0.1", 80, IP_VS_CONN_F_MASQ, 1))
    c.add_dest(V6U, Destination("fd00:80::5", 53, IP_VS_CONN_F_MASQ, 1))
    return c


def test_what_the_maps_hold(ctl):
    st = ctl.st
    e = st.services6.get(SvcKey6(a16("2001:db8::1"), socket.htons(80), IPPROTO_TCP))
    assert (e.slot, e.seq, bytes(e.netmask)) == (0, 1, (128).to_bytes(4, sys.byteorder))
    assert st.services.get(SvcKey((C.c_uint8 * 4)(*socket.inet_aton("10.0.0.1")),
                                  socket.htons(80), IPPROTO_TCP)).slot == 1
    u = st.services6.get(SvcKey6(a16("fd00:100::1"), socket.htons(53), IPPROTO_UDP))
    assert (u.slot, u.timeout, bytes(u.netmask)) == (2, 360, (64).to_bytes(4, sys.byteorder))
    d = st.dests.get(1)
    raw = socket.inet_pton(socket.AF_INET6, "2001:db8:80::2")
    assert (d.af, bytes(d.addr6), bytes(d.addr), socket.ntohs(d.port)) == \
        (XDPLB_AF_INET6, raw, fold(raw), 8080)
    # the fold: the XOR of the four words, in network byte order
    assert fold(raw) == bytes(a ^ b ^ c ^ e for a, b, c, e in
                              zip(raw[0:4], raw[4:8], raw[8:12], raw[12:16]))
    v4 = st.dests.get(3)
    assert (v4.af, bytes(v4.addr6), bytes(v4.addr)) == \
        (XDPLB_AF_INET, bytes(16), socket.inet_aton("10.1.0.1"))
    # Masq real servers are indexed by family; the Route one is not
    rs = st.rs_table6.get(RsKey6(a16("2001:db8:80::2"), socket.htons(8080), IPPROTO_TCP))
    assert [key_tuple(rs.svc[i]) for i in range(rs.n)] == [V6]
    assert st.rs_table6.get(RsKey6(a16("2001:db8:80::3"), socket.htons(80), IPPROTO_TCP)) is None
    assert len(list(st.rs_table.keys())) == 1 and len(list(st.rs_table6.keys())) == 2
    bit = rs_filter_bit(raw)
    assert bit == rs_filter_bit(fold(raw))
    assert st.rs_filter.get(bit >> 6).value >> (bit & 63) & 1


def test_slots_are_one_space_for_both_families(ctl):
    ctl.delete_service(*V6)
    assert st_slot(ctl, SvcKey6, "2001:db8::1") is None
    ctl.add_service(Service(IPPROTO_TCP, "10.0.0.2", 80))     # takes IPv6's freed slot 0
    ctl.add_service(Service(IPPROTO_TCP, "2001:db8::9", 80))  # the next free in both: 3
    assert {s.addr: s.slot for s in ctl.services()} == {
        "10.0.0.2": 0, "10.0.0.1": 1, "fd00:100::1": 2, "2001:db8::9": 3}
    with pytest.raises(XdplbError) as e:
        ctl.add_service(Service(IPPROTO_TCP, "2001:db8::9", 80))
    assert e.value.message == E_SVC_EXISTS


def st_slot(ctl, key_type, addr):
    e = ctl.st.services6.get(key_type(a16(addr), socket.htons(80), IPPROTO_TCP))
    return None if e is None else e.slot


def test_listing_save_and_sort_order(ctl):
    """IPv4 services before IPv6 ones, TCP before UDP; IPv6 in brackets,
    the /64 persistence as `mask 64` and `-M 64`."""
    assert ipvsfmt.list_all(ctl.services(), ipvsfmt.FMT_NUMERIC) == (
        HEAD + "TCP  10.0.0.1:80 rr\n" + dline("10.1.0.1:80", "Masq", 1)
        + "TCP  [2001:db8::1]:80 wrr\n" + dline("[2001:db8:80::2]:8080", "Masq", 3)
        + dline("[2001:db8:80::3]:80", "Route", 1)
        + "UDP  [fd00:100::1]:53 rr persistent 360 mask 64\n"
        + dline("[fd00:80::5]:53", "Masq", 1))
    assert ctl.save(numeric=True) == (
        "-A -t 10.0.0.1:80 -s rr\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n"
        "-A -t [2001:db8::1]:80 -s wrr\n"
        "-a -t [2001:db8::1]:80 -r [2001:db8:80::2]:8080 -m -w 3\n"
        "-a -t [2001:db8::1]:80 -r [2001:db8:80::3]:80 -g -w 1\n"
        "-A -u [fd00:100::1]:53 -s rr -p 360 -M 64\n"
        "-a -u [fd00:100::1]:53 -r [fd00:80::5]:53 -m -w 1\n")


def test_edit_delete_zero_and_flush(ctl):
    ctl.edit_service(Service(*V6U, sched="wrr", flags=IP_VS_SVC_F_PERSISTENT, timeout=60,
                             netmask=48))
    ctl.edit_dest(V6, Destination("2001:db8:80::2", 8080, IP_VS_CONN_F_MASQ, 5))
    ctl.delete_dest(V6, "2001:db8:80::3", 80)
    svc = ctl.get_service(*V6)
    assert [(d.addr, d.port, d.weight) for d in svc.dests] == [("2001:db8:80::2", 8080, 5)]
    u = ctl.get_service(*V6U)
    assert (u.sched, u.timeout, u.netmask) == ("wrr", 60, 48)
    ctl.st.svc_stats.put(0, [ctl.st.svc_stats.value_type(conns=7)] * ctl.st.svc_stats.ncpus)
    ctl.zero(V6)
    assert ctl.get_service(*V6, stats=True).stats.conns == 0
    ctl.delete_service(*V6U)
    assert [s.key for s in ctl.services()] == [V6, V4]
    ctl.flush()
    assert ctl.services() == [] and not list(ctl.st.services6.keys()) + list(ctl.st.services.keys())
    assert {d for d in range(1, 6) if ctl.st.dests.get(d).flags} == set()


def conn6(st, client, cport, daddr, state, age, dest_slot, direction=XDPLB_DIR_IN, timeout=0,
          proto=IPPROTO_TCP, vip="2001:db8::1", vport=80, dport=8080, svc_slot=0):
    """One entry of the IPv6 connection table, last seen age seconds ago."""
    k = ConnKey6(a16(client), a16(vip), socket.htons(cport), socket.htons(vport), proto)
    raw = socket.inet_pton(socket.AF_INET6, daddr)
    c = Conn((C.c_uint8 * 4)(*fold(raw)), socket.htons(dport), direction, IP_VS_CONN_F_MASQ,
             dest_slot, svc_slot, state=state, last_seen=NOW - age * SEC, dest_seq=dest_slot)
    c.timeout = timeout
    st.conn_table6.put(k, Conn6(c, a16(daddr)))
    return k


def test_ipv6_connections_count_list_and_sweep(ctl):
    st = ctl.st
    conn6(st, "2001:db8:c::5", 1001, "2001:db8:80::2", IP_VS_TCP_S_ESTABLISHED, 5, 1)
    closed = conn6(st, "2001:db8:c::5", 1002, "2001:db8:80::2", IP_VS_TCP_S_CLOSE, 20, 1)
    conn6(st, "2001:db8:c::5", 1003, "2001:db8:80::2", IP_VS_TCP_S_CLOSE, 5, 1)
    assert ctl.conn_counts() == {1: [1, 1, 0]}
    assert ipvsfmt.conn_listing(ctl.connections(), ipvsfmt.FMT_NUMERIC).splitlines()[2:] == [
        "TCP 14:55  ESTABLISHED [2001:db8:c::5]:1001 [2001:db8::1]:80   "
        "[2001:db8:80::2]:8080",
        "TCP 00:05  CLOSE       [2001:db8:c::5]:1003 [2001:db8::1]:80   "
        "[2001:db8:80::2]:8080"]
    assert ctl.sweep() == 1
    assert bytes(closed) not in {bytes(k) for k in st.conn_table6.keys()}
    dc = st.dest_conns.get(1)
    assert (dc.active, dc.inactive, dc.persist) == (1, 1, 0)
    d = ctl.get_service(*V6).dests[-1]
    assert (d.addr, d.active, d.inactive) == ("2001:db8:80::2", 1, 1)


def test_ipv6_template_lives_while_its_connections_do(ctl):
    """The /64 template stays past its timeout while a client of its /64
    has a connection, re-armed for 60 s."""
    st = ctl.st
    tpl = conn6(st, "2001:db8:c::", 0, "fd00:80::5", 0, 400, 4, direction=XDPLB_DIR_TEMPLATE,
                timeout=360, proto=IPPROTO_UDP, vip="fd00:100::1", vport=53, dport=53,
                svc_slot=2)
    conn6(st, "2001:db8:c::7", 5353, "fd00:80::5", 0, 5, 4, proto=IPPROTO_UDP,
          vip="fd00:100::1", vport=53, dport=53, svc_slot=2)
    assert ctl.sweep() == 0
    assert (NOW - st.conn_table6.get(tpl).c.last_seen) // SEC == 300
    assert ctl.conn_counts() == {4: [0, 1, 1]}


def test_rs_table6_keeps_a_removed_servers_service_while_its_connections_live(ctl):
    """A Masq server turned -g: its service stays in rs_table6 while its
    connections live, then the sweep takes it out, and its filter bit."""
    st = ctl.st
    key = RsKey6(a16("fd00:80::5"), socket.htons(53), IPPROTO_UDP)
    udp = dict(proto=IPPROTO_UDP, vip="fd00:100::1", vport=53, dport=53, svc_slot=2)
    conn6(st, "2001:db8:c::5", 1001, "fd00:80::5", 0, 5, 4, **udp)
    ctl.edit_dest(V6U, Destination("fd00:80::5", 53, IP_VS_CONN_F_DROUTE, 1))
    ctl.sweep()
    assert [key_tuple(st.rs_table6.get(key).svc[0])] == [V6U]
    conn6(st, "2001:db8:c::5", 1001, "fd00:80::5", 0, 2000, 4, **udp)   # idles out
    ctl.sweep()
    assert st.rs_table6.get(key) is None
    # the filter keeps exactly the bits of both tables' addresses (IPv6: the fold's)
    bits = {rs_filter_bit(bytes(k.addr)) for k in (*st.rs_table.keys(), *st.rs_table6.keys())}
    assert len(bits) == 2 and {w * 64 + i for w in range(S.XDPLB_RS_FILTER_WORDS)
                               for i in range(64) if st.rs_filter.get(w).value >> i & 1} == bits
