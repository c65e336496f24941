"""xdplbadm's full-NAT, hairpin and local-address commands as a subprocess
against a private pinned state (tests/test_adm.py's stub state: the real
maps), run inside a private netns whose interfaces hold the local
addresses (a local address must be one of the host's): -P/-Q/-G, --fullnat,
--hairpin, their listings, -S/-R round trips, and every refusal changing
nothing (-S and every map compared before and after)."""
import ctypes as C
import os
import socket

import pytest

from xdplb import topology
from xdplb.conns import now_ns
from xdplb.control import Control
from xdplb.structs import XDPLB_CONN_F_FULLNAT, Conn, ConnKey

from test_adm import CMD, HEAD, dline, pin, snapshot  # noqa: F401 (pin: a fixture)

# the balancer's netns: v0 holds the IPv4 and IPv6 local addresses, v1
# seventeen more (one over a service's XDPLB_LADDR_MAX)
MANY = tuple(f"10.9.2.{i}" for i in range(1, 18))
LB = topology.Topology(nodes=("lb",), veths=(topology.Veth(
    topology.End("lb", "v0", addrs=("10.9.0.1/24", "10.9.0.2/24", "2001:db8:9::1/64")),
    topology.End("lb", "v1", addrs=tuple(f"{a}/24" for a in MANY))),))

VIP, VIP6 = "10.0.0.1:80", "[2001:db8::1]:443"
FNAT_NEEDS = "Full-NAT needs a local address: add one with --add-laddr\n"
GTITLE = "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS      IFNAME\n"


@pytest.fixture(scope="module")
def lb(pin):
    net = topology.build(LB, f"xtf{os.getpid() % 100000}")
    try:
        yield net.ns["lb"]
    finally:
        net.close()


def run(ns, *args, stdin=None):
    """(exit code, stdout, stderr) of xdplbadm inside ns."""
    p = ns.run(CMD + list(args), check=False, input=stdin, env=dict(os.environ))
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def adm(lb):
    def adm(*args, stdin=None):
        return run(lb, *args, stdin=stdin)
    adm("-C")
    yield adm
    adm("-C")


def ok(adm, *args, stdin=None):
    rc, out, err = adm(*args, stdin=stdin)
    assert (rc, err) == (0, ""), (args, rc, err)
    return out


def gline(la, conflicts=0, conns=0, ifname=None):
    return "%-20s %-8s %-20s %-10u %-10u" % ("", "", la, conflicts, conns) + \
        (f" {ifname}\n" if ifname else "\n")


def populate(adm):
    ok(adm, "-A", "-t", VIP, "-s", "rr", "--hairpin")
    ok(adm, "-P", "-t", VIP, "-z", "10.9.0.2", "-F", "v0")
    ok(adm, "--add-laddr", "--tcp-service", VIP, "--laddr", "10.9.2.1")
    ok(adm, "-a", "-t", VIP, "-r", "172.80.0.2:8080", "--fullnat", "-w", "2")
    ok(adm, "-a", "-t", VIP, "-r", "172.80.0.3", "-m")
    ok(adm, "-A", "-t", VIP6, "-s", "wlc", "--hairpin")
    ok(adm, "-a", "-t", VIP6, "-r", "[2001:db8:80::2]:443", "-m")
    ok(adm, "-A", "-u", "10.0.0.1:53", "-s", "rr")
    ok(adm, "-P", "-u", "10.0.0.1:53", "-z", "10.9.0.1", "-F", "v1")
    ok(adm, "-a", "-u", "10.0.0.1:53", "-r", "172.80.0.4", "--fullnat")
    ok(adm, "-A", "-u", "10.0.0.2:53", "-s", "rr")
    ok(adm, "-a", "-u", "10.0.0.2:53", "-r", "172.80.0.9", "-m")


SAVED = ("-A -t 10.0.0.1:80 -s rr --hairpin\n"
         "-P -t 10.0.0.1:80 -z 10.9.0.2 -F v0\n"
         "-P -t 10.0.0.1:80 -z 10.9.2.1\n"
         "-a -t 10.0.0.1:80 -r 172.80.0.2:8080 --fullnat -w 2\n"
         "-a -t 10.0.0.1:80 -r 172.80.0.3:80 -m -w 1\n"
         "-A -u 10.0.0.1:53 -s rr\n"
         "-P -u 10.0.0.1:53 -z 10.9.0.1 -F v1\n"
         "-a -u 10.0.0.1:53 -r 172.80.0.4:53 --fullnat -w 1\n"
         "-A -u 10.0.0.2:53 -s rr\n"
         "-a -u 10.0.0.2:53 -r 172.80.0.9:53 -m -w 1\n"
         "-A -t [2001:db8::1]:443 -s wlc --hairpin\n"
         "-a -t [2001:db8::1]:443 -r [2001:db8:80::2]:443 -m -w 1\n")
LISTING = (HEAD + "TCP  10.0.0.1:80 rr hairpin\n"
           + dline("172.80.0.2:8080", "FullNat", 2) + dline("172.80.0.3:80", "Masq", 1)
           + "UDP  10.0.0.1:53 rr\n" + dline("172.80.0.4:53", "FullNat", 1)
           + "UDP  10.0.0.2:53 rr\n" + dline("172.80.0.9:53", "Masq", 1)
           + "TCP  [2001:db8::1]:443 wlc hairpin\n" + dline("[2001:db8:80::2]:443", "Masq", 1))


def get(c80=(0, 0), c53=0):
    """-G of populate()'s table, with these connections on the local addresses."""
    return (GTITLE + "10.0.0.1:80          2        \n"
            + gline("10.9.0.2", conns=c80[0], ifname="v0") + gline("10.9.2.1", conns=c80[1])
            + "10.0.0.1:53          1        \n" + gline("10.9.0.1", conns=c53, ifname="v1")
            + "10.0.0.2:53          0        \n"
            + "[2001:db8::1]:443    0        \n")


def test_listing_save_and_restore(adm):
    populate(adm)
    assert ok(adm, "-Ln") == LISTING
    assert ok(adm, "-S", "-n") == SAVED
    assert ok(adm, "-G") == get()
    assert ok(adm, "-G", "-u", "10.0.0.1:53") == (GTITLE + "10.0.0.1:53          1        \n"
                                                  + gline("10.9.0.1", ifname="v1"))
    stats = ok(adm, "-Ln", "--stats", "--exact").splitlines()
    assert stats[3:5] == [
        "TCP  10.0.0.1:80                         0        0        0        0        0",
        "  -> 172.80.0.2:8080                     0        0        0        0        0"]
    assert ok(adm, "-Ln", "--tun-info").splitlines()[4] == (
        "  -> 172.80.0.2:8080              FullNat n/a           2      0          0         ")
    assert ok(adm, "-L", "-n", "-t", VIP) == "".join(LISTING.splitlines(True)[1:6])
    ok(adm, "-C")
    assert ok(adm, "-G") == ""
    assert adm("-R", stdin=SAVED) == (0, "", "")
    assert (ok(adm, "-S", "-n"), ok(adm, "-Ln"), ok(adm, "-G")) == (SAVED, LISTING, get())
    # -G as a line of -R, where the lines before it left the table
    ok(adm, "-C")
    assert adm("-R", stdin="".join(SAVED.splitlines(True)[:3]) + "-G -t 10.0.0.1:80\n") == (
        0, GTITLE + "10.0.0.1:80          2        \n" + gline("10.9.0.2", ifname="v0")
        + gline("10.9.2.1"), "")


def test_get_counts_connections_per_local_address(adm):
    """-G's CONNS: the live source-NATed connections lent each address."""
    populate(adm)

    def b4(a):
        return (C.c_uint8 * 4)(*socket.inet_aton(a))
    with Control.open() as ctl:
        svc = ctl.get_service(6, "10.0.0.1", 80, counts=False)
        d = {x.addr: x for x in svc.dests}["172.80.0.2"]
        now = now_ns()
        for cport, laddr, state, age in ((1001, "10.9.2.1", 1, 5), (1002, "10.9.2.1", 1, 5),
                                         (1003, "10.9.0.2", 1, 5), (1004, "10.9.0.2", 6, 20)):
            k = ConnKey(b4("192.168.10.5"), b4("10.0.0.1"), socket.htons(cport),
                        socket.htons(80), 6)
            ctl.st.conn_table.put(k, Conn(
                b4("172.80.0.2"), socket.htons(8080), 0, XDPLB_CONN_F_FULLNAT, d.slot, svc.slot,
                state=state, last_seen=now - age * 10**9, laddr=b4(laddr),
                lport=socket.htons(40000 + cport)))
    try:
        assert ok(adm, "-G") == get(c80=(1, 2))     # CLOSE 20 s ago: expired after 10 s
        assert dline("172.80.0.2:8080", "FullNat", 2, 3, 0) in ok(adm, "-Ln")
    finally:
        with Control.open() as ctl:
            ctl.st.conn_table.clear()


def test_delete_local_addresses(adm):
    populate(adm)
    ok(adm, "-Q", "-t", VIP, "-z", "10.9.0.2")
    assert ok(adm, "-G", "-t", VIP) == GTITLE + "10.0.0.1:80          1        \n" + gline("10.9.2.1")
    # with no full-NAT server left, the last local address may go
    ok(adm, "-d", "-t", VIP, "-r", "172.80.0.2:8080")
    ok(adm, "--del-laddr", "-t", VIP, "-z", "10.9.2.1")
    assert ok(adm, "-G", "-t", VIP) == GTITLE + "10.0.0.1:80          0        \n"
    # -E keeps them; -D takes them with the service
    ok(adm, "-E", "-u", "10.0.0.1:53", "-s", "wlc")
    assert ok(adm, "-G", "-u", "10.0.0.1:53").endswith(gline("10.9.0.1", ifname="v1"))
    ok(adm, "-D", "-u", "10.0.0.1:53")
    ok(adm, "-A", "-u", "10.0.0.1:53", "-s", "rr")
    assert ok(adm, "-G", "-u", "10.0.0.1:53") == GTITLE + "10.0.0.1:53          0        \n"


def test_hairpin_set_and_cleared_by_edit(adm):
    ok(adm, "-A", "-t", VIP, "-s", "sh", "-b", "sh-port", "-p", "60", "--hairpin")
    assert ok(adm, "-Ln").endswith("TCP  10.0.0.1:80 sh (sh-port) persistent 60 hairpin\n")
    assert ok(adm, "-S", "-n") == "-A -t 10.0.0.1:80 -s sh -p 60 -b sh-port --hairpin\n"
    ok(adm, "-E", "-t", VIP, "-s", "sh", "-b", "sh-port", "-p", "60")
    assert ok(adm, "-S", "-n") == "-A -t 10.0.0.1:80 -s sh -p 60 -b sh-port\n"
    ok(adm, "-E", "-t", VIP, "-s", "rr", "--hairpin")
    assert ok(adm, "-S", "-n") == "-A -t 10.0.0.1:80 -s rr --hairpin\n"
    saved = ok(adm, "-S", "-n")
    ok(adm, "-C")
    assert adm("-R", stdin=saved) == (0, "", "")
    assert ok(adm, "-S", "-n") == saved


NOT_ON_HOST = ("xdplb: local address 10.9.9.9 is not an address of this host: add it to an "
               "interface first (full-NAT's replies come back to it)\n")
FAMILY = "xdplb: a local address must be of its service's address family\n"
IN_USE = ("xdplb: the service's full-NAT real servers need a local address: delete them or "
          "change their forwarding method first\n")
# (args, exit code, stderr; a str ending in "..." is a prefix) refused with
# the table populate() makes
REFUSALS = [
    (["-P", "-t", VIP, "-z", "10.9.9.9"], 255, NOT_ON_HOST),
    (["-P", "-t", VIP, "-z", "10.9.0.1", "-F", "nosuch0"], 255,
     "xdplb: no interface 'nosuch0' on this host (-F)\n"),
    (["-P", "-t", "10.0.0.9:80", "-z", "10.9.0.1"], 255, "Service not defined\n"),
    (["-Q", "-t", "10.0.0.9:80", "-z", "10.9.0.1"], 255, "Service not defined\n"),
    (["-G", "-t", "10.0.0.9:80"], 1, "No such service\n"),
    (["-P", "-t", VIP, "-z", "10.9.0.2"], 255, "Local address already exists\n"),
    (["-Q", "-t", VIP, "-z", "10.9.0.1"], 255, "No such local address\n"),
    (["-P", "-t", VIP, "-z", "2001:db8:9::1"], 255, FAMILY),
    (["-P", "-t", VIP6, "-z", "10.9.0.1"], 255, FAMILY),
    (["-a", "-t", VIP6, "-r", "[2001:db8:80::3]:443", "--fullnat"], 255, FNAT_NEEDS),
    (["-Q", "-u", "10.0.0.1:53", "-z", "10.9.0.1"], 255, IN_USE),
    (["-a", "-u", "10.0.0.2:53", "-r", "172.80.0.8", "--fullnat"], 255, FNAT_NEEDS),
    (["-e", "-u", "10.0.0.2:53", "-r", "172.80.0.9", "--fullnat"], 255, FNAT_NEEDS),
]


def test_refusals_change_nothing(adm):
    populate(adm)
    saved, before = ok(adm, "-S", "-n"), snapshot()
    for args, code, err in REFUSALS:
        rc, out, e = adm(*args)
        assert (rc, out) == (code, ""), (args, rc, e)
        assert e.startswith(err[:-3]) if err.endswith("...") else e == err, (args, e)
        assert ok(adm, "-S", "-n") == saved and snapshot() == before, args


def test_ipv6_local_address(adm):
    """An IPv6 service takes an IPv6 local address: saved by -S, listed by
    -G, and then its full-NAT real servers are accepted."""
    populate(adm)
    ok(adm, "-P", "-t", VIP6, "-z", "2001:db8:9::1")
    ok(adm, "-a", "-t", VIP6, "-r", "[2001:db8:80::3]:443", "--fullnat")
    saved = ok(adm, "-S", "-n")
    assert "\n-P -t [2001:db8::1]:443 -z 2001:db8:9::1" in saved, saved
    assert "-a -t [2001:db8::1]:443 -r [2001:db8:80::3]:443 --fullnat" in saved, saved
    assert "2001:db8:9::1" in ok(adm, "-G", "-t", VIP6)


def test_too_many_local_addresses(adm):
    ok(adm, "-A", "-u", "10.0.0.1:53", "-s", "rr")
    for a in MANY[:16]:
        ok(adm, "-P", "-u", "10.0.0.1:53", "-z", a, "-F", "v1")
    saved, before = ok(adm, "-S", "-n"), snapshot()
    assert adm("-P", "-u", "10.0.0.1:53", "-z", MANY[16]) == (
        255, "", "Memory allocation problem: a service has at most 16 local addresses in xdplb\n")
    assert ok(adm, "-S", "-n") == saved and snapshot() == before
    assert saved.count("\n-P -u 10.0.0.1:53 -z ") == 16


def test_restore_reports_refused_lines_and_goes_on(adm):
    """A refused -P line (not on this host) is reported at its place; the
    lines around it are applied, and a --fullnat server whose service has
    no local address is refused as it would be alone."""
    text = ("-A -t 10.0.0.1:80 -s rr\n"
            "-P -t 10.0.0.1:80 -z 10.9.9.9\n"
            "-a -t 10.0.0.1:80 -r 172.80.0.2 --fullnat\n"
            "-P -t 10.0.0.1:80 -z 10.9.0.1 -F v0\n"
            "-a -t 10.0.0.1:80 -r 172.80.0.2 --fullnat\n")
    rc, out, err = adm("-R", stdin=text)
    assert (rc, out) == (0, "")
    assert err == NOT_ON_HOST + FNAT_NEEDS
    assert ok(adm, "-S", "-n") == ("-A -t 10.0.0.1:80 -s rr\n"
                                   "-P -t 10.0.0.1:80 -z 10.9.0.1 -F v0\n"
                                   "-a -t 10.0.0.1:80 -r 172.80.0.2:80 --fullnat -w 1\n")
