"""Control on the fake maps: its writes (the planner through the journal),
listings and the connection sweep, without root (the clock is fixed:
conns.now_ns)."""
import ctypes as C
import socket

import pytest

from xdplb import conns, ipvsfmt
from xdplb.control import Control
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP, Destination, Service, Stats
from xdplb.structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_SVC_F_PERSISTENT,
                           IP_VS_TCP_S_CLOSE, IP_VS_TCP_S_ESTABLISHED, IP_VS_TCP_S_FIN_WAIT,
                           IP_VS_TCP_S_SYN_RECV, XDPLB_DIR_IN,
                           XDPLB_DIR_TEMPLATE, Conn, ConnKey, RsKey)
from xdplb import structs as S
from xdplb.keys import key_tuple, rs_filter_bit

NOW = 10_000 * 10**9
SEC = 10**9
HEAD = ("IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def a4(addr):
    return (C.c_uint8 * 4)(*socket.inet_aton(addr))


def dline(addr, fwd, w, a=0, i=0):
    return "  -> %-28s %-7s %-6d %-10d %-10d\n" % (addr, fwd, w, a, i)


@pytest.fixture
def ctl(fake_state, monkeypatch):
    """Control of a fake state holding, written by Control itself, a wrr TCP
    service with three servers (the middle one on another port, the last
    one direct routing: slots and seqs 1, 2, 3) and a persistent rr UDP
    service with one (slot and seq 4)."""
    monkeypatch.setattr(conns, "now_ns", lambda: NOW)
    c = Control(fake_state)
    c.add_service(Service(IPPROTO_TCP, "10.0.0.1", 80, sched="wrr", netmask="255.255.255.0"))
    c.add_service(Service(IPPROTO_UDP, "10.0.0.1", 53, sched="rr", flags=IP_VS_SVC_F_PERSISTENT,
                          timeout=360, netmask="255.255.255.0"))
    for addr, port, fwd, weight in (("10.1.0.1", 80, IP_VS_CONN_F_MASQ, 3),
                                    ("10.1.0.2", 8080, IP_VS_CONN_F_MASQ, 1),
                                    ("10.1.0.3", 80, IP_VS_CONN_F_DROUTE, 2)):
        c.add_dest((IPPROTO_TCP, "10.0.0.1", 80), Destination(addr, port, fwd, weight))
    c.add_dest((IPPROTO_UDP, "10.0.0.1", 53), Destination("10.2.0.1", 53, IP_VS_CONN_F_MASQ))
    return c


def test_an_empty_state(fake_state, monkeypatch):
    monkeypatch.setattr(conns, "now_ns", lambda: NOW)
    ctl = Control(fake_state)
    assert (ctl.services(), ctl.save(), ctl.connections(), ctl.sweep()) == ([], "", [], 0)
    assert ctl.timeouts() == (900, 120, 300)
    assert ipvsfmt.list_all([], ipvsfmt.FMT_NUMERIC) == HEAD


def test_listing_and_save(ctl):
    assert ipvsfmt.list_all(ctl.services(), ipvsfmt.FMT_NUMERIC) == (
        HEAD + "TCP  10.0.0.1:80 wrr\n" + dline("10.1.0.1:80", "Masq", 3)
        + dline("10.1.0.2:8080", "Masq", 1) + dline("10.1.0.3:80", "Route", 2)
        + "UDP  10.0.0.1:53 rr persistent 360 mask 255.255.255.0\n"
        + dline("10.2.0.1:53", "Masq", 1))
    assert ctl.save(numeric=True) == (
        "-A -t 10.0.0.1:80 -s wrr\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 3\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 1\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -g -w 2\n"
        "-A -u 10.0.0.1:53 -s rr -p 360 -M 255.255.255.0\n"
        "-a -u 10.0.0.1:53 -r 10.2.0.1:53 -m -w 1\n")
    svc = ctl.get_service(IPPROTO_TCP, "10.0.0.1", 80)     # kernel list order: newest first
    assert [(d.slot, d.seq) for d in svc.dests] == [(3, 3), (2, 2), (1, 1)]


def test_stats_add_up_every_cpu(ctl):
    st = ctl.st
    per_cpu = [st.svc_stats.value_type(conns=i + 1, inpkts=10, inbytes=1000)
               for i in range(st.svc_stats.ncpus)]
    st.svc_stats.put(0, per_cpu)
    st.dest_stats.put(1, per_cpu)
    n = st.svc_stats.ncpus
    svc = ctl.get_service(IPPROTO_TCP, "10.0.0.1", 80, stats=True)
    want = Stats(n * (n + 1) // 2, 10 * n, 0, 1000 * n, 0)
    assert svc.stats == want and svc.dests[-1].stats == want and svc.dests[0].stats == Stats()


def conn(st, client, cport, daddr, state, age, dest_slot, direction=XDPLB_DIR_IN, timeout=0,
         proto=IPPROTO_TCP, vip="10.0.0.1", vport=80, svc_slot=0):
    """One entry of the connection table, last seen age seconds ago."""
    k = ConnKey(a4(client), a4(vip), socket.htons(cport), socket.htons(vport), proto)
    v = Conn(a4(daddr), socket.htons(80), direction, IP_VS_CONN_F_MASQ, dest_slot, svc_slot,
             state=state, last_seen=NOW - age * SEC, dest_seq=dest_slot)
    v.timeout = timeout
    st.conn_table.put(k, v)
    return k


def test_connection_counts_listing_and_sweep(ctl):
    st = ctl.st
    conn(st, "192.168.10.5", 1001, "10.1.0.1", IP_VS_TCP_S_ESTABLISHED, 5, 1)
    conn(st, "192.168.10.5", 1002, "10.1.0.1", IP_VS_TCP_S_SYN_RECV, 5, 1)
    conn(st, "192.168.10.5", 1003, "10.1.0.1", IP_VS_TCP_S_FIN_WAIT, 5, 1)
    closed = conn(st, "192.168.10.5", 1004, "10.1.0.1", IP_VS_TCP_S_CLOSE, 20, 1)  # past 10 s
    gone = conn(st, "192.168.10.6", 1005, "10.1.0.9", IP_VS_TCP_S_ESTABLISHED, 5, 9)  # no server
    assert ctl.conn_counts() == {1: [2, 1, 0]}
    assert ipvsfmt.conn_listing(ctl.connections(), ipvsfmt.FMT_NUMERIC).splitlines()[2:] == [
        "TCP 14:55  ESTABLISHED 192.168.10.5:1001  10.0.0.1:80        10.1.0.1:80",
        "TCP 00:55  SYN_RECV    192.168.10.5:1002  10.0.0.1:80        10.1.0.1:80",
        "TCP 01:55  FIN_WAIT    192.168.10.5:1003  10.0.0.1:80        10.1.0.1:80"]
    assert ctl.sweep() == 2
    left = {bytes(k) for k in st.conn_table.keys()}
    assert not left & {bytes(closed), bytes(gone)} and len(left) == 3
    dc = st.dest_conns.get(1)
    assert (dc.active, dc.inactive, dc.persist) == (2, 1, 0)


def test_sweep_keeps_a_template_while_its_connections_live(ctl):
    """A persistence template past its timeout stays while a connection it
    controls lives, re-armed for 60 s (ip_vs_conn_expire's expire_later)."""
    st = ctl.st
    tpl = conn(st, "192.168.10.0", 0, "10.2.0.1", 0, 400, 4, direction=XDPLB_DIR_TEMPLATE,
               timeout=360, proto=IPPROTO_UDP, vport=53, svc_slot=1)
    conn(st, "192.168.10.7", 5353, "10.2.0.1", 0, 5, 4, proto=IPPROTO_UDP, vport=53, svc_slot=1)
    assert ctl.sweep() == 0
    assert (NOW - st.conn_table.get(tpl).last_seen) // SEC == 300
    assert ctl.conn_counts() == {4: [0, 1, 1]}
    svc = ctl.get_service(IPPROTO_UDP, "10.0.0.1", 53)
    assert (svc.dests[0].inactive, svc.dests[0].persist) == (1, 1)


def rs_listed(st, addr, port, proto=IPPROTO_TCP):
    """The services (proto, vip, vport) rs_table lists under a real server."""
    v = st.rs_table.get(RsKey(a4(addr), socket.htons(port), proto))
    return [] if v is None else [key_tuple(v.svc[i]) for i in range(v.n)]


def test_rs_table_keeps_a_removed_servers_service_while_its_connections_live(ctl):
    """A Masq server deleted or turned -g: its service stays in rs_table
    (replies of its connections are still un-NATed, as IPVS's are) until
    the sweep finds no masquerading destination or live connection needing it."""
    st, svc = ctl.st, (IPPROTO_TCP, "10.0.0.1", 80)
    assert rs_listed(st, "10.1.0.1", 80) == [svc] and rs_listed(st, "10.1.0.3", 80) == []
    assert rs_listed(st, "10.2.0.1", 53, IPPROTO_UDP) == [(IPPROTO_UDP, "10.0.0.1", 53)]
    conn(st, "192.168.10.5", 1001, "10.1.0.1", IP_VS_TCP_S_ESTABLISHED, 5, 1)
    ctl.edit_dest(svc, Destination("10.1.0.1", 80, IP_VS_CONN_F_DROUTE, 3))
    ctl.delete_dest(svc, "10.1.0.2", 8080)
    assert rs_listed(st, "10.1.0.1", 80) == [svc] and rs_listed(st, "10.1.0.2", 8080) == [svc]
    ctl.sweep()     # 10.1.0.2 has no connection; 10.1.0.1's lives on
    assert rs_listed(st, "10.1.0.1", 80) == [svc] and rs_listed(st, "10.1.0.2", 8080) == []
    conn(st, "192.168.10.5", 1001, "10.1.0.1", IP_VS_TCP_S_ESTABLISHED, 2000, 1)  # idle out
    bit = rs_filter_bit(socket.inet_aton("10.1.0.1"))
    assert st.rs_filter.get(bit >> 6).value >> (bit & 63) & 1
    ctl.sweep()
    assert rs_listed(st, "10.1.0.1", 80) == []
    assert rs_listed(st, "10.2.0.1", 53, IPPROTO_UDP) == [(IPPROTO_UDP, "10.0.0.1", 53)]
    # the filter keeps exactly the bits of the addresses rs_table still has
    bits = {rs_filter_bit(bytes(k.addr)) for k in st.rs_table.keys()}
    assert bits and bit not in bits
    assert {w * 64 + i for w in range(S.XDPLB_RS_FILTER_WORDS)
            for i in range(64) if st.rs_filter.get(w).value >> i & 1} == bits
