"""End to end over IPv6: the private namespace lab (xdplb/lab.py), real HTTP
and UDP from the client to VIP6 through xdplb on the lb, to rs1..rs3 at
fd00:80::2..4, configured with the real `xdplbadm` in ipvsadm's IPv6 forms.
"""
import contextlib
import re
import sys

from test_e2e import CLIENT_UDP, parse_stats
from xdplb.lab import BACKENDS6, CLIENT_IP6, VIP6

SVC6 = f"[{VIP6}]:80"
URL6 = f"http://[{VIP6}]/"
RS6 = {int(node[2:]): addr for node, addr in BACKENDS6.items()}
# test_e2e's UDP client (three flows of two datagrams), over IPv6
CLIENT_UDP6 = CLIENT_UDP.replace("socket.AF_INET,", "socket.AF_INET6,").replace(
    '"%s:%d" % peer', '"[%s]:%d" % peer[:2]')


def add_service6(lab, proto="-t", sched="rr", fwd="-m", backends=(1, 2, 3)):
    lab.adm("-A", proto, SVC6, "-s", sched)
    for n in backends:
        lab.adm("-a", proto, SVC6, "-r", f"[{RS6[n]}]:80", fwd)


def get(lab):
    p = lab.run("client", ["curl", "-s", "-i", "-m", "5", "-H", "X-Want-Addr: 1", "-w",
                           "\nPEER %{remote_ip} %{remote_port} LOCAL %{local_ip}\n", URL6],
                check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_http_through_masq(xlab_lab):
    lab = xlab_lab
    lab.adm("-C")
    add_service6(lab)
    served = [re.search(r"This is service #(\d)", get(lab)).group(1) for _ in range(6)]
    assert served == ["3", "2", "1", "3", "2", "1"]
    out = get(lab)
    # the client talked to the VIP only; the backend saw itself and the real client
    assert f"PEER {VIP6} 80 LOCAL {CLIENT_IP6}" in out
    assert re.search(rf"^X-Server-Addr: \[{RS6[3]}\]:80\r?$", out, re.M), out
    assert re.search(rf"^X-Client-Addr: \[{CLIENT_IP6}\]:\d+\r?$", out, re.M), out

    listing = lab.adm("-L", "-n").stdout
    assert re.search(rf"^TCP  \[{VIP6}\]:80 rr\s*$", listing, re.M), listing
    assert re.search(rf"^  -> \[{RS6[1]}\]:80\s+Masq\s+1\s", listing, re.M), listing
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    conns, inpkts, outpkts = stats[("TCP", SVC6)][:3]
    assert conns == 7 and inpkts >= 7 * 5 and outpkts >= 7 * 4
    rows = lab.adm("-L", "-n", "-c").stdout.splitlines()
    assert any(f"[{CLIENT_IP6}]" in r and f"[{VIP6}]:80" in r for r in rows), rows


def test_udp_through_masq(xlab_lab):
    lab = xlab_lab
    lab.adm("-C")
    add_service6(lab, proto="-u")
    p = lab.run("client", [sys.executable, "-c", CLIENT_UDP6, VIP6], check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"service #{n}: ping{i}.{j} [{VIP6}]:80"
                                     for i, n in enumerate((3, 2, 1)) for j in range(2)]
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    assert stats[("UDP", SVC6)][:3] == [3, 6, 6]


@contextlib.contextmanager
def vip6_on_lo(lab, node):
    """node answers for VIP6 under direct routing: VIP6 on its lo (IPv6 has
    no ARP: the lb's neighbour entry for the real server is what counts)."""
    rs = lab.node(node)
    rs.addr("add", "lo", f"{VIP6}/128")
    try:
        yield
    finally:
        rs.addr("del", "lo", f"{VIP6}/128")


def test_http_through_direct_routing(xlab_lab):
    lab = xlab_lab
    lab.adm("-C")
    with vip6_on_lo(lab, "rs2"):
        add_service6(lab, fwd="-g", backends=(2,))
        for _ in range(3):
            out = get(lab)
            assert "This is service #2" in out
            assert f"PEER {VIP6} 80" in out
            # no DNAT: the backend's socket was bound to the VIP itself
            assert re.search(rf"^X-Server-Addr: \[{VIP6}\]:80\r?$", out, re.M), out
            assert re.search(rf"^X-Client-Addr: \[{CLIENT_IP6}\]:\d+\r?$", out, re.M), out
        stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
        assert stats[("TCP", SVC6)][0] == 3
        assert stats[("->", f"[{RS6[2]}]:80")][0] == 3
        assert stats[("->", f"[{RS6[2]}]:80")][2] == 0      # replies bypass the lb
