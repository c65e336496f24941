"""IPv6 and mixed-family Tunnel (-i) real servers through xdplbadm on the
fake maps: what is stored (a server of either family under a service of
either family: af, addr6 and the fold), -L --tun-info, -L -n and -S byte for
byte (a mixed list sorted as libipvs compares it), -S -> -R, -e and -d, the
refusals that remain (gre, another family without -i, non-unicast servers),
mh hashing a server in its service's family, and -L -c rows that mix
notations. (The clock is fixed: conns.now_ns.)"""
import ctypes as C
import socket

import pytest

from xdplb import conns, ipvsfmt, sched
from xdplb.model import Destination
from xdplb.structs import (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                           IP_VS_CONN_F_TUNNEL_TYPE_IPIP, IP_VS_TCP_S_ESTABLISHED,
                           IP_VS_TCP_S_FIN_WAIT, IP_VS_TUNNEL_ENCAP_FLAG_CSUM, XDPLB_AF_INET,
                           XDPLB_AF_INET6, XDPLB_DIR_IN, Conn, Conn6, ConnKey, ConnKey6,
                           RingKey)
from xdplb.control import Control
from xdplb.keys import b2a, dest_addr, fold

from .test_control_reads import NOW, SEC, dline
from .test_tunnel_control import xadm  # noqa: F401 (a fixture)

V6 = "[2001:db8::1]:80"
V4 = "10.0.0.1:80"
FAMILY = "Different address family is allowed only for tunneling servers\n"
EINVAL = "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"


def a2b(addr):
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def dest_entries(state):
    """{address text: DestEntry} of the used dests slots."""
    out = {}
    for slot in range(1, 16):
        d = state.dests.get(slot)
        if d is not None and d.flags:
            out[b2a(dest_addr(d))] = d
    return out


def add_both(xadm):
    """An IPv6 service with IPv6 and IPv4 tunnel servers and an IPv4 one
    with IPv4 and IPv6 ones. 32.1.13.184 is 0x20010db8, 2001:db8's first
    word: compared in the IPv4 server's family the two are equal, in the
    IPv6 one's the IPv6 server is greater."""
    assert xadm("-A", "-t", V6, "-s", "rr")[0] == 0
    assert xadm("-A", "-t", V4, "-s", "wrr")[0] == 0
    for svc, extra in ((V6, ["-r", "10.1.0.2", "-i", "-w", "2"]),
                       (V6, ["-r", "32.1.13.184", "-i", "--tun-type", "gue", "--tun-port",
                             "6080", "--tun-csum"]),
                       (V6, ["-r", "[2001:db8:80::2]:8080", "-i"]),
                       (V4, ["-r", "[2001:db8:80::4]:8080", "-i", "--tun-type", "gue",
                             "--tun-port", "6081"]),
                       (V4, ["-r", "2001:db8:80::5", "-i"]),
                       (V4, ["-r", "10.1.0.1", "-i", "-w", "3"])):
        assert xadm("-a", "-t", svc, *extra) == (0, "", "")


TUN_INFO = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    "TCP  10.0.0.1:80 wrr\n"
    "  -> 10.1.0.1:80                  Tunnel  ipip          3      0          0         \n"
    "  -> [2001:db8:80::4]:80          Tunnel  gue:6081:-c   1      0          0         \n"
    "  -> [2001:db8:80::5]:80          Tunnel  ipip          1      0          0         \n"
    "TCP  [2001:db8::1]:80 rr\n"
    "  -> 10.1.0.2:80                  Tunnel  ipip          2      0          0         \n"
    "  -> 32.1.13.184:80               Tunnel  gue:6080:+c   1      0          0         \n"
    "  -> [2001:db8:80::2]:80          Tunnel  ipip          1      0          0         \n")

LISTING = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    "TCP  10.0.0.1:80 wrr\n" + dline("10.1.0.1:80", "Tunnel", 3)
    + dline("[2001:db8:80::4]:80", "Tunnel", 1) + dline("[2001:db8:80::5]:80", "Tunnel", 1)
    + "TCP  [2001:db8::1]:80 rr\n" + dline("10.1.0.2:80", "Tunnel", 2)
    + dline("32.1.13.184:80", "Tunnel", 1) + dline("[2001:db8:80::2]:80", "Tunnel", 1))

SAVED = (
    "-A -t 10.0.0.1:80 -s wrr\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -i -w 3 --tun-type ipip\n"
    "-a -t 10.0.0.1:80 -r [2001:db8:80::4]:80 -i -w 1 --tun-type gue --tun-port 6081 "
    "--tun-nocsum\n"
    "-a -t 10.0.0.1:80 -r [2001:db8:80::5]:80 -i -w 1 --tun-type ipip\n"
    "-A -t [2001:db8::1]:80 -s rr\n"
    "-a -t [2001:db8::1]:80 -r 10.1.0.2:80 -i -w 2 --tun-type ipip\n"
    "-a -t [2001:db8::1]:80 -r 32.1.13.184:80 -i -w 1 --tun-type gue --tun-port 6080 "
    "--tun-csum\n"
    "-a -t [2001:db8::1]:80 -r [2001:db8:80::2]:80 -i -w 1 --tun-type ipip\n")


def test_tunnels_of_both_families_are_stored_listed_and_saved(xadm):
    add_both(xadm)
    d = dest_entries(xadm.state)
    port = socket.htons(80)     # forced to the service's, as with -g
    for addr in ("10.1.0.2", "32.1.13.184", "10.1.0.1"):
        assert (d[addr].af, bytes(d[addr].addr), bytes(d[addr].addr6), d[addr].port) == (
            XDPLB_AF_INET, socket.inet_aton(addr), bytes(16), port), addr
    for addr in ("2001:db8:80::2", "2001:db8:80::4", "2001:db8:80::5"):
        raw = socket.inet_pton(socket.AF_INET6, addr)
        assert (d[addr].af, bytes(d[addr].addr), bytes(d[addr].addr6), d[addr].port) == (
            XDPLB_AF_INET6, fold(raw), raw, port), addr
    assert {a: (e.fwd, e.tun_type, socket.ntohs(e.tun_port), e.tun_flags)
            for a, e in d.items() if a in ("32.1.13.184", "2001:db8:80::4")} == {
        "32.1.13.184": (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE, 6080,
                        IP_VS_TUNNEL_ENCAP_FLAG_CSUM),
        "2001:db8:80::4": (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE, 6081, 0)}
    assert xadm("-L", "-n", "--tun-info") == (0, TUN_INFO, "")
    assert xadm("-L", "-n") == (0, LISTING, "")
    assert xadm("-S", "-n") == (0, SAVED, "")
    # every tunnel server's neighbour is resolved, in its own family
    assert xadm.primed == ["10.1.0.2", "32.1.13.184", "2001:db8:80::2", "2001:db8:80::4",
                           "2001:db8:80::5", "10.1.0.1"]


def test_save_then_restore_gives_the_same_table(xadm):
    add_both(xadm)
    before = {a: (e.af, bytes(e.addr), bytes(e.addr6), e.port, e.fwd, e.weight, e.tun_type,
                  e.tun_port, e.tun_flags) for a, e in dest_entries(xadm.state).items()}
    assert xadm("-C")[0] == 0
    assert xadm("-R", stdin=SAVED) == (0, "", "")
    assert xadm("-S", "-n") == (0, SAVED, "")
    assert {a: (e.af, bytes(e.addr), bytes(e.addr6), e.port, e.fwd, e.weight, e.tun_type,
                e.tun_port, e.tun_flags)
            for a, e in dest_entries(xadm.state).items()} == before


def test_edit_and_delete(xadm):
    add_both(xadm)
    assert xadm("-e", "-t", V6, "-r", "10.1.0.2", "-i", "--tun-type", "gue", "--tun-port",
                "7000", "--tun-csum", "-w", "5") == (0, "", "")
    assert "-a -t [2001:db8::1]:80 -r 10.1.0.2:80 -i -w 5 --tun-type gue --tun-port 7000 " \
           "--tun-csum\n" in xadm("-S", "-n")[1]
    # -e without tunnel options or weight: ipip, weight 1 (ipvsadm's defaults)
    assert xadm("-e", "-t", V4, "-r", "[2001:db8:80::4]:80", "-i") == (0, "", "")
    e = dest_entries(xadm.state)["2001:db8:80::4"]
    assert (e.tun_type, e.tun_port, e.tun_flags, e.weight) == (
        IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, 0, 1)
    before = dest_entries(xadm.state)
    assert xadm("-d", "-t", V6, "-r", "10.1.0.2") == (0, "", "")
    assert xadm("-d", "-t", V4, "-r", "[2001:db8:80::5]:80") == (0, "", "")
    assert set(before) - set(dest_entries(xadm.state)) == {"10.1.0.2", "2001:db8:80::5"}
    assert xadm("-d", "-t", V4, "-r", "[2001:db8:80::5]:80") == (255, "", "No such destination\n")
    assert xadm("-e", "-t", V6, "-r", "10.1.0.9", "-i") == (255, "", "No such destination\n")


REFUSED = [
    # another family without -i: ipvsadm's own words, before anything is asked
    (V6, ["-r", "10.1.0.9", "-m"], 2, FAMILY),
    (V6, ["-r", "10.1.0.9", "-g"], 2, FAMILY),
    (V6, ["-r", "10.1.0.9"], 2, FAMILY),                 # (no method: -g)
    (V4, ["-r", "[2001:db8:80::9]:80", "-m"], 2, FAMILY),
    # a server that is not unicast in its own family: the kernel's EINVAL
    (V6, ["-r", "224.0.0.1", "-i"], 255, EINVAL),
    (V6, ["-r", "0.0.0.0", "-i"], 255, EINVAL),
    (V4, ["-r", "[fe80::9]:80", "-i"], 255, EINVAL),
    (V4, ["-r", "[::ffff:10.1.0.9]:80", "-i"], 255, EINVAL),
]


@pytest.mark.parametrize("svc,extra,code,err", REFUSED,
                         ids=[" ".join([s, *e]) for s, e, _, _ in REFUSED])
def test_refusals_change_nothing(xadm, svc, extra, code, err):
    add_both(xadm)
    before = {a: bytes(e) for a, e in dest_entries(xadm.state).items()}
    assert xadm("-a", "-t", svc, *extra) == (code, "", err)
    assert xadm("-e", "-t", svc, *extra)[0::2] == (code, err)
    assert {a: bytes(e) for a, e in dest_entries(xadm.state).items()} == before


def test_gre_stays_refused_in_every_family(xadm):
    add_both(xadm)
    saved = xadm("-S", "-n")[1]
    for svc, rip in ((V6, "[2001:db8:80::9]:80"), (V6, "10.1.0.9"), (V4, "[2001:db8:80::9]:80")):
        code, out, err = xadm("-a", "-t", svc, "-r", rip, "-i", "--tun-type", "gre")
        assert (code, out) == (255, "")
        assert err.startswith("xdplb: GRE tunnels (--tun-type gre) are not supported yet"), err
    code, _, err = xadm("-e", "-t", V6, "-r", "10.1.0.2", "-i", "--tun-type", "gre")
    assert code == 255 and err.startswith("xdplb: GRE tunnels")
    assert xadm("-S", "-n")[1] == saved


def test_mh_hashes_a_server_in_its_services_family(xadm):
    """ip_vs_mh_hashkey reads a server's address in the service's family: an
    IPv4 service hashes an IPv6 server's first word, not its fold."""
    assert xadm("-A", "-t", V4, "-s", "mh")[0] == 0
    for rip in ("10.1.0.1", "[2001:db8:80::4]:80", "[2001:db8:80::5]:80"):
        assert xadm("-a", "-t", V4, "-r", rip, "-i")[0] == 0
    st = xadm.state
    entry = st.services.get(next(st.services.keys()))
    dests = Control(st).get_service(socket.IPPROTO_TCP, "10.0.0.1", 80, counts=False).dests
    dlist = [(d.slot, d.weight) for d in dests]     # (kernel order: newest first)

    def table(addr_of):
        return sched.table_for("mh", dlist, {d.slot: (int.from_bytes(addr_of(d.addr), "big"),
                                                      80, 1) for d in dests})
    first_word = table(lambda a: a2b(a)[:4])
    folded = table(lambda a: fold(a2b(a)) if ":" in a else a2b(a))
    assert first_word != folded     # (the test can tell them apart)
    ring = [st.sched_ring.get(RingKey(entry.slot, entry.ring_gen | i)).value
            for i in range(entry.ring_len)]
    assert ring == first_word


def test_mixed_family_list_sorts_as_libipvs(xadm):
    """libipvs compares two servers in the first one's family, so an IPv4
    server 32.1.13.184 and 2001:db8:80::2 are equal one way and not the
    other: only glibc's merge order gives ipvsadm's listing."""
    v6 = Destination("2001:db8:80::2", 80, IP_VS_CONN_F_TUNNEL)
    v4 = Destination("32.1.13.184", 80, IP_VS_CONN_F_TUNNEL)
    assert ipvsfmt.cmp_dests(v4, v6) == 0 and ipvsfmt.cmp_dests(v6, v4) > 0
    assert ipvsfmt.sort_dests([v6, v4]) == [v4, v6]
    assert ipvsfmt.sort_dests([v4, v6]) == [v4, v6]
    low = Destination("10.1.0.2", 80, IP_VS_CONN_F_TUNNEL)
    assert ipvsfmt.sort_dests([v6, low, v4]) == [low, v4, v6]


def test_mixed_family_connections_count_list_and_survive_the_sweep(xadm, monkeypatch):
    """A tunnel connection of an IPv6 client to an IPv4 server lives in
    conns6 (addr the server's, addr6 zero, as the data path copies them from
    the destination), one of an IPv4 client to an IPv6 server in conns
    (addr the server's fold): both count, list with the server in its own
    family, and the sweep keeps them."""
    monkeypatch.setattr(conns, "now_ns", lambda: NOW)
    add_both(xadm)
    st = xadm.state
    d = {b2a(dest_addr(st.dests.get(s))): (s, st.dests.get(s)) for s in range(1, 7)}
    slot4, d4 = d["10.1.0.2"]
    slot6, d6 = d["2001:db8:80::5"]
    k6 = ConnKey6((C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, "2001:db8:c::5")),
                  (C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, "2001:db8::1")),
                  socket.htons(1001), socket.htons(80), socket.IPPROTO_TCP)
    st.conn_table6.put(k6, Conn6(Conn(d4.addr, socket.htons(80), XDPLB_DIR_IN,
                                      IP_VS_CONN_F_TUNNEL, slot4, d4.svc_slot,
                                      state=IP_VS_TCP_S_ESTABLISHED, last_seen=NOW - 5 * SEC,
                                      dest_seq=d4.seq), d4.addr6))
    k4 = ConnKey((C.c_uint8 * 4)(*socket.inet_aton("192.0.2.7")),
                 (C.c_uint8 * 4)(*socket.inet_aton("10.0.0.1")), socket.htons(1002),
                 socket.htons(80), socket.IPPROTO_TCP)
    st.conn_table.put(k4, Conn(d6.addr, socket.htons(80), XDPLB_DIR_IN, IP_VS_CONN_F_TUNNEL,
                               slot6, d6.svc_slot, state=IP_VS_TCP_S_FIN_WAIT,
                               last_seen=NOW - 5 * SEC, dest_seq=d6.seq))
    code, out, _ = xadm("-L", "-n", "-c")
    assert code == 0 and sorted(out.splitlines()[2:]) == [
        "TCP 01:55  FIN_WAIT    192.0.2.7:1002     10.0.0.1:80        [2001:db8:80::5]:80",
        "TCP 14:55  ESTABLISHED [2001:db8:c::5]:1001 [2001:db8::1]:80   10.1.0.2:80"]
    listing = xadm("-L", "-n")[1]
    assert dline("10.1.0.2:80", "Tunnel", 2, 1, 0) in listing
    assert dline("[2001:db8:80::5]:80", "Tunnel", 1, 0, 1) in listing
    assert Control(st).sweep() == 0
    assert st.conn_table6.get(k6) is not None and st.conn_table.get(k4) is not None
    # an entry naming another server than its slot's is not the destination's
    st.conn_table6.put(k6, Conn6(Conn(d4.addr, socket.htons(80), XDPLB_DIR_IN,
                                      IP_VS_CONN_F_TUNNEL, slot4, d4.svc_slot,
                                      state=IP_VS_TCP_S_ESTABLISHED, last_seen=NOW - 5 * SEC),
                                 (C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6,
                                                                    "2001:db8:80::9"))))
    assert dline("10.1.0.2:80", "Tunnel", 2, 0, 0) in xadm("-L", "-n")[1]
