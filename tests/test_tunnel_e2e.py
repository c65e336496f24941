"""End to end: Tunnel (-i) forwarding with real servers that decapsulate and
answer the client directly.

    client 10.0.0.2 --veth-- lb 10.0.0.1 (xdplb on all three veths)
       |  |                   +--veth-- rs1 172.81.1.2 (xdplb decap on eth0, VIP on lo)
       |  |                   +--veth-- rs2 172.81.2.2 (idem)
       |  +--veth ret2-- rs2 10.1.2.2: the way back, around the balancer
       +-----veth ret1-- rs1 10.1.1.2

This machine's kernel has neither the ipip nor the fou module, so the real
servers run `xdplb decap`; their replies come from the VIP straight to the
client. HTTP over TCP and a UDP echo, through ipip and through GUE with its
checksum; the listing says Tunnel, the connections end in FIN_WAIT, and the
balancer never sees a reply (OutPkts 0).
"""
import os
import re
import subprocess
import sys
import uuid

import pytest

from conftest import VENV_BIN, _need_root_and_bpffs, xdplb_argv
from xdplb import topology as T

VIP = "1.2.3.4"
CLIENT = "10.0.0.2"
RS = {1: "172.81.1.2", 2: "172.81.2.2"}
GUE_PORT = 6080
# dual stack: the same roles over IPv6
VIP6 = "fd00:4::4"
CLIENT6 = "fd00:10::2"
RS6 = {1: "fd00:81:1::2", 2: "fd00:81:2::2"}


def _topology():
    veths = [T.Veth(T.End("client", "eth0", addrs=("10.0.0.2/24", f"{CLIENT6}/64"),
                          faces_xdp=True),
                    T.End("lb", "veth-client", addrs=("10.0.0.1/24", "fd00:10::1/64")))]
    routes = [T.Route("client", f"{VIP}/32", via="10.0.0.1"),
              T.Route("client", f"{VIP6}/128", via="fd00:10::1")]
    sysctls = [T.Sysctl("lb", "net.ipv4.ip_forward", 1),
               T.Sysctl("lb", "net.ipv6.conf.all.forwarding", 1)]
    for n, addr in RS.items():
        rs = f"rs{n}"
        veths += [T.Veth(T.End("lb", f"veth-{rs}", addrs=(f"172.81.{n}.1/24",
                                                         f"fd00:81:{n}::1/64")),
                         T.End(rs, "eth0", addrs=(f"{addr}/24", f"{RS6[n]}/64"),
                               faces_xdp=True)),
                  T.Veth(T.End("client", f"ret{n}", addrs=(f"10.1.{n}.1/24", f"fd00:11:{n}::1/64")),
                         T.End(rs, "ret", addrs=(f"10.1.{n}.2/24", f"fd00:11:{n}::2/64")))]
        routes += [T.Route(rs, "10.0.0.0/24", via=f"10.1.{n}.1"),
                   T.Route(rs, "fd00:10::/64", via=f"fd00:11:{n}::1")]
        # the VIP is the real server's own (on lo) but never answered for by ARP;
        # replies leave by ret, requests come in on eth0: no reverse-path filter
        sysctls += [T.Sysctl(rs, f"net.ipv4.conf.{dev}.{key}", value)
                    for dev in ("all", "eth0") for key, value in
                    (("arp_ignore", 1), ("arp_announce", 2))]
        sysctls += [T.Sysctl(rs, f"net.ipv4.conf.{dev}.rp_filter", 0)
                    for dev in ("all", "default", "eth0", "ret")]
    sysctls += [T.Sysctl("client", f"net.ipv4.conf.{dev}.rp_filter", 0)
                for dev in ("all", "default", "eth0", "ret1", "ret2")]
    return T.Topology(nodes=("client", "lb", "rs1", "rs2"), veths=tuple(veths),
                      routes=tuple(routes), sysctls=tuple(sysctls))


TOPOLOGY = _topology()


def env():
    e = dict(os.environ)
    e.pop("XDPLB_PIN_DIR", None)
    return e


class TunnelLab:
    def __init__(self):
        self.net = T.build(TOPOLOGY, f"xtt{uuid.uuid4().hex[:6]}")
        self.ns = self.net.ns
        self.servers = []

    def run(self, node, argv, check=True, **kw):
        return self.ns[node].run(argv, check=check, env=env(), timeout=120, **kw)

    def adm(self, *args):
        return self.run("lb", [os.path.join(VENV_BIN, "xdplbadm"), *args])

    def up(self):
        self.run("lb", xdplb_argv("attach", "veth-client", "veth-rs1", "veth-rs2"))
        for n in RS:
            rs = self.ns[f"rs{n}"]
            rs.addr("add", "lo", f"{VIP}/32")
            rs.addr("add", "lo", f"{VIP6}/128")
            self.run(f"rs{n}", xdplb_argv("decap", "eth0", "--gue-port", str(GUE_PORT)))
            # bound to the VIP: a UDP answer of an unbound socket would come from
            # the address of the interface it leaves by, not the VIP
            self.servers.append(subprocess.Popen(
                rs.cmd([sys.executable, "-m", "xdplb.httpd", str(n), "--port", "80", "--udp",
                        "80", "--bind", VIP]), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env()))
            self.servers.append(subprocess.Popen(
                rs.cmd([sys.executable, "-m", "xdplb.httpd", str(n), "--port", "80", "--udp",
                        "80", "--bind", VIP6]), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env()))
        for n, proc in zip(RS, self.servers):
            for _ in range(200):
                if self.ns[f"rs{n}"].tcp_listening(80):
                    break
                assert proc.poll() is None, "the real server's httpd died"
                subprocess.run(["sleep", "0.05"])

    def down(self):
        for proc in self.servers:
            proc.kill()
            proc.wait()
        try:
            if self.ns["lb"].exists():
                self.run("lb", xdplb_argv("detach"), check=False)
            for n in RS:
                self.run(f"rs{n}", xdplb_argv("decap", "eth0", "--detach"), check=False)
        finally:
            self.net.close()


@pytest.fixture(scope="module")
def tlab():
    _need_root_and_bpffs()
    lab = TunnelLab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def curl(lab, vip=VIP):
    host = f"[{vip}]" if ":" in vip else vip
    p = lab.run("client", ["curl", "-s", "-i", "-m", "5", "-H", "X-Want-Addr: 1", "-w",
                           "\nPEER %{remote_ip} %{remote_port}\n", f"http://{host}/"],
                check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


UDP_CLIENT = r"""
import socket, sys
out = []
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"ping%d" % i, ("1.2.3.4", 80))
    data, peer = s.recvfrom(2048)
    out.append("%s %s:%d" % (data.decode(), *peer))
    s.close()
print("\n".join(out))
"""

TUNNELS = {"ipip": [], "gue": ["--tun-type", "gue", "--tun-port", str(GUE_PORT), "--tun-csum"],
           "gue-nocsum": ["--tun-type", "gue", "--tun-port", str(GUE_PORT)]}
INFO = {"ipip": "ipip", "gue": f"gue:{GUE_PORT}:+c", "gue-nocsum": f"gue:{GUE_PORT}:-c"}


def stats(lab):
    """{(kind, name): [conns, inpkts, outpkts, inbytes, outbytes]} of --stats --exact."""
    out = {}
    for line in lab.adm("-L", "-n", "--stats", "--exact").stdout.splitlines():
        m = re.match(r"^(TCP|UDP|  ->)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            out[(m.group(1).strip(), m.group(2))] = [int(x) for x in m.groups()[2:]]
    return out


@pytest.mark.parametrize("kind", list(TUNNELS))
def test_http_and_udp_through_the_tunnel(tlab, kind):
    tlab.adm("-C")
    tlab.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    tlab.adm("-A", "-u", f"{VIP}:80", "-s", "rr")
    for proto in ("-t", "-u"):
        for addr in RS.values():
            tlab.adm("-a", proto, f"{VIP}:80", "-r", addr, "-i", *TUNNELS[kind])
    listing = tlab.adm("-L", "-n", "--tun-info").stdout
    for addr in RS.values():
        assert re.search(rf"^  -> {re.escape(addr)}:80\s+Tunnel\s+{re.escape(INFO[kind])}\s+1\s",
                         listing, re.M), listing

    seen = []
    for _ in range(4):
        out = curl(tlab)
        m = re.search(r"This is service #(\d)", out)
        assert m, out
        seen.append(int(m.group(1)))
        assert f"PEER {VIP} 80" in out
        # no NAT: the real server's socket is the VIP's, its peer the client
        assert re.search(rf"^X-Server-Addr: {re.escape(VIP)}:80\r?$", out, re.M), out
        assert re.search(rf"^X-Client-Addr: {CLIENT}:\d+\r?$", out, re.M), out
    assert sorted(seen) == [1, 1, 2, 2]

    p = tlab.run("client", [sys.executable, "-c", UDP_CLIENT, "4"])
    replies = p.stdout.split("\n")[:4]
    assert sorted(r.split(":")[0] for r in replies) == ["service #1", "service #1",
                                                        "service #2", "service #2"], p.stdout
    assert all(r.endswith(f"{VIP}:80") for r in replies), replies

    st = stats(tlab)
    for key in (("TCP", f"{VIP}:80"), ("UDP", f"{VIP}:80")):
        conns, inpkts, outpkts, inbytes, outbytes = st[key]
        assert conns == 4 and inpkts >= 4 and inbytes > 0, st
        assert (outpkts, outbytes) == (0, 0), st      # the replies went around the balancer
    conns = tlab.adm("-L", "-n", "-c").stdout
    tcp_rows = [r for r in conns.splitlines() if r.startswith("TCP")]
    assert len(tcp_rows) == 4 and all(" FIN_WAIT " in r for r in tcp_rows), conns


# (service address, real servers, the client as the real server sees it)
FAMILIES = {"6in6": (VIP6, RS6, CLIENT6), "4in6": (VIP, RS6, CLIENT), "6in4": (VIP6, RS, CLIENT6)}


@pytest.mark.parametrize("kind", ["ipip", "gue"])
@pytest.mark.parametrize("families", list(FAMILIES))
def test_http_through_ipv6_and_mixed_tunnels(tlab, families, kind):
    """IPv6 in IPv6, IPv4 in IPv6, IPv6 in IPv4: the real servers (xdplb
    decap) answer the client directly from the VIP."""
    vip, rss, client = FAMILIES[families]
    svc = f"[{vip}]:80" if ":" in vip else f"{vip}:80"
    tlab.adm("-C")
    tlab.adm("-A", "-t", svc, "-s", "rr")
    for addr in rss.values():
        # a bare IPv6 literal takes the service's port (`[addr]` needs one)
        tlab.adm("-a", "-t", svc, "-r", addr, "-i", *TUNNELS[kind])
    seen = []
    for _ in range(4):
        out = curl(tlab, vip)
        m = re.search(r"This is service #(\d)", out)
        assert m, out
        seen.append(int(m.group(1)))
        assert f"PEER {vip} 80" in out
        host = f"[{vip}]" if ":" in vip else vip
        assert re.search(rf"^X-Server-Addr: {re.escape(host)}:80\r?$", out, re.M), out
        peer = f"[{client}]" if ":" in client else client
        assert re.search(rf"^X-Client-Addr: {re.escape(peer)}:\d+\r?$", out, re.M), out
    assert sorted(seen) == [1, 1, 2, 2]
    st = stats(tlab)
    conns, inpkts, outpkts = st[("TCP", svc)][:3]
    assert conns == 4 and inpkts >= 4 * 4 and outpkts == 0, st


def test_real_servers_cannot_decapsulate_in_the_kernel(tlab):
    """Why `xdplb decap` exists: this kernel has no ipip (nor fou) module."""
    p = tlab.run("rs1", ["ip", "link", "add", "name", "tun0", "type", "ipip"], check=False)
    assert p.returncode != 0
    p = tlab.run("rs1", ["ip", "fou", "add", "port", "6081", "gue"], check=False)
    assert p.returncode != 0


def test_decap_refuses_to_replace_another_program(tlab):
    p = tlab.run("lb", xdplb_argv("decap", "veth-client"), check=False)
    assert p.returncode == 1
    assert "veth-client already runs XDP program xdplb_main" in p.stderr
    p = tlab.run("lb", xdplb_argv("decap", "veth-client", "--detach"), check=False)
    assert p.returncode == 1 and "not xdplb decap: not detaching it" in p.stderr
    p = tlab.run("client", xdplb_argv("decap", "eth0", "--detach"), check=False)
    assert p.returncode == 1 and "xdplb decap is not attached to eth0" in p.stderr
    p = tlab.run("client", xdplb_argv("decap", "nosuch0"), check=False)
    assert p.returncode == 1 and "no such interface" in p.stderr


def test_attach_writes_the_outer_sources(tlab):
    """tun_src: the lb's address on each of its interfaces."""
    code = ("import socket\nfrom xdplb.state import State\n"
            "with State.open() as st:\n"
            "    for i, a in sorted(st.tun_src.items()):\n"
            "        if a.value:\n"
            "            print(socket.if_indextoname(i),\n"
            "                  socket.inet_ntoa(a.value.to_bytes(4, 'little')))\n")
    p = tlab.run("lb", [sys.executable, "-c", code])
    got = dict(line.split() for line in p.stdout.splitlines())
    assert got == {"veth-client": "10.0.0.1", "veth-rs1": "172.81.1.1",
                   "veth-rs2": "172.81.2.1", "lo": "127.0.0.1"}, p.stdout
