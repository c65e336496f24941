"""End to end: the two-armed lab (`xdplb lab up --two-arm`), full-NAT through it.

client 10.0.0.2 -> lb veth-client | lb veth-rs 172.80.0.1/24 + local address
172.80.0.10 -> bridge -> rs1..rs3 172.80.0.2..4, which have no route to the
client: only full-NAT (source = the local address) gets their answers back.
One lab for the module, built and removed through the CLI.
"""
import os
import re
import socket
import subprocess
import sys
import uuid

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from conftest import _need_root_and_bpffs, xdplb_argv

VIP = "1.2.3.4"
SVC = f"{VIP}:80"
LADDR = "172.80.0.10"
RS = {1: "172.80.0.2", 2: "172.80.0.3", 3: "172.80.0.4"}
NODES = ("client", "lb", "rs1", "rs2", "rs3", "sw")


@pytest.fixture(scope="module")
def two_arm():
    _need_root_and_bpffs()
    from xdplb.lab import Lab
    prefix = f"xa{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, XDPLB_LAB_PREFIX=prefix)
    try:
        p = subprocess.run(xdplb_argv("lab", "up", "--two-arm"), capture_output=True, text=True,
                           env=env, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        yield Lab(prefix, say=lambda msg: None), p.stdout
    finally:
        p = subprocess.run(xdplb_argv("lab", "down"), capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert not [n for n in NODES if os.path.exists(f"/run/netns/{prefix}-{n}")]


def test_two_arms_and_no_route_to_the_client(two_arm):
    lab, out = two_arm
    assert lab.is_up() and lab.two_arm
    assert lab.attached() == ["veth-client", "veth-rs"]
    assert "attached xdplb" in out and "veth-rs in native mode" in out
    for n in (1, 2, 3):
        ipr = lab.node(f"rs{n}").ipr
        routes = [(r.get_attr("RTA_DST"), r["dst_len"])
                  for r in ipr.get_routes(family=socket.AF_INET, table=254)]
        assert routes == [("172.80.0.0", 24)], routes   # their segment only
        with pytest.raises(NetlinkError):               # no route to the client
            ipr.route("get", dst="10.0.0.2")
    listing = lab.adm("-L", "-n").stdout
    for n in (1, 2, 3):
        assert re.search(rf"^  -> {re.escape(RS[n])}:80\s+FullNat\s+1\s", listing, re.M), listing


def test_http_by_full_nat_answered_by_each_backend(two_arm):
    lab, _ = two_arm
    seen = []
    for _ in range(6):
        p = lab.run("client", ["curl", "-s", "-i", "-m", "5", "-H", "X-Want-Addr: 1", "-w",
                               "\nPEER %{remote_ip} %{remote_port}\n", f"http://{VIP}/"],
                    check=False)
        assert p.returncode == 0, p.stderr
        m = re.search(r"This is service #(\d)", p.stdout)
        assert m, p.stdout
        seen.append(int(m.group(1)))
        assert f"PEER {VIP} 80" in p.stdout          # the client talked to the VIP only
        # the backend saw the lb's local address, not the client
        assert re.search(rf"^X-Client-Addr: {re.escape(LADDR)}:\d+\r?$", p.stdout, re.M), p.stdout
        assert re.search(r"^X-Server-Addr: 172\.80\.0\.[234]:80\r?$", p.stdout, re.M), p.stdout
    assert sorted(seen) == [1, 1, 2, 2, 3, 3], seen
    assert seen[:3] == seen[3:], seen                # rr: the same cycle twice


UDP_CLIENT = r"""
import socket, sys
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"ping%d" % i, (sys.argv[1], 80))
    try:
        data, peer = s.recvfrom(2048)
        print(data.decode(), "%s:%d" % peer)
    except socket.timeout:
        print("timeout")
    s.close()
"""


def test_udp_by_full_nat(two_arm):
    lab, _ = two_arm
    p = lab.run("client", [sys.executable, "-c", UDP_CLIENT, VIP], check=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and all(line.endswith(f" {VIP}:80") for line in lines), p.stdout
    assert sorted(line.split(":")[0] for line in lines) == [
        "service #1", "service #2", "service #3"], p.stdout


def test_masq_gets_no_answer_here(two_arm):
    """The point of full-NAT: the same backend by Masq cannot answer (its reply
    to the client has no route)."""
    lab, _ = two_arm
    lab.adm("-A", "-t", f"{VIP}:81", "-s", "rr")
    try:
        lab.adm("-a", "-t", f"{VIP}:81", "-r", f"{RS[1]}:80", "-m")
        assert lab.curl(f"http://{VIP}:81/", timeout=2) == ""
        assert lab.curl(f"http://{VIP}/", timeout=5).startswith("This is service #")
    finally:
        lab.adm("-D", "-t", f"{VIP}:81")


def test_up_and_demo_say_which_lab_is_up(two_arm):
    lab, _ = two_arm
    env = dict(os.environ, XDPLB_LAB_PREFIX=lab.prefix)

    def xdplb(*args):
        return subprocess.run(xdplb_argv(*args), capture_output=True, text=True, env=env,
                              timeout=120)
    p = xdplb("lab", "up")
    assert p.returncode != 0 and "up as the two-armed lab" in p.stderr, p.stdout + p.stderr
    p = xdplb("lab", "up", "--two-arm")
    assert p.returncode == 0 and p.stdout.strip().endswith("is already up"), p.stdout + p.stderr
    p = xdplb("lab", "demo")
    assert p.returncode == 1 and "the two-armed one" in p.stderr, p.stdout + p.stderr
    assert lab.is_up() and lab.attached() == ["veth-client", "veth-rs"]
