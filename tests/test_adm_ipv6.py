"""xdplbadm with IPv6 services, as a subprocess against a private pinned
state (the real maps; tests/test_adm.py's fixtures): -A/-a/-e/-d/-D/-C/-S/-R,
-L, -L -n, --stats and -c byte for byte in ipvsadm's IPv6 forms
(docs/ipvs-behaviour.md, "IPv6"), and every refusal changing nothing."""
import ctypes as C
import socket

from xdplb.control import Control
from xdplb.conns import now_ns
from xdplb.structs import Conn, Conn6, ConnKey6, IpVsStats

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
    """ipvsadm's family refusal (exit 2), the kernel's EINVAL for IPv6
    real servers that are not unicast, IPv6 tunnels not run yet."""
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
            (["-A", "-t", "[2001:db8::1]:80", "-s", "rr"], 255, "Service already exists\n"),
            (["-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::2]:8080", "-m"], 255,
             "Destination already exists\n"),
            (["-d", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:80::9]:80"], 255,
             "No such destination\n"),
            (["-D", "-t", "[2001:db8::9]:80"], 255, "No such service\n"),
            (["-L", "-t", "[2001:db8::9]:80"], 1, "No such service\n")):
        assert adm(*args)[0::2] == (code, err), args
        assert snapshot() == before, args
    for args in (["-a", "-t", "[2001:db8::1]:80", "-r", "2001:db8:80::9", "-i"],
                 ["-a", "-t", "[2001:db8::1]:80", "-r", "10.1.0.9", "-i"],
                 ["-a", "-t", "10.0.0.1:80", "-r", "2001:db8:80::9", "-i"]):
        rc, _, err = adm(*args)
        assert rc == 255 and err.startswith(
            "xdplb: IPv6 tunnels and mixed-family tunnels (-i with IPv6) are not supported yet"
        ), (args, err)
        assert snapshot() == before, args
    ok("-C")


def a16(addr):
    return (C.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, addr))


def fold_of(addr):
    from xdplb.tables import fold
    return fold(socket.inet_pton(socket.AF_INET6, addr))
