"""xdplbadm's full-NAT, hairpin and local-address commands as a subprocess
against a private pinned state (tests/test_adm.py's stub state: the real
maps), run inside a private netns whose interfaces hold the local
addresses (a local address must be one of the host's): -P/-Q/-G, --fullnat,
--hairpin, their listings, -S/-R round trips, and every refusal changing
nothing (-S and every map compared before and after)."""
import os

import pytest

from xdplb import topology
from xdplb.netns import NetNs

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
    ok(adm, "-A", "-t", VIP6, "-s", "wlc")
    ok(adm, "-P", "-t", VIP6, "-z", "2001:db8:9::1", "-F", "v0")
    ok(adm, "-a", "-t", VIP6, "-r", "[2001:db8:80::2]:443", "--fullnat")
    ok(adm, "-A", "-u", "10.0.0.1:53", "-s", "rr")


SAVED = ("-A -t 10.0.0.1:80 -s rr --hairpin\n"
         "-P -t 10.0.0.1:80 -z 10.9.0.2 -F v0\n"
         "-P -t 10.0.0.1:80 -z 10.9.2.1\n"
         "-a -t 10.0.0.1:80 -r 172.80.0.2:8080 --fullnat -w 2\n"
         "-a -t 10.0.0.1:80 -r 172.80.0.3:80 -m -w 1\n"
         "-A -u 10.0.0.1:53 -s rr\n"
         "-A -t [2001:db8::1]:443 -s wlc\n"
         "-P -t [2001:db8::1]:443 -z 2001:db8:9::1 -F v0\n"
         "-a -t [2001:db8::1]:443 -r [2001:db8:80::2]:443 --fullnat -w 1\n")
LISTING = (HEAD + "TCP  10.0.0.1:80 rr hairpin\n"
           + dline("172.80.0.2:8080", "FullNat", 2) + dline("172.80.0.3:80", "Masq", 1)
           + "UDP  10.0.0.1:53 rr\n"
           + "TCP  [2001:db8::1]:443 wlc\n" + dline("[2001:db8:80::2]:443", "FullNat", 1))
GET = (GTITLE + "10.0.0.1:80          2        \n"
       + gline("10.9.0.2", ifname="v0") + gline("10.9.2.1")
       + "10.0.0.1:53          0        \n"
       + "[2001:db8::1]:443    1        \n" + gline("2001:db8:9::1", ifname="v0"))


def test_listing_save_and_restore(adm):
    populate(adm)
    assert ok(adm, "-Ln") == LISTING
    assert ok(adm, "-S", "-n") == SAVED
    assert ok(adm, "-G") == GET
    assert ok(adm, "-G", "-t", VIP6) == (GTITLE + "[2001:db8::1]:443    1        \n"
                                         + gline("2001:db8:9::1", ifname="v0"))
    stats = ok(adm, "-Ln", "--stats").splitlines()
    assert stats[3] == "TCP  10.0.0.1:80                         0        0        0        0        0"
    assert ok(adm, "-L", "-n", "-t", VIP) == HEAD.split("\n", 1)[1] + LISTING.splitlines(
        True)[3] + dline("172.80.0.2:8080", "FullNat", 2) + dline("172.80.0.3:80", "Masq", 1)
    ok(adm, "-C")
    assert ok(adm, "-G") == ""
    assert adm("-R", stdin=SAVED) == (0, "", "")
    assert (ok(adm, "-S", "-n"), ok(adm, "-Ln"), ok(adm, "-G")) == (SAVED, LISTING, GET)
    # -G as a line of -R, where the lines before it left the table
    ok(adm, "-C")
    assert adm("-R", stdin=SAVED.split("-a")[0] + "-G -t 10.0.0.1:80\n") == (
        0, GTITLE + "10.0.0.1:80          2        \n" + gline("10.9.0.2", ifname="v0")
        + gline("10.9.2.1"), "")


def test_delete_local_addresses(adm):
    populate(adm)
    ok(adm, "-Q", "-t", VIP, "-z", "10.9.0.2")
    assert ok(adm, "-G", "-t", VIP) == GTITLE + "10.0.0.1:80          1        \n" + gline("10.9.2.1")
    # with no full-NAT server left, the last local address may go
    ok(adm, "-d", "-t", VIP, "-r", "172.80.0.2:8080")
    ok(adm, "--del-laddr", "-t", VIP, "-z", "10.9.2.1")
    assert ok(adm, "-G", "-t", VIP) == GTITLE + "10.0.0.1:80          0        \n"
    # -E keeps them; -D takes them with the service
    ok(adm, "-E", "-t", VIP6, "-s", "rr")
    assert ok(adm, "-G", "-t", VIP6).endswith(gline("2001:db8:9::1", ifname="v0"))
    ok(adm, "-D", "-t", VIP6)
    ok(adm, "-A", "-t", VIP6, "-s", "rr")
    assert ok(adm, "-G", "-t", VIP6) == GTITLE + "[2001:db8::1]:443    0        \n"


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


def refusals():
    """(args, exit code, stderr or None for "a message") refused with -S as
    populate() left it."""
    return [
        (["-P", "-t", VIP, "-z", "10.9.9.9"], 255,
         "xdplb: local address 10.9.9.9 is not an address of this host: add it to an "
         "interface first (full-NAT's replies come back to it)\n"),
        (["-P", "-t", VIP, "-z", "10.9.0.1", "-F", "nosuch0"], 255,
         "xdplb: no interface 'nosuch0' on this host (-F)\n"),
        (["-P", "-t", "10.0.0.9:80", "-z", "10.9.0.1"], 255, "Service not defined\n"),
        (["-Q", "-t", "10.0.0.9:80", "-z", "10.9.0.1"], 255, "Service not defined\n"),
        (["-G", "-t", "10.0.0.9:80"], 1, "No such service\n"),
        (["-P", "-t", VIP, "-z", "10.9.0.2"], 255, None),                  # duplicate
        (["-Q", "-t", VIP, "-z", "10.9.0.1"], 255, None),                  # not there
        (["-P", "-t", VIP, "-z", "2001:db8:9::1"], 255, None),             # wrong family
        (["-P", "-t", VIP6, "-z", "10.9.0.1"], 255, None),                 # wrong family
        (["-Q", "-t", VIP6, "-z", "2001:db8:9::1"], 255, None),            # the last, in use
        (["-a", "-u", "10.0.0.1:53", "-r", "172.80.0.8", "--fullnat"], 255, FNAT_NEEDS),
        (["-e", "-u", "10.0.0.1:53", "-r", "172.80.0.9", "--fullnat"], 255, FNAT_NEEDS),
    ]


def test_refusals_change_nothing(adm):
    populate(adm)
    ok(adm, "-a", "-u", "10.0.0.1:53", "-r", "172.80.0.9", "-m")
    saved, before = ok(adm, "-S", "-n"), snapshot()
    for args, code, err in refusals():
        rc, out, e = adm(*args)
        assert (rc, out) == (code, ""), (args, rc, e)
        assert e == err if err else e.strip(), (args, e)
        assert ok(adm, "-S", "-n") == saved and snapshot() == before, args


def test_too_many_local_addresses(adm):
    ok(adm, "-A", "-u", "10.0.0.1:53", "-s", "rr")
    for a in MANY[:16]:
        ok(adm, "-P", "-u", "10.0.0.1:53", "-z", a, "-F", "v1")
    saved, before = ok(adm, "-S", "-n"), snapshot()
    rc, out, err = adm("-P", "-u", "10.0.0.1:53", "-z", MANY[16])
    assert rc == 255 and out == "" and err.strip()
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
    assert err == ("xdplb: local address 10.9.9.9 is not an address of this host: add it to an "
                   "interface first (full-NAT's replies come back to it)\n" + FNAT_NEEDS)
    assert ok(adm, "-S", "-n") == ("-A -t 10.0.0.1:80 -s rr\n"
                                   "-P -t 10.0.0.1:80 -z 10.9.0.1 -F v0\n"
                                   "-a -t 10.0.0.1:80 -r 172.80.0.2:80 --fullnat -w 1\n")
