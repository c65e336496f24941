"""End to end: a private namespace lab, real HTTP/UDP through xdplb on the lb.

client 10.0.0.2 -> VIP 1.2.3.4 (xdplb, XDP native on the lb's veths) -> rs1..rs3
172.80.0.2..4 ("This is service #1..#3"). Services are configured with the
real `xdplbadm` inside the lb netns; counters are checked against what the
backends' own nftables counters saw (no XDP involved there).
"""
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import xdplb_argv

VIP = "1.2.3.4"
SVC = f"{VIP}:80"
RS = {1: "172.80.0.2", 2: "172.80.0.3", 3: "172.80.0.4"}

pytestmark = pytest.mark.skipif(importlib.util.find_spec("xdplb.adm") is None,
                                reason="xdplbadm (xdplb/adm.py) is not there yet")


@pytest.fixture
def lab(xlab_lab):
    """The module's lab with an empty service table."""
    xlab_lab.adm("-C")
    return xlab_lab


def answers(lab, n):
    """n HTTP GETs from the client through the VIP: the service numbers."""
    out = []
    for _ in range(n):
        body = lab.curl()
        m = re.fullmatch(r"This is service #(\d)\n", body)
        out.append(int(m.group(1)) if m else body)
    return out


def add_rr_service(lab, proto="-t", sched="rr", fwd="-m", backends=(1, 2, 3)):
    lab.adm("-A", proto, SVC, "-s", sched)
    for n in backends:
        lab.adm("-a", proto, SVC, "-r", f"{RS[n]}:80", fwd)


def test_rr_then_wrr_like_the_seed(lab):
    add_rr_service(lab)
    assert answers(lab, 6) == [3, 2, 1, 3, 2, 1]
    lab.adm("-e", "-t", SVC, "-r", f"{RS[1]}:80", "-m", "-w", "3")
    lab.adm("-E", "-t", SVC, "-s", "wrr")
    listing = lab.adm("-L", "-n").stdout
    assert re.search(rf"^TCP  {re.escape(SVC)} wrr\s*$", listing, re.M), listing
    assert re.search(r"^  -> 172\.80\.0\.2:80\s+Masq\s+3\s", listing, re.M), listing
    assert answers(lab, 6) == [1, 1, 3, 2, 1, 1]


def test_masq_replies_are_un_nated(lab):
    add_rr_service(lab, backends=(2,))
    p = lab.run("client", ["curl", "-s", "-i", "-m", "5", "-H", "X-Want-Addr: 1", "-w",
                           "\nPEER %{remote_ip} %{remote_port} LOCAL %{local_ip}\n",
                           f"http://{VIP}/"], check=False)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "This is service #2" in out
    # the client's socket talked to the VIP only ...
    assert f"PEER {VIP} 80 LOCAL 10.0.0.2" in out
    # ... while the backend's socket saw its own address and the real client (Masq = DNAT)
    assert re.search(r"^X-Server-Addr: 172\.80\.0\.3:80\r?$", out, re.M), out
    assert re.search(r"^X-Client-Addr: 10\.0\.0\.2:\d+\r?$", out, re.M), out


CLIENT_UDP = r"""
import socket, sys
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    for j in range(2):  # two datagrams of one flow go to the same backend
        s.sendto(b"ping%d.%d" % (i, j), (sys.argv[1], 80))
        try:
            data, peer = s.recvfrom(2048)
            print(data.decode(), "%s:%d" % peer)
        except socket.timeout:
            print("timeout")
    s.close()
"""


def test_udp_through_masq(lab):
    add_rr_service(lab, proto="-u")
    p = lab.run("client", [sys.executable, "-c", CLIENT_UDP, VIP], check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        f"service #3: ping0.0 {VIP}:80", f"service #3: ping0.1 {VIP}:80",
        f"service #2: ping1.0 {VIP}:80", f"service #2: ping1.1 {VIP}:80",
        f"service #1: ping2.0 {VIP}:80", f"service #1: ping2.1 {VIP}:80"]
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    assert stats[("UDP", SVC)][:3] == [3, 6, 6]


@contextlib.contextmanager
def vip_on_lo(lab, node):
    """node answers for the VIP under direct routing: the VIP on lo, not
    ARPed for (arp_ignore/arp_announce); undone on exit."""
    rs = lab.node(node)
    arp = {f"net.ipv4.conf.{dev}.{key}": value for dev in ("all", "eth0")
           for key, value in (("arp_ignore", 1), ("arp_announce", 2))}
    for key, value in arp.items():
        rs.sysctl(key, value)
    rs.addr("add", "lo", f"{VIP}/32")
    try:
        yield
    finally:
        rs.addr("del", "lo", f"{VIP}/32")
        for key in arp:
            rs.sysctl(key, 0)


def test_direct_routing(lab):
    """-g: rs1 owns the VIP on lo (arp_ignore/arp_announce) and answers the client
    itself, from the VIP; the lb only changed the destination MAC."""
    with vip_on_lo(lab, "rs1"):
        add_rr_service(lab, fwd="-g", backends=(1,))
        listing = lab.adm("-L", "-n").stdout
        assert re.search(r"^  -> 172\.80\.0\.2:80\s+Route\s+1\s", listing, re.M), listing
        for _ in range(3):
            p = lab.run("client", ["curl", "-s", "-i", "-m", "5", "-H", "X-Want-Addr: 1", "-w",
                                   "\nPEER %{remote_ip} %{remote_port}\n", f"http://{VIP}/"],
                        check=False)
            assert p.returncode == 0, p.stderr
            assert "This is service #1" in p.stdout
            assert f"PEER {VIP} 80" in p.stdout
            # no DNAT: the backend's socket was bound to the VIP itself
            assert re.search(rf"^X-Server-Addr: {re.escape(VIP)}:80\r?$", p.stdout, re.M), p.stdout
            assert re.search(r"^X-Client-Addr: 10\.0\.0\.2:\d+\r?$", p.stdout, re.M), p.stdout
        stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
        assert stats[("TCP", SVC)][0] == 3
        assert stats[("->", f"{RS[1]}:80")][0] == 3


# -- counters against an XDP-less count on the backends ------------------------

NFT_TABLE = "xdplb_e2e"


def nft_start(lab, node):
    """(Re)create a table counting the backend's HTTP packets in and out (L3 bytes)."""
    lab.run(node, ["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    lab.run(node, ["nft", "-f", "-"], input=f"""
table inet {NFT_TABLE} {{
    chain in {{ type filter hook input priority -300; policy accept;
        meta l4proto tcp th dport 80 counter; }}
    chain out {{ type filter hook output priority -300; policy accept;
        meta l4proto tcp th sport 80 counter; }}
}}
""")


def nft_read(lab, node):
    """{'in': (packets, bytes), 'out': (packets, bytes)}; the table is removed."""
    data = json.loads(lab.run(node, ["nft", "-j", "list", "table", "inet", NFT_TABLE]).stdout)
    lab.run(node, ["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    out = {}
    for item in data["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    out[rule["chain"]] = (expr["counter"]["packets"], expr["counter"]["bytes"])
    return out


def parse_stats(text):
    """`-L -n --stats --exact` -> {(proto, vip:port) | ('->', rip:port): [5 numbers]}."""
    stats = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 7 and f[0] in ("TCP", "UDP"):
            stats[(f[0], f[1])] = [int(x) for x in f[2:]]
        elif len(f) == 7 and f[0] == "->":
            stats[("->", f[1])] = [int(x) for x in f[2:]]
    return stats


def test_counters_match_what_the_backends_saw(lab):
    add_rr_service(lab)
    nodes = {n: f"rs{n}" for n in RS}
    for node in nodes.values():
        nft_start(lab, node)
    try:
        requests = 9
        assert answers(lab, requests) == [3, 2, 1] * 3
        time.sleep(1.0)  # let the last FIN/ACKs pass
    finally:
        seen = {n: nft_read(lab, node) for n, node in nodes.items()}
    text = lab.adm("-L", "-n", "--stats", "--exact").stdout
    stats = parse_stats(text)
    svc = stats[("TCP", SVC)]
    assert svc[0] == requests, text
    tot = [0, 0, 0, 0]
    for n, addr in RS.items():
        conns, inpkts, outpkts, inbytes, outbytes = stats[("->", f"{addr}:80")]
        (pin, bin_), (pout, bout) = seen[n]["in"], seen[n]["out"]
        assert conns == requests // 3, text
        assert (inpkts, outpkts) == (pin, pout), (n, text, seen[n])
        assert (inbytes, outbytes) == (bin_, bout), (n, text, seen[n])
        tot = [a + b for a, b in zip(tot, (pin, pout, bin_, bout))]
    assert svc[1:] == tot, (text, seen)
    assert tot[0] >= 5 * requests  # a real TCP exchange per request, at least


# -- the demo through the CLI ---------------------------------------------------

# Seed 000 step by step: (INFO line, the six answers that follow it: the service
# number or "" for a blank line, None when no traffic follows), then the
# connection counts of the next stats table: the service's, then .2, .3, .4's.
HOST = "Generating HTTP traffic (Host to IPVS Service)"
PODS = "Generating HTTP traffic (Pod to IPVS Service)"
SEED_STEPS = [
    ("Using Round Robin scheduling algorithm", None),
    (HOST, list("321321")),
    ("Increase pod1 weight", None),
    ("Using Weighted Round Robin scheduling algorithm", None),
    (HOST, list("113211")),
    ("Validating communication between Pod and ClusterIP", None),
    (PODS, [""] * 6),
    ("Creating IPVS dummy interface", None),
    (PODS, ["3", "2", "", "3", "2", ""]),
    ("Enabling Hairpin connections", None),
    (PODS, list("321321")),
]
SEED_CONNS = [(6, 2, 2, 2), (12, 6, 3, 3), (12, 6, 3, 3), (18, 8, 5, 5), (24, 10, 7, 7)]
INFO = re.compile(r"^\d\d:\d\d:\d\d - INFO: (.*)$")


def demo_steps(out):
    """[(INFO text, [the lines up to the next INFO line])] of the demo's stdout."""
    steps = []
    for line in out.splitlines():
        m = INFO.match(line)
        if m:
            steps.append((m.group(1), []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def demo_conns(out):
    """The Conns column of every --stats table: [(service, .2, .3, .4)]."""
    tables = out.split("IP Virtual Server version 1.2.1 (size=4096)\n")[1:]
    conns = []
    for t in tables:
        if "Conns" not in t.splitlines()[0]:
            continue
        rows = dict(re.findall(r"^(?:TCP|  ->) +(\S+) +(\d+) ", t, re.M))
        conns.append((int(rows[SVC]), *(int(rows[f"{RS[n]}:80"]) for n in (1, 2, 3))))
    return conns


def test_lab_demo(xlab_prefix):
    env = dict(os.environ, XDPLB_LAB_PREFIX=xlab_prefix)
    try:
        p = subprocess.run(xdplb_argv("lab", "demo"), capture_output=True, text=True,
                           env=env, timeout=300)
        steps = demo_steps(p.stdout)
        assert [s[0] for s in steps] == [s[0] for s in SEED_STEPS], p.stdout + p.stderr
        for (info, lines), (_, want) in zip(steps, SEED_STEPS):
            if want is None:
                continue
            got = [re.fullmatch(r"(?:This is service #(\d))?", line) for line in lines[:6]]
            assert all(got), (info, lines, p.stdout)
            assert [m.group(1) or "" for m in got] == want, (info, p.stdout)
        assert p.returncode == 0, p.stdout + p.stderr
        assert demo_conns(p.stdout) == SEED_CONNS, p.stdout
        # the lab's equivalents say what they did: xdplb on the clients' side only,
        # then on the pods' side too
        assert "detached from the pods' (veth-rs1 veth-rs2 veth-rs3)" in p.stdout
        assert "attached to the pods' side too (veth-rs1 veth-rs2 veth-rs3)" in p.stdout
        assert re.search(r"^TCP  1\.2\.3\.4:80 wrr$", p.stdout, re.M), p.stdout
        # it was not up before: the demo took it down again
        assert not any(os.path.exists(f"/run/netns/{xlab_prefix}-{n}")
                       for n in ("client", "lb", "rs1", "rs2", "rs3"))
    finally:
        subprocess.run(xdplb_argv("lab", "down"), capture_output=True, env=env)
