"""xdplbadm with IPv6 services, as a subprocess against a private pinned
state (the real maps; tests/test_adm.py's fixtures): -A/-a/-e/-d/-D/-C/-S/-R,
-L, -L -n, --stats and -c byte for byte in ipvsadm's IPv6 forms
(docs/ipvs-behaviour.md, "IPv6"), and every refusal changing nothing."""
import ctypes as C
import os
import socket
import sys

from xdplb import structs as S
from xdplb.control import Control
from xdplb.conns import now_ns
from xdplb.structs import Conn, Conn6, ConnKey, ConnKey6, IpVsStats

from test_adm import HEAD, adm, dline, ok, pin, snapshot  # noqa: F401 (pin: a fixture)

EINVAL = "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"


def populate():
    """IPv6 and IPv4 services given in an order the listing must change:
    IPv4 before IPv6, TCP before UDP, then address and port."""
    ok("-C")
    ok("-A", "-u", "[fd00:100::1]:53", "-s", "rr", "-p", "60", "-M", "64")
    ok("-a", "-u", "[fd00:100::1]:53", "-r", "[fd00:80::5]:53", "-m")
    ok("-A", "-t", "[2001:db8::1]:80", "-s", "wrr")
    ok("-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::2]:8080", "-m", "-w", "3")
    ok("-a", "-t", "[2001:db8::1]:80", "-r", "2001:db8:80::3", "-g")   # bare: the service port
    ok("-A", "-t", "[2001:DB8:0::1]:443", "-s", "rr")                 # written as inet_ntop would
    ok("-A", "-t", "10.0.0.1:80", "-s", "rr")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-m")


LISTING = (HEAD + "TCP  10.0.0.1:80 rr\n" + dline("10.1.0.1:80", "Masq", 1)
           + "TCP  [2001:db8::1]:80 wrr\n"
           + dline("[2001:db8:80::2]:8080", "Masq", 3)
           + dline("[2001:db8:80::3]:80", "Route", 1)
           + "TCP  [2001:db8::1]:443 rr\n"
           + "UDP  [fd00:100::1]:53 rr persistent 60 mask 64\n"
           + dline("[fd00:80::5]:53", "Masq", 1))
SAVED = ("-A -t 10.0.0.1:80 -s rr\n"
         "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n"
         "-A -t [2001:db8::1]:80 -s wrr\n"
         "-a -t [2001:db8::1]:80 -r [2001:db8:80::2]:8080 -m -w 3\n"
         "-a -t [2001:db8::1]:80 -r [2001:db8:80::3]:80 -g -w 1\n"
         "-A -t [2001:db8::1]:443 -s rr\n"
         "-A -u [fd00:100::1]:53 -s rr -p 60 -M 64\n"
         "-a -u [fd00:100::1]:53 -r [fd00:80::5]:53 -m -w 1\n")


def test_listing_save_and_restore(pin):
    populate()
    assert ok("-Ln") == LISTING
    assert ok("-S", "-n") == SAVED
    named = ok("-L")
    assert "TCP  [2001:db8::1]:http wrr\n" in named and "TCP  [2001:db8::1]:https rr\n" in named
    assert dline("[2001:db8:80::2]:http-alt", "Masq", 3) in named
    assert "UDP  [fd00:100::1]:domain rr persistent 60 mask 64\n" in named
    assert ok("-L", "-n", "-t", "[2001:db8::1]:80") == HEAD.split("\n", 1)[1] + \
        "TCP  [2001:db8::1]:80 wrr\n" + dline("[2001:db8:80::2]:8080", "Masq", 3) + \
        dline("[2001:db8:80::3]:80", "Route", 1)
    ok("-C")
    assert ok("-Ln") == HEAD
    assert adm("-R", stdin=SAVED) == (0, "", "")
    assert ok("-S", "-n") == SAVED and ok("-Ln") == LISTING


def test_edit_delete_zero_and_stats(pin):
    populate()
    ok("-e", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::2]:8080", "-m", "-w", "7")
    ok("-d", "-t", "[2001:db8::1]:80", "-r", "2001:db8:80::3")
    ok("-E", "-u", "[fd00:100::1]:53", "-s", "wrr", "-p", "60")      # -M back to 128
    ok("-D", "-t", "[2001:db8::1]:443")
    assert ok("-Ln").splitlines()[3:] == [
        "TCP  10.0.0.1:80 rr", dline("10.1.0.1:80", "Masq", 1).rstrip("\n"),
        "TCP  [2001:db8::1]:80 wrr", dline("[2001:db8:80::2]:8080", "Masq", 7).rstrip("\n"),
        "UDP  [fd00:100::1]:53 wrr persistent 60",
        dline("[fd00:80::5]:53", "Masq", 1).rstrip("\n")]
    with Control.open() as ctl:
        svc = ctl.get_service(6, "2001:db8::1", 80, counts=False)
        ctl.st.svc_stats.put(svc.slot, IpVsStats(5, 10, 0, 1000, 0))
        ctl.st.dest_stats.put(svc.dests[0].slot, IpVsStats(5, 10, 0, 1000, 0))
        ncpu = ctl.st.svc_stats.ncpus
    st = ok("-Ln", "--stats").splitlines()
    counted = "%9d%9d%9d%9d%9d" % (5 * ncpu, 10 * ncpu, 0, 1000 * ncpu, 0)
    assert st[5] == "%-33s" % "TCP  [2001:db8::1]:80" + counted
    assert st[6] == "  -> %-28s" % "[2001:db8:80::2]:8080" + counted
    ok("-Z", "-t", "[2001:db8::1]:80")
    assert ok("-Ln", "--stats").splitlines()[5] == \
        "TCP  [2001:db8::1]:80                    0        0        0        0        0"
    ok("-C")
    snap = snapshot()
    assert all(not snap[m] for m in ("services", "services6", "dests", "sched_ring")), snap


def test_connections_counts_and_listing(pin):
    """conns6 entries count as ActiveConn/InActConn and list in -L -c with
    IPv6 endpoints in brackets (%-18s columns they overflow)."""
    populate()
    with Control.open() as ctl:
        svc = ctl.get_service(6, "2001:db8::1", 80, counts=False)
        d = {x.addr: x for x in svc.dests}["2001:db8:80::2"]
        now = now_ns()
        for cport, state in ((1001, 1), (1002, 4)):      # ESTABLISHED, FIN_WAIT
            k = ConnKey6(a16("2001:db8:c::5"), a16("2001:db8::1"), socket.htons(cport),
                         socket.htons(80), 6)
            c = Conn((C.c_uint8 * 4)(*fold_of("2001:db8:80::2")), socket.htons(8080), 0, 0,
                     d.slot, svc.slot, state=state, last_seen=now - 5 * 10**9, dest_seq=d.seq)
            ctl.st.conn_table6.put(k, Conn6(c, a16("2001:db8:80::2")))
    assert dline("[2001:db8:80::2]:8080", "Masq", 3, 1, 1) in ok("-Ln")
    rows = ok("-Lnc").splitlines()
    assert rows[1] == ("pro expire state       source             virtual            "
                       "destination")
    got = sorted(r[:4] + r[11:] for r in rows[2:])
    assert got == [
        "TCP ESTABLISHED [2001:db8:c::5]:1001 [2001:db8::1]:80   [2001:db8:80::2]:8080",
        "TCP FIN_WAIT    [2001:db8:c::5]:1002 [2001:db8::1]:80   [2001:db8:80::2]:8080"]
    ok("-C")
    with Control.open() as ctl:
        ctl.st.conn_table6.clear()


def test_refusals_change_nothing(pin):
    """ipvsadm's family refusal (exit 2), the kernel's EINVAL for real
    servers that are not unicast (a tunnel's in its own family), gre tunnels
    of either family not run yet."""
    populate()
    before = snapshot()
    family = "Different address family is allowed only for tunneling servers\n"
    for args, code, err in (
            (["-a", "-t", "[2001:db8::1]:80", "-r", "10.1.0.9", "-m"], 2, family),
            (["-a", "-t", "10.0.0.1:80", "-r", "[2001:db8:80::9]:80", "-m"], 2, family),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[ff02::1]:80", "-m"], 255, EINVAL),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[fe80::1]:80", "-m"], 255, EINVAL),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[::ffff:10.1.0.1]:80", "-m"], 255, EINVAL),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[::]:80", "-m"], 255, EINVAL),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "224.0.0.1", "-i"], 255, EINVAL),
            (["-a", "-t", "10.0.0.1:80", "-r", "[fe80::9]:80", "-i"], 255, EINVAL),
            (["-A", "-t", "[2001:db8::1]:80", "-s", "rr"], 255, "Service already exists\n"),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::2]:8080", "-m"], 255,
             "Destination already exists\n"),
            (["-d", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::9]:80"], 255,
             "No such destination\n"),
            (["-D", "-t", "[2001:db8::9]:80"], 255, "No such service\n"),
            (["-L", "-t", "[2001:db8::9]:80"], 1, "No such service\n")):
        assert adm(*args)[0::2] == (code, err), args
        assert snapshot() == before, args
    for args in (["-a", "-t", "[2001:db8::1]:80", "-r", "2001:db8:80::9", "-i", "--tun-type",
                  "gre"],
                 ["-a", "-t", "[2001:db8::1]:80", "-r", "10.1.0.9", "-i", "--tun-type", "gre"],
                 ["-a", "-t", "10.0.0.1:80", "-r", "2001:db8:80::9", "-i", "--tun-type", "gre",
                  "--tun-csum"]):
        rc, _, err = adm(*args)
        assert rc == 255 and err.startswith(
            "xdplb: GRE tunnels (--tun-type gre) are not supported yet"), (args, err)
        assert snapshot() == before, args
    ok("-C")


def a16(addr):
    return (C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, addr))


def fold_of(addr):
    from xdplb.keys import fold
    return fold(socket.inet_pton(socket.AF_INET6, addr))


# --- Tunnel (-i) servers of either family under services of either family ----------

TUN_HEAD = ("IP Virtual Server version 1.2.1 (size=4096)\n"
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
            "InActConn\n")


def tline(addr, info, w, a=0, i=0):
    return "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n" % (addr, "Tunnel", info, w, a, i)


def populate_tunnels():
    """IPv6 in IPv6, IPv4 in IPv6 (an IPv6 service's IPv4 servers), IPv6 in
    IPv4, ipip and gue; bare and bracketed addresses, ports forced to the
    service's."""
    ok("-C")
    ok("-A", "-t", "[2001:db8::1]:80", "-s", "rr")
    ok("-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::2]:8080", "-i")
    ok("-a", "-t", "[2001:db8::1]:80", "-r", "10.1.0.2", "-i", "--tun-type", "gue",
       "--tun-port", "6080", "--tun-csum", "-w", "2")
    ok("-A", "-u", "10.0.0.1:53", "-s", "wrr")
    ok("-a", "-u", "10.0.0.1:53", "-r", "fd00:80::5", "-i", "--tun-type", "gue",
       "--tun-port", "6081", "--tun-remcsum")
    ok("-a", "-u", "10.0.0.1:53", "-r", "10.1.0.1", "-i", "-w", "3")


# fd00:80::5's first word is 2^31 or more above 10.1.0.1: libipvs's (int)
# subtraction wraps and lists it first
TUN_LISTING = (TUN_HEAD + "UDP  10.0.0.1:53 wrr\n" + tline("[fd00:80::5]:53", "gue:6081:r+c", 1)
               + tline("10.1.0.1:53", "ipip", 3)
               + "TCP  [2001:db8::1]:80 rr\n" + tline("10.1.0.2:80", "gue:6080:+c", 2)
               + tline("[2001:db8:80::2]:80", "ipip", 1))
TUN_SAVED = ("-A -u 10.0.0.1:53 -s wrr\n"
             "-a -u 10.0.0.1:53 -r [fd00:80::5]:53 -i -w 1 --tun-type gue --tun-port 6081 "
             "--tun-remcsum\n"
             "-a -u 10.0.0.1:53 -r 10.1.0.1:53 -i -w 3 --tun-type ipip\n"
             "-A -t [2001:db8::1]:80 -s rr\n"
             "-a -t [2001:db8::1]:80 -r 10.1.0.2:80 -i -w 2 --tun-type gue --tun-port 6080 "
             "--tun-csum\n"
             "-a -t [2001:db8::1]:80 -r [2001:db8:80::2]:80 -i -w 1 --tun-type ipip\n")


def test_tunnels_of_both_families(pin):
    populate_tunnels()
    assert ok("-L", "-n", "--tun-info") == TUN_LISTING
    assert ok("-S", "-n") == TUN_SAVED
    assert ok("-Ln").splitlines()[3:] == [
        "UDP  10.0.0.1:53 wrr", dline("[fd00:80::5]:53", "Tunnel", 1).rstrip("\n"),
        dline("10.1.0.1:53", "Tunnel", 3).rstrip("\n"),
        "TCP  [2001:db8::1]:80 rr", dline("10.1.0.2:80", "Tunnel", 2).rstrip("\n"),
        dline("[2001:db8:80::2]:80", "Tunnel", 1).rstrip("\n")]
    named = ok("-L")
    assert dline("[fd00:80::5]:domain", "Tunnel", 1) in named
    with Control.open() as ctl:
        d = {x.addr: x.slot for s in ctl.services() for x in s.dests}
        e6, e4 = ctl.st.dests.get(d["fd00:80::5"]), ctl.st.dests.get(d["10.1.0.2"])
    raw = socket.inet_pton(socket.AF_INET6, "fd00:80::5")
    assert (e6.af, bytes(e6.addr6), bytes(e6.addr)) == (10, raw, fold_of("fd00:80::5"))
    assert (e4.af, bytes(e4.addr6), bytes(e4.addr)) == (2, bytes(16),
                                                        socket.inet_aton("10.1.0.2"))
    ok("-C")
    assert adm("-R", stdin=TUN_SAVED) == (0, "", "")
    assert ok("-L", "-n", "--tun-info") == TUN_LISTING
    ok("-C")


def test_tunnel_edits_and_deletes(pin):
    populate_tunnels()
    ok("-e", "-t", "[2001:db8::1]:80", "-r", "10.1.0.2", "-i")    # ipip, weight 1
    ok("-e", "-u", "10.0.0.1:53", "-r", "[fd00:80::5]:53", "-i", "--tun-type", "gue",
       "--tun-port", "7000", "-w", "4")
    assert ok("-L", "-n", "--tun-info") == (
        TUN_HEAD + "UDP  10.0.0.1:53 wrr\n" + tline("[fd00:80::5]:53", "gue:7000:-c", 4)
        + tline("10.1.0.1:53", "ipip", 3)
        + "TCP  [2001:db8::1]:80 rr\n" + tline("10.1.0.2:80", "ipip", 1)
        + tline("[2001:db8:80::2]:80", "ipip", 1))
    before = snapshot()
    family = "Different address family is allowed only for tunneling servers\n"
    assert adm("-e", "-t", "[2001:db8::1]:80", "-r", "10.1.0.2", "-m") == (2, "", family)
    assert adm("-e", "-u", "10.0.0.1:53", "-r", "[fd00:80::5]:53", "-g") == (2, "", family)
    assert snapshot() == before
    ok("-d", "-t", "[2001:db8::1]:80", "-r", "10.1.0.2")
    ok("-d", "-u", "10.0.0.1:53", "-r", "[fd00:80::5]:53")
    assert adm("-d", "-u", "10.0.0.1:53", "-r", "[fd00:80::5]:53") == (
        255, "", "No such destination\n")
    assert ok("-S", "-n") == ("-A -u 10.0.0.1:53 -s wrr\n"
                              "-a -u 10.0.0.1:53 -r 10.1.0.1:53 -i -w 3 --tun-type ipip\n"
                              "-A -t [2001:db8::1]:80 -s rr\n"
                              "-a -t [2001:db8::1]:80 -r [2001:db8:80::2]:80 -i -w 1 "
                              "--tun-type ipip\n")
    ok("-C")
    snap = snapshot()
    assert all(not snap[m] for m in ("services", "services6", "dests", "sched_ring")), snap


def test_mixed_tunnel_connections_list_both_notations(pin):
    """A mixed-family tunnel connection's -L -c row mixes notations; it
    counts as its destination's (entries as the data path writes them: an
    IPv6 client's to an IPv4 server in conns6 with addr6 zero, an IPv4
    client's to an IPv6 server in conns with the server's fold)."""
    populate_tunnels()
    now = now_ns()
    with Control.open() as ctl:
        d = {x.addr: x for s in ctl.services(counts=False) for x in s.dests}
        e4, e6 = ctl.st.dests.get(d["10.1.0.2"].slot), ctl.st.dests.get(d["fd00:80::5"].slot)
        k6 = ConnKey6(a16("2001:db8:c::5"), a16("2001:db8::1"), socket.htons(1001),
                      socket.htons(80), 6)
        ctl.st.conn_table6.put(k6, Conn6(Conn(e4.addr, e4.port, 0, 1, d["10.1.0.2"].slot,
                                              e4.svc_slot, state=1, last_seen=now - 5 * 10**9,
                                              dest_seq=e4.seq), e4.addr6))
        k4 = ConnKey((C.c_uint8 * 4)(*socket.inet_aton("192.0.2.7")),
                     (C.c_uint8 * 4)(*socket.inet_aton("10.0.0.1")), socket.htons(5353),
                     socket.htons(53), 17)
        ctl.st.conn_table.put(k4, Conn(e6.addr, e6.port, 0, 1, d["fd00:80::5"].slot,
                                       e6.svc_slot, last_seen=now - 5 * 10**9,
                                       dest_seq=e6.seq))
    rows = sorted(r[:4] + r[11:] for r in ok("-Lnc").splitlines()[2:])
    assert rows == [
        "TCP ESTABLISHED [2001:db8:c::5]:1001 [2001:db8::1]:80   10.1.0.2:80",
        "UDP UDP         192.0.2.7:5353     10.0.0.1:53        [fd00:80::5]:53"]
    listing = ok("-L", "-n", "--tun-info")
    assert tline("10.1.0.2:80", "gue:6080:+c", 2, 1, 0) in listing
    assert tline("[fd00:80::5]:53", "gue:6081:r+c", 1, 0, 1) in listing
    ok("-C")
    with Control.open() as ctl:
        ctl.st.conn_table.clear()
        ctl.st.conn_table6.clear()


def test_tunnel_sources_of_both_families(pin):
    """tun_src6 as `xdplb attach` writes it beside tun_src: each interface's
    first global IPv6 address usable as a source; zero for one with a
    link-local address only, a deprecated or a tentative (DAD not done: the
    link is down) one, and for loopback's ::1 (host scope)."""
    from xdplb import topology as T
    from xdplb import tunnel
    topo = T.Topology(nodes=("lb",), veths=(
        T.Veth(T.End("lb", "a0", addrs=("10.9.0.1/24", "fd00:9::1/64")), T.End("lb", "a1")),
        T.Veth(T.End("lb", "c0", addrs=("fd00:c::1/64",)), T.End("lb", "c1"))))
    with T.build(topo, f"xdplbt-{os.getpid()}-tsrc") as net, Control.open() as ctl:
        ns = net.ns["lb"]
        ns.run(["ip", "-6", "addr", "add", "fd00:c::2/64", "dev", "c1", "nodad",
                "preferred_lft", "0"])
        ns.add_veth("d0", "d1")
        ns.run(["ip", "-6", "addr", "add", "fd00:d::1/64", "dev", "d0"])
        idx = {dev: ns.ifindex(dev) for dev in ("lo", "a0", "a1", "c0", "c1", "d0", "d1")}
        with ns.entered():
            tunnel.write_sources(ctl.st)
        v6 = {i: socket.inet_ntop(socket.AF_INET6, bytes(v.addr))
              for i, v in ctl.st.tun_src6.items() if any(v.addr)}
        v4 = {i: socket.inet_ntoa(v.value.to_bytes(4, sys.byteorder))
              for i, v in ctl.st.tun_src.items() if v.value}
        for i in range(S.XDPLB_TUN_SRC_SLOTS):
            ctl.st.tun_src.put(i, ctl.st.tun_src.value_type(0))
            ctl.st.tun_src6.put(i, ctl.st.tun_src6.value_type())
    assert v6 == {idx["a0"]: "fd00:9::1", idx["c0"]: "fd00:c::1"}
    assert v4 == {idx["lo"]: "127.0.0.1", idx["a0"]: "10.9.0.1"}
