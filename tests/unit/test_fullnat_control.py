"""Full-NAT's write path on the fake maps: local addresses (config.add_laddr,
delete_laddr; Tables.laddrs), their refusals (each changing nothing), a
full-NAT real server without one refused, the filter bit a full-NAT server
needs, local addresses kept by -E and cleared by -D / -C, and the sweep
releasing fnat_out's mappings (of deleted and of evicted entries, never of
a live one)."""
import ctypes as C
import socket

import pytest

from xdplb import config, conns, ipvsfmt, localaddr
from xdplb.control import Control
from xdplb.model import (E_SVC_NOT_DEFINED, IPPROTO_TCP, IPPROTO_UDP, Destination, Service,
                         XdplbError)
from xdplb.structs import (IP_VS_CONN_F_MASQ, IP_VS_TCP_S_ESTABLISHED, XDPLB_CONN_F_FULLNAT,
                           XDPLB_DIR_IN, XDPLB_LADDR_MAX, XDPLB_SVC_F_HAIRPIN, Conn, ConnKey)
from xdplb.keys import rs_filter_bit
from xdplb.tables import Tables

NOW = 10_000 * 10**9
SVC = (IPPROTO_TCP, "10.0.0.1", 80)
UDP_SVC = (IPPROTO_UDP, "10.0.0.1", 53)


def a4(addr):
    return (C.c_uint8 * 4)(*socket.inet_aton(addr))


@pytest.fixture
def ctl(fake_state, monkeypatch):
    monkeypatch.setattr(conns, "now_ns", lambda: NOW)
    c = Control(fake_state)
    c.add_service(Service(*SVC, sched="rr"))
    c.add_service(Service(*UDP_SVC, sched="rr", flags=XDPLB_SVC_F_HAIRPIN))
    return c


def laddrs(ctl, svc_k=SVC):
    t = Tables(ctl.st)
    return t.laddrs(t.service(svc_k).slot)


def snapshot(st):
    """Every configuration map's bytes."""
    return {name: sorted(getattr(st, name).raw_items())
            for name in ("services", "dests", "laddrs", "rs_filter", "rs_table", "sched_ring",
                         "svc_dests", "alloc")}


def refused(ctl, op, *args):
    """op's XdplbError text, checking it changed nothing."""
    before = snapshot(ctl.st)
    with pytest.raises(XdplbError) as e:
        ctl.apply(op, *args)
    assert snapshot(ctl.st) == before
    return e.value.message


def test_local_addresses_in_order_and_deleted(ctl):
    ctl.apply(config.add_laddr, SVC, "192.168.9.1", 3)
    ctl.apply(config.add_laddr, SVC, "192.168.9.2", 0)
    assert laddrs(ctl) == [("192.168.9.1", 3), ("192.168.9.2", 0)]
    assert laddrs(ctl, UDP_SVC) == []
    v = ctl.st.laddrs.get(Tables(ctl.st).service(SVC).slot)
    assert v.n == 2 and bytes(v.a[0].addr) == socket.inet_aton("192.168.9.1") + bytes(12)
    assert v.a[0].af == 2 and v.a[0].ifindex == 3
    ctl.apply(config.delete_laddr, SVC, "192.168.9.1")
    assert laddrs(ctl) == [("192.168.9.2", 0)]
    ctl.apply(config.delete_laddr, SVC, "192.168.9.2")
    assert laddrs(ctl) == []


def test_ipv6_local_addresses(ctl):
    key = (IPPROTO_TCP, "fd00:1::100", 80)
    ctl.add_service(Service(*key, sched="rr"))
    ctl.apply(config.add_laddr, key, "fd00:80::1", 7)
    assert laddrs(ctl, key) == [("fd00:80::1", 7)]
    v = ctl.st.laddrs.get(Tables(ctl.st).service(key).slot)
    assert bytes(v.a[0].addr) == socket.inet_pton(socket.AF_INET6, "fd00:80::1")
    assert v.a[0].af == 10
    assert "address family" in refused(ctl, config.add_laddr, key, "192.168.9.1", 0)
    assert refused(ctl, config.add_laddr, key, "ff02::1", 0).startswith("Invalid operation")
    ctl.add_dest(key, Destination("fd00:80::2", 8080, XDPLB_CONN_F_FULLNAT))
    assert "need a local address" in refused(ctl, config.delete_laddr, key, "fd00:80::1")


def test_local_address_refusals(ctl):
    assert refused(ctl, config.add_laddr, (IPPROTO_TCP, "10.0.0.9", 80), "192.168.9.1", 0) \
        == E_SVC_NOT_DEFINED
    assert refused(ctl, config.delete_laddr, (IPPROTO_TCP, "10.0.0.9", 80), "192.168.9.1") \
        == E_SVC_NOT_DEFINED
    assert "address family" in refused(ctl, config.add_laddr, SVC, "fd00::1", 0)
    assert refused(ctl, config.add_laddr, SVC, "224.0.0.1", 0).startswith("Invalid operation")
    ctl.apply(config.add_laddr, SVC, "192.168.9.1", 0)
    assert refused(ctl, config.add_laddr, SVC, "192.168.9.1", 4) == \
        "Local address already exists"
    assert refused(ctl, config.delete_laddr, SVC, "192.168.9.7") == "No such local address"
    for i in range(2, XDPLB_LADDR_MAX + 1):
        ctl.apply(config.add_laddr, SVC, f"192.168.9.{i}", 0)
    assert refused(ctl, config.add_laddr, SVC, "192.168.10.1", 0).startswith(
        "Memory allocation problem: a service has at most 16 local addresses")


def test_fullnat_server_needs_a_local_address(ctl):
    dest = Destination("172.80.0.2", 8080, XDPLB_CONN_F_FULLNAT)
    assert refused(ctl, config.add_dest, SVC, dest) == \
        "Full-NAT needs a local address: add one with --add-laddr"
    ctl.add_dest(SVC, Destination("172.80.0.3", 8080, IP_VS_CONN_F_MASQ))
    assert refused(ctl, config.edit_dest, SVC,
                   Destination("172.80.0.3", 8080, XDPLB_CONN_F_FULLNAT)) == \
        "Full-NAT needs a local address: add one with --add-laddr"
    ctl.apply(config.add_laddr, SVC, "192.168.9.1", 0)
    ctl.add_dest(SVC, dest)
    # its replies come from its address: rs_filter has its bit (no rs_table entry)
    bit = rs_filter_bit(socket.inet_aton("172.80.0.2"))
    assert ctl.st.rs_filter.get(bit >> 6).value >> (bit & 63) & 1
    assert not [k for k in ctl.st.rs_table.keys() if bytes(k.addr) == a4("172.80.0.2")]
    [svc] = [s for s in ctl.services() if s.key == SVC]
    assert {d.addr: d.fwd for d in svc.dests} == {"172.80.0.2": XDPLB_CONN_F_FULLNAT,
                                                  "172.80.0.3": IP_VS_CONN_F_MASQ}
    # the last local address stays while a full-NAT server needs it
    assert "need a local address" in refused(ctl, config.delete_laddr, SVC, "192.168.9.1")
    ctl.apply(config.add_laddr, SVC, "192.168.9.2", 0)
    ctl.apply(config.delete_laddr, SVC, "192.168.9.1")
    ctl.delete_dest(SVC, "172.80.0.2", 8080)
    ctl.apply(config.delete_laddr, SVC, "192.168.9.2")
    assert laddrs(ctl) == []


def test_edit_keeps_delete_and_flush_clear(ctl):
    ctl.apply(config.add_laddr, SVC, "192.168.9.1", 0)
    ctl.apply(config.add_laddr, UDP_SVC, "192.168.9.5", 0)
    ctl.edit_service(Service(*SVC, sched="wlc", flags=XDPLB_SVC_F_HAIRPIN))
    assert laddrs(ctl) == [("192.168.9.1", 0)]
    [svc] = [s for s in ctl.services() if s.key == SVC]
    assert svc.flags & XDPLB_SVC_F_HAIRPIN
    ctl.edit_service(Service(*SVC, sched="wlc"))     # -E without --hairpin clears it
    [svc] = [s for s in ctl.services() if s.key == SVC]
    assert not svc.flags & XDPLB_SVC_F_HAIRPIN
    slot = Tables(ctl.st).service(SVC).slot
    ctl.delete_service(*SVC)
    assert ctl.st.laddrs.get(slot).n == 0
    ctl.add_service(Service(*SVC, sched="rr"))        # (takes the slot again)
    assert laddrs(ctl) == []
    ctl.flush()
    assert all(ctl.st.laddrs.get(s).n == 0 for s in range(4))


def test_restore_plans_local_addresses_in_order(ctl):
    """-R: a local address, then its full-NAT server, in one transaction;
    a line refused in between changes nothing of the rest."""
    dest = Destination("172.80.0.2", 8080, XDPLB_CONN_F_FULLNAT)
    results = ctl.restore([(config.add_dest, (SVC, dest)),
                           (config.add_laddr, (SVC, "192.168.9.1", 2)),
                           (config.add_dest, (SVC, dest))])
    assert [r and r.message for r in results] == [localaddr.E_NEED_LADDR, None, None]
    assert laddrs(ctl) == [("192.168.9.1", 2)]


def _fnat_conn(ctl, client_port, lport, last_seen=NOW):
    """A full-NAT entry and its mapping, as the data path writes them."""
    svc = Tables(ctl.st).service(SVC)
    k = ConnKey(a4("10.9.0.2"), a4("10.0.0.1"), socket.htons(client_port), socket.htons(80),
                IPPROTO_TCP)
    c = Conn(addr=a4("172.80.0.2"), port=socket.htons(8080), dir=XDPLB_DIR_IN,
             fwd=XDPLB_CONN_F_FULLNAT, dest_slot=1, svc_slot=svc.slot,
             state=IP_VS_TCP_S_ESTABLISHED, last_seen=last_seen, laddr=a4("192.168.9.1"),
             lport=socket.htons(lport))
    ctl.st.conn_table.put(k, c)
    mk = conns.mapping_key(k, c)
    ctl.st.fnat_out.put(ConnKey.from_buffer_copy(mk), k)
    return k, mk


def test_sweep_releases_mappings_of_gone_entries_only(ctl):
    ctl.apply(config.add_laddr, SVC, "192.168.9.1", 0)
    ctl.add_dest(SVC, Destination("172.80.0.2", 8080, XDPLB_CONN_F_FULLNAT))
    live, live_m = _fnat_conn(ctl, 40000, 2000)
    old, old_m = _fnat_conn(ctl, 40001, 2001, last_seen=NOW - 901 * 10**9)   # expired
    evicted, ev_m = _fnat_conn(ctl, 40002, 2002)
    ctl.st.conn_table.delete(evicted)      # as an LRU eviction: nobody told
    # a stale mapping naming a live entry lent another tuple
    stale = bytes(ConnKey(a4("172.80.0.2"), a4("192.168.9.1"), socket.htons(8080),
                          socket.htons(2003), IPPROTO_TCP))
    ctl.st.fnat_out.put(ConnKey.from_buffer_copy(stale), live)
    assert ctl.sweep() == 1
    assert ctl.st.conn_table.get(old) is None
    assert [bytes(k) for k in ctl.st.fnat_out.keys()] == [live_m]
    # the full-NAT server's filter bit survives the sweep's rebuild
    bit = rs_filter_bit(socket.inet_aton("172.80.0.2"))
    assert ctl.st.rs_filter.get(bit >> 6).value >> (bit & 63) & 1
    rows = ctl.connections()
    assert [r[2:8] for r in rows] == [("10.9.0.2", 40000, "10.0.0.1", 80, "172.80.0.2", 8080)]
    # -L -c: IPVS's columns, then the local address
    assert ipvsfmt.conn_listing(rows, ipvsfmt.FMT_NUMERIC).splitlines()[1:] == [
        "pro expire state       source             virtual            destination",
        "TCP 15:00  ESTABLISHED 10.9.0.2:40000     10.0.0.1:80        172.80.0.2:8080    "
        "FullNat 192.168.9.1:2000"]
