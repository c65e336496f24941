"""xdplbadm's full-NAT, hairpin and local-address commands without a state:
the command line (DPVS's -P/-Q/-G with -z and -F, --fullnat, --hairpin:
ipvsadm's option matrix and words for what goes wrong) and what listings,
-S and -G print, byte for byte. The commands against a real state are
tests/test_adm_fnat.py's (root tier)."""
import pytest

from xdplb import adm, hostaddr, ipvsopts
from xdplb import ipvsfmt as F
from xdplb.model import Destination, LocalAddress, Service, Stats, XdplbError
from xdplb.structs import (IP_VS_CONN_F_MASQ, IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_SCHED1,
                           IP_VS_SVC_F_SCHED2, XDPLB_CONN_F_FULLNAT, XDPLB_SVC_F_HAIRPIN)

from .test_adm_parser import PROG, no_state, xdplbadm  # noqa: F401 (a fixture)

VIP = "10.0.0.1:80"

# (args, exit code, stderr)
ERRORS = [
    (["-a", "-t", VIP, "-r", "10.1.0.9", "--fullnat", "-m"], 2,
     "multiple 'forwarding-method' options specified\n"),
    (["-a", "-t", VIP, "-r", "10.1.0.9", "-g", "--fullnat"], 2,
     "multiple 'forwarding-method' options specified\n"),
    (["-a", "-t", VIP, "-r", "10.1.0.9", "--fullnat=1"], 255,
     "--fullnat=1: option does not take an argument\n"),
    (["-a", "-t", VIP, "-r", "[2001:db8::2]:80", "--fullnat"], 2,
     "Different address family is allowed only for tunneling servers\n"),
    (["-a", "-t", VIP, "-r", "10.1.0.9", "--fullnat", "--tun-type", "gue"], 2,
     "Tunnel options conflict with forward method\n"),
    (["-A", "-t", VIP, "--fullnat"], 2,
     "Illegal 'forwarding-method' option with the 'add-service' command\n"),
    (["-a", "-t", VIP, "-r", "10.1.0.9", "--hairpin"], 2,
     "Illegal 'hairpin' option with the 'add-server' command\n"),
    (["-L", "--hairpin"], 2, "Illegal 'hairpin' option with the 'list' command\n"),
    (["-A", "-t", VIP, "--hairpin", "--hairpin"], 2, "multiple 'hairpin' options specified\n"),
    (["-A", "-t", VIP, "-z", "10.9.0.1"], 2,
     "Illegal 'local-address' option with the 'add-service' command\n"),
    (["-P", "-t", VIP], 2,
     "You need to supply the 'local-address' option for the 'add-laddr' command\n"),
    (["-P", "-z", "10.9.0.1"], 2,
     "You need to supply the 'service-address' option for the 'add-laddr' command\n"),
    (["-P", "-t", VIP, "-z", "10.9.0.1", "-s", "rr"], 2,
     "Illegal 'scheduler' option with the 'add-laddr' command\n"),
    (["-P", "-t", VIP, "-z", "nosuchhost"], 2, "illegal local address\n"),
    (["-P", "-t", VIP, "-z", "[2001:db8::1]"], 2, "illegal local address\n"),
    (["-P", "-t", VIP, "-z", "10.9.0.1", "-z", "10.9.0.2"], 2,
     "multiple 'local-address' options specified\n"),
    (["-P", "-t", VIP, "-z", "10.9.0.1", "-F"], 255, "-F: missing argument\n"),
    (["-P", "-t", VIP, "-z", "10.9.0.1", "-F", "a", "-F", "b"], 2,
     "multiple 'ifname' options specified\n"),
    (["-Q", "-t", VIP], 2,
     "You need to supply the 'local-address' option for the 'del-laddr' command\n"),
    (["-Q", "-t", VIP, "-z", "10.9.0.1", "-F", "eth0"], 2,
     "Illegal 'ifname' option with the 'del-laddr' command\n"),
    (["-G", "-n"], 2, "Illegal 'numeric' option with the 'get-laddr' command\n"),
    (["-G", "-t", VIP, "-z", "10.9.0.1"], 2,
     "Illegal 'local-address' option with the 'get-laddr' command\n"),
    (["-L", "-z", "10.9.0.1"], 2, "Illegal 'local-address' option with the 'list' command\n"),
    (["-S", "-F", "eth0"], 2, "Illegal 'ifname' option with the 'save' command\n"),
    (["-G", "-P"], 2, "invalid option `-P'\n"),
]


@pytest.mark.parametrize("args,code,err", ERRORS, ids=[" ".join(a) for a, _, _ in ERRORS])
def test_command_line_errors(no_state, capsys, args, code, err):  # noqa: F811
    assert xdplbadm(capsys, *args) == (code, "", err)


def checked(*args):
    return ipvsopts.checked([PROG, *args], PROG)


def test_parsed_fields():
    ce = checked("--add-laddr", "--tcp-service", VIP, "--laddr", "10.9.0.1", "--ifname", "eth0")
    assert (ce.cmd, ce.svc.addr, ce.svc.port, ce.laddr, ce.ifname) == (
        ipvsopts.CMD_ADDLADDR, "10.0.0.1", 80, "10.9.0.1", "eth0")
    ce = checked("-Pu[2001:db8::1]:53", "-z2001:db8:0:0::9")
    assert (ce.cmd, ce.svc.addr, ce.laddr, ce.ifname) == (
        ipvsopts.CMD_ADDLADDR, "2001:db8::1", "2001:db8::9", None)
    # as DPVS parses -z: an address[:port], the port ignored
    assert checked("-Q", "-t", VIP, "-z", "10.9.0.1:7").laddr == "10.9.0.1"
    assert checked("-G").cmd == ipvsopts.CMD_GETLADDR
    assert checked("--get-laddr", "-t", VIP).svc.port == 80
    ce = checked("-a", "-t", VIP, "-r", "10.1.0.9:8080", "--fullnat", "-w", "3")
    assert (ce.fwd, ce.dest.port, ce.weight) == (XDPLB_CONN_F_FULLNAT, 8080, 3)
    assert checked("-a", "-t", VIP, "-r", "10.1.0.9", "--fullnat").dest.port == 80
    ce = checked("-E", "-t", VIP, "-s", "mh", "--hairpin", "-b", "mh-fallback,mh-port")
    assert ce.flags == XDPLB_SVC_F_HAIRPIN | IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2
    assert not checked("-E", "-t", VIP, "-s", "rr").flags & XDPLB_SVC_F_HAIRPIN


def test_help_lists_xdplbs_own_options(no_state, capsys):  # noqa: F811
    code, out, _ = xdplbadm(capsys, "-h")
    own = out[out.index("xdplb's own"):]
    for opt in ("--add-laddr    -P", "--del-laddr    -Q", "--get-laddr    -G", "--laddr        -z",
                "--ifname       -F", "--fullnat ", "--hairpin "):
        assert opt in own, opt
    assert "[-g|-m|-i|--fullnat]" in out and "[--hairpin]" in out
    assert code == 0


class Host:
    """hostaddr as a host with these addresses and interfaces would answer."""

    def __init__(self, monkeypatch, addrs=(), links=None):
        monkeypatch.setattr(hostaddr, "on_host", lambda a: a in addrs)
        links = links or {}

        def ifindex(name):
            if name not in links:
                raise XdplbError(f"xdplb: no interface '{name}' on this host (-F)")
            return links[name]
        monkeypatch.setattr(hostaddr, "ifindex", ifindex)


def op_of(*args):
    return adm._op_or_refusal(checked(*args))


def test_local_address_refusals_before_any_state(monkeypatch):
    """Not on this host, or -F naming no interface: refused before the state
    is opened (so -R reports it at its line and changes nothing for it)."""
    Host(monkeypatch, addrs=("10.9.0.1",), links={"eth0": 4})
    e = op_of("-P", "-t", VIP, "-z", "10.9.0.2")
    assert isinstance(e, XdplbError) and e.code == 255
    assert e.message == ("xdplb: local address 10.9.0.2 is not an address of this host: add it "
                         "to an interface first (full-NAT's replies come back to it)")
    e = op_of("-P", "-t", VIP, "-z", "10.9.0.1", "-F", "eth1")
    assert (e.message, e.code) == ("xdplb: no interface 'eth1' on this host (-F)", 255)
    e = op_of("-P", "-f", "3", "-z", "10.9.0.1")
    assert e.message == "Service not defined"


# --- rendering ------------------------------------------------------------------

def table():
    """A hairpin full-NAT service with two local addresses, a plain one, an
    IPv6 one with one local address and no interface."""
    fnat = Service(6, "10.0.0.1", 80, sched="rr", flags=XDPLB_SVC_F_HAIRPIN,
                   stats=Stats(12, 34, 56, 7800, 9000), rate=Stats(1, 2, 3, 4, 5),
                   laddrs=[LocalAddress("10.9.0.2", 4, "eth0", conns=3),
                           LocalAddress("10.9.0.1", 5, "dummy0", conflicts=2)],
                   dests=[Destination("172.80.0.3", 8080, XDPLB_CONN_F_FULLNAT, 2, active=1,
                                      inactive=2, stats=Stats(5, 6, 7, 8, 9),
                                      rate=Stats(1, 1, 1, 1, 1)),
                          Destination("172.80.0.2", 80, IP_VS_CONN_F_MASQ, 1)])
    plain = Service(17, "10.0.0.1", 53, sched="wlc", flags=IP_VS_SVC_F_PERSISTENT, timeout=300)
    six = Service(6, "2001:db8::1", 443, sched="sh",
                  flags=XDPLB_SVC_F_HAIRPIN | IP_VS_SVC_F_SCHED1,
                  laddrs=[LocalAddress("2001:db8:9::1")],
                  dests=[Destination("2001:db8:8::2", 443, XDPLB_CONN_F_FULLNAT, 1)])
    return [plain, six, fnat]


def dl(addr, fwd, w, a=0, i=0):
    return "  -> %-28s %-7s %-6d %-10d %-10d\n" % (addr, fwd, w, a, i)


def test_listing_fullnat_and_hairpin():
    """FullNat fills the Forward column as Masq does (7 characters, ipvsadm's
    widths kept); hairpin follows every flag ipvsadm prints."""
    assert F.list_all(table(), F.FMT_NUMERIC) == (
        F.HEADER
        + "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.0.0.1:80 rr hairpin\n"
        + dl("172.80.0.2:80", "Masq", 1) + dl("172.80.0.3:8080", "FullNat", 2, 1, 2)
        + "UDP  10.0.0.1:53 wlc persistent 300\n"
        "TCP  [2001:db8::1]:443 sh (sh-fallback) hairpin\n"
        + dl("[2001:db8:8::2]:443", "FullNat", 1))
    assert F.list_all(table(), F.FMT_NUMERIC | F.FMT_TUN_INFO).splitlines()[5] == (
        "  -> 172.80.0.3:8080              FullNat n/a           2      1          2         ")


def test_counter_listings_unchanged_by_fullnat():
    """--stats, --rate, --exact, --thresholds: ipvsadm's columns, no flags."""
    stats = F.list_all(table(), F.FMT_NUMERIC | F.FMT_STATS | F.FMT_EXACT).splitlines()
    assert stats[3:6] == [
        "TCP  10.0.0.1:80                        12       34       56     7800     9000",
        "  -> 172.80.0.2:80                       0        0        0        0        0",
        "  -> 172.80.0.3:8080                     5        6        7        8        9"]
    rate = F.list_all(table(), F.FMT_NUMERIC | F.FMT_RATE).splitlines()
    assert rate[3] == "TCP  10.0.0.1:80                         1        2        3        4        5"
    assert rate[5] == "  -> 172.80.0.3:8080                     1        1        1        1        1"
    thr = F.list_all(table(), F.FMT_NUMERIC | F.FMT_THRESHOLDS).splitlines()
    assert thr[3:4] == ["TCP  10.0.0.1:80 rr hairpin"]


def test_save_lines():
    """-S: --hairpin after ipvsadm's options, the local addresses right after
    their service's -A line (before its servers: a --fullnat server needs
    one), -F by name when there is one, --fullnat as the method's switch."""
    assert F.list_all(table(), F.FMT_RULE | F.FMT_NUMERIC) == (
        "-A -t 10.0.0.1:80 -s rr --hairpin\n"
        "-P -t 10.0.0.1:80 -z 10.9.0.2 -F eth0\n"
        "-P -t 10.0.0.1:80 -z 10.9.0.1 -F dummy0\n"
        "-a -t 10.0.0.1:80 -r 172.80.0.2:80 -m -w 1\n"
        "-a -t 10.0.0.1:80 -r 172.80.0.3:8080 --fullnat -w 2\n"
        "-A -u 10.0.0.1:53 -s wlc -p 300\n"
        "-A -t [2001:db8::1]:443 -s sh -b sh-fallback --hairpin\n"
        "-P -t [2001:db8::1]:443 -z 2001:db8:9::1\n"
        "-a -t [2001:db8::1]:443 -r [2001:db8:8::2]:443 --fullnat -w 1\n")


def test_save_lines_parse_back():
    """Every line -S writes is a command line the parser takes, to the same thing."""
    for line in F.list_all(table(), F.FMT_RULE | F.FMT_NUMERIC).splitlines():
        ce = checked(*line.split())
        if line.startswith("-P"):
            assert ce.cmd == ipvsopts.CMD_ADDLADDR and ce.laddr in line
        if "--hairpin" in line:
            assert ce.flags & XDPLB_SVC_F_HAIRPIN
        if "--fullnat" in line:
            assert ce.fwd == XDPLB_CONN_F_FULLNAT


def test_get_laddr_listing():
    """-G: DPVS's format (title before the first service, the service line with
    its count and a trailing blank, one line per address) and the IFNAME
    column after DPVS's; services sorted as -L sorts them."""
    assert F.laddr_listing(table()) == (
        "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS      IFNAME\n"
        "10.0.0.1:80          2        \n"
        "                              10.9.0.2             0          3          eth0\n"
        "                              10.9.0.1             2          0          dummy0\n"
        "10.0.0.1:53          0        \n"
        "[2001:db8::1]:443    1        \n"
        "                              2001:db8:9::1        0          0         \n")
    assert F.laddr_listing([]) == ""


def test_gone_interface_shows_its_index():
    assert hostaddr.ifname(0, {}) == ""
    assert hostaddr.ifname(4, {4: "eth0"}) == "eth0"
    assert hostaddr.ifname(9, {4: "eth0"}) == "?9"


def test_without_a_state(monkeypatch, capsys):
    """No state in this netns: -G lists nothing, -G -t has no such service,
    -P and -Q find no service (an empty table's answers), nothing created."""
    monkeypatch.setattr(adm.Ctx, "control", lambda self, create=False: None)
    Host(monkeypatch, addrs=("10.9.0.1",))
    assert xdplbadm(capsys, "-G") == (0, "", "")
    assert xdplbadm(capsys, "-G", "-t", VIP) == (1, "", "No such service\n")
    assert xdplbadm(capsys, "-P", "-t", VIP, "-z", "10.9.0.1") == (255, "", "Service not defined\n")
    assert xdplbadm(capsys, "-Q", "-t", VIP, "-z", "10.9.0.1") == (255, "", "Service not defined\n")
