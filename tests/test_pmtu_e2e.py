"""Path MTU end to end, through namespaces and real TCP (xdplb/topology.py).

    client 10.0.1.2 -- (r0) router (r1) -- (l0) lb: xdplb (l1) -- rs 172.80.0.2
                10.0.1.0/24          10.0.0.0/24           172.80.0.1/32

The client and the real server keep 1500-byte MTUs, so each advertises an MSS
of 1460 and nothing clamps the segments: only path MTU discovery can shrink
them, and it works only if the ICMP "fragmentation needed" reaches the sender.
- Download: the router's link towards the client has a 1280-byte MTU. The
  router answers the real server's 1500-byte segments (un-NATed to VIP ->
  client by xdplb) with fragmentation needed to the VIP; xdplb translates it
  for the real server (ip_vs_in_icmp), which shrinks its segments.
- Upload: the balancer's link towards the real server has a 1280-byte MTU;
  xdplb answers the client's 1500-byte segments with fragmentation needed from
  the VIP, and the client shrinks its segments.
Without either, the transfer stalls and the test fails on its timeout.
The network is dual-stack (fd00:1::/64, fd00:2::/64, fd00:80::2): both
transfers run over IPv6 too, with ICMPv6 "packet too big".
"""
import contextlib
import os
import signal
import subprocess
import sys
import uuid

import pytest

from xdplb import lab
from xdplb import topology as T

VIP, PORT, RS = "10.9.9.9", 80, "172.80.0.2"
VIP6, RS6 = "fd00:9::9", "fd00:80::2"
SIZE = 100_000
SMALL_MTU = 1280

TOPOLOGY = T.Topology(
    nodes=("client", "router", "lb", "rs"),
    veths=(T.Veth(T.End("client", "eth0", addrs=("10.0.1.2/24", "fd00:1::2/64")),
                  T.End("router", "r0", addrs=("10.0.1.1/24", "fd00:1::1/64"))),
           T.Veth(T.End("router", "r1", addrs=("10.0.0.2/24", "fd00:2::2/64"), faces_xdp=True),
                  T.End("lb", "l0", addrs=("10.0.0.1/24", "fd00:2::1/64"))),
           T.Veth(T.End("lb", "l1", addrs=("172.80.0.1/32", "fd00:80::1/128")),
                  T.End("rs", "eth0", addrs=(f"{RS}/24", f"{RS6}/64"), faces_xdp=True))),
    routes=(T.Route("client", "default", via="10.0.1.1"),
            T.Route("client", "default", via="fd00:1::1"),
            T.Route("router", f"{VIP}/32", via="10.0.0.1"),
            T.Route("router", f"{VIP6}/128", via="fd00:2::1"),
            T.Route("lb", "10.0.1.0/24", via="10.0.0.2"),
            T.Route("lb", "fd00:1::/64", via="fd00:2::2"),
            T.Route("lb", f"{RS}/32", dev="l1"),
            T.Route("lb", f"{RS6}/128", dev="l1"),
            T.Route("rs", "default", via="172.80.0.1", dev="eth0", onlink=True),
            T.Route("rs", "default", via="fd00:80::1", dev="eth0", onlink=True)),
    sysctls=(T.Sysctl("router", "net.ipv4.ip_forward", 1),
             T.Sysctl("lb", "net.ipv4.ip_forward", 1),
             T.Sysctl("router", "net.ipv6.conf.all.forwarding", 1),
             T.Sysctl("lb", "net.ipv6.conf.all.forwarding", 1),
             *(T.Sysctl("lb", f"net.ipv4.conf.{dev}.rp_filter", 0)
               for dev in ("all", "default", "l0", "l1"))))

# The real server: a GET gets SIZE bytes; "PUT n" is answered "got n" once n bytes came.
SERVER = r"""
import socket, sys, threading
def serve(c):
    with c:
        f = c.makefile("rb")
        line = f.readline().split()
        if line[0] == b"GET":
            c.sendall(b"x" * int(sys.argv[1]))
        else:
            want, got = int(line[1]), 0
            while got < want:
                chunk = f.read1(65536)
                if not chunk:
                    break
                got += len(chunk)
            c.sendall(b"got %d\n" % got)
s = socket.socket(socket.AF_INET6)      # dual stack: IPv4 clients too
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 80))
s.listen(8)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], 80), timeout=float(sys.argv[3]))
n = int(sys.argv[2])
if sys.argv[4] == "get":
    c.sendall(b"GET\n")
    got = 0
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    print(got)
else:
    c.sendall(b"PUT %d\n" % n + b"u" * n)
    print(c.makefile().readline().strip())
"""


def _xdplb(ns, *args):
    return ns.run([*lab.tool("xdplb"), *args], env=lab.child_env(), timeout=180)


@pytest.fixture(scope="module")
def pmtu_net():
    if os.geteuid() != 0:
        pytest.skip("needs root (netns, XDP, bpffs)")
    net = T.build(TOPOLOGY, f"xtp{uuid.uuid4().hex[:6]}")
    server = None
    lb = net.ns["lb"]
    try:
        lb.addr("add", "lo", f"{VIP}/32")   # the VIP is local, as on an IPVS director
        lb.addr("add", "lo", f"{VIP6}/128")
        _xdplb(lb, "attach", "--mode", "native", "l0", "l1")
        adm = [*lab.tool("xdplbadm")]
        for vip, rs in ((VIP, RS), (f"[{VIP6}]", f"[{RS6}]")):
            lb.run([*adm, "-A", "-t", f"{vip}:{PORT}", "-s", "rr"], env=lab.child_env())
            lb.run([*adm, "-a", "-t", f"{vip}:{PORT}", "-r", f"{rs}:{PORT}", "-m"],
                   env=lab.child_env())
        server = subprocess.Popen(net.ns["rs"].cmd([sys.executable, "-c", SERVER, str(SIZE)]),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        yield net
    finally:
        if server is not None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        _xdplb(lb, "detach")
        net.close()


def counters(net):
    out = _xdplb(net.ns["lb"], "status").stdout
    pairs = (line.split() for line in out.split("counters:", 1)[1].splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


@contextlib.contextmanager
def small_mtu(ns, dev):
    """dev's MTU at SMALL_MTU for the block."""
    ns.set_mtu(dev, SMALL_MTU)
    try:
        yield
    finally:
        ns.set_mtu(dev, 1500)


def _transfer(net, kind, timeout=30, vip=VIP):
    """A SIZE-byte download ("get") or upload ("put") from the client, every
    node having forgotten the path MTUs it learnt; (its output, error tail)."""
    for node in ("client", "rs", "lb", "router"):
        net.ns[node].run(["ip", "route", "flush", "cache"])
        net.ns[node].run(["ip", "-6", "route", "flush", "cache"])
    r = net.ns["client"].run([sys.executable, "-c", CLIENT, vip, str(SIZE), str(timeout), kind],
                             check=False, timeout=timeout + 10)
    return r.stdout.strip(), r.stderr.strip()[-300:]


@pytest.mark.parametrize("vip", [VIP, VIP6], ids=["ipv4", "ipv6"])
def test_download_through_a_smaller_mtu_towards_the_client(pmtu_net, vip):
    """IPv6: the router's "packet too big" to the VIP, translated by xdplb
    (icmp_error.h), makes the real server shrink."""
    before = counters(pmtu_net)
    with small_mtu(pmtu_net.ns["router"], "r0"):
        out, err = _transfer(pmtu_net, "get", vip=vip)
    assert out == str(SIZE), err
    after = counters(pmtu_net)
    assert after["icmp_xlate"] > before["icmp_xlate"]


@pytest.mark.parametrize("vip", [VIP, VIP6], ids=["ipv4", "ipv6"])
def test_upload_over_a_smaller_mtu_towards_the_real_server(pmtu_net, vip):
    """IPv6: xdplb's "packet too big" (icmp6.h) makes the client shrink."""
    before = counters(pmtu_net)
    with small_mtu(pmtu_net.ns["lb"], "l1"):
        out, err = _transfer(pmtu_net, "put", vip=vip)
    assert out == f"got {SIZE}", err
    after = counters(pmtu_net)
    assert after["frag_needed"] > before["frag_needed"]


# One echo request to argv[1] on a raw socket; prints the echo reply's source.
PING = r"""
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xffff) + (s >> 16)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
body = struct.pack("!HH", 0x1212, 1) + b"xdplb ping"
s.sendto(struct.pack("!BBH", 8, 0, csum(b"\x08\x00\x00\x00" + body)) + body, (sys.argv[1], 0))
while True:
    data, (src, _) = s.recvfrom(2048)
    ihl = (data[0] & 15) * 4
    if data[ihl] == 0 and data[ihl + 4:ihl + 6] == b"\x12\x12":
        print(src)
        break
"""


def test_echo_request_to_the_vip_is_answered_by_the_stack(pmtu_net):
    """xdplb leaves echo requests to the stack, which answers for a local VIP."""
    before = counters(pmtu_net)
    r = pmtu_net.ns["client"].run([sys.executable, "-c", PING, VIP], check=False, timeout=20)
    assert r.stdout.strip() == VIP, r.stderr
    after = counters(pmtu_net)
    assert after["pass"] > before["pass"] and after["icmp_xlate"] == before["icmp_xlate"]
