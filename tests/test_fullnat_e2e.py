"""Full-NAT end to end in a private lab (xdplb/lab.py): real HTTP and UDP
(and HTTP over IPv6) through xdplb to a real server that has no route to
the client at all,
only to its own subnet, where the balancer's local address is. This is
the point of full-NAT: the real server answers the local address, the
balancer un-NATs both addresses. The same server behind Masq cannot
answer (the control); its route is put back at the end, whatever happens.
"""
import re
import sys

import pytest

from test_e2e import CLIENT_UDP, VIP, parse_stats
from xdplb import config, lab as labmod
from xdplb.control import Control
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP, Destination
from xdplb.structs import IP_VS_CONN_F_MASQ, XDPLB_CONN_F_FULLNAT

SVC = f"{VIP}:80"
RS2, RS2_6 = "172.80.0.3", labmod.BACKENDS6["rs2"]
LADDR = labmod.LB_RS_IP         # the balancer's own address on the servers' links
LADDR6 = labmod.LB_RS_IP6


@pytest.fixture
def lab(xlab_lab):
    """The module's lab, its service table empty and rs2 with no route but
    its own subnets' (no default routes: no way to the client)."""
    xlab_lab.adm("-C")
    rs2 = xlab_lab.node("rs2")
    rs2.route("del", "default", via=LADDR, dev=labmod.PEER_IF)
    try:
        rs2.route("del", "default", via=LADDR6, dev=labmod.PEER_IF)
        try:
            yield xlab_lab
        finally:
            rs2.route("add", "default", via=LADDR6, dev=labmod.PEER_IF, onlink=True)
    finally:
        rs2.route("add", "default", via=LADDR, dev=labmod.PEER_IF, onlink=True)
        xlab_lab.adm("-C")


def configure(lab, proto, fwd, vip=VIP, rs=RS2, laddr=LADDR):
    key = (proto, vip, 80)
    svc = f"[{vip}]:80" if ":" in vip else f"{vip}:80"
    lab.adm("-A", "-t" if proto == IPPROTO_TCP else "-u", svc, "-s", "rr")
    with lab.node("lb").entered(), Control.open() as ctl:
        if fwd == XDPLB_CONN_F_FULLNAT:
            ctl.apply(config.add_laddr, key, laddr, 0)
        ctl.add_dest(key, Destination(rs, 80, fwd=fwd))


def get(lab, timeout=5, url=f"http://{VIP}/"):
    return lab.run("client", ["curl", "-s", "-i", "-m", str(timeout), "-H", "X-Want-Addr: 1",
                              "-w", "\nPEER %{remote_ip} %{remote_port}\n", url], check=False)


def test_masq_cannot_reach_a_server_without_a_route_back(lab):
    configure(lab, IPPROTO_TCP, IP_VS_CONN_F_MASQ)
    assert get(lab, timeout=2).returncode != 0


def test_fullnat_http(lab):
    configure(lab, IPPROTO_TCP, XDPLB_CONN_F_FULLNAT)
    listing = lab.adm("-L", "-n").stdout
    assert re.search(r"^  -> 172\.80\.0\.3:80\s+FullNat\s+1\s", listing, re.M), listing
    for _ in range(3):
        p = get(lab)
        assert p.returncode == 0, p.stderr
        assert "This is service #2" in p.stdout
        # the client talked to the VIP; the server saw the balancer's local
        # address, not the client's
        assert f"PEER {VIP} 80" in p.stdout
        assert re.search(r"^X-Server-Addr: 172\.80\.0\.3:80\r?$", p.stdout, re.M), p.stdout
        assert re.search(rf"^X-Client-Addr: {re.escape(LADDR)}:\d+\r?$", p.stdout,
                         re.M), p.stdout
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    conns, inpkts, outpkts = stats[("TCP", SVC)][:3]
    assert conns == 3 and inpkts >= 15 and outpkts >= 9    # both directions counted


def test_fullnat_udp(lab):
    configure(lab, IPPROTO_UDP, XDPLB_CONN_F_FULLNAT)
    p = lab.run("client", [sys.executable, "-c", CLIENT_UDP, VIP], check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"service #2: ping{i}.{j} {VIP}:80"
                                     for i in range(3) for j in range(2)]
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    assert stats[("UDP", SVC)][:3] == [3, 6, 6]


def test_fullnat_http_over_ipv6(lab):
    configure(lab, IPPROTO_TCP, XDPLB_CONN_F_FULLNAT, labmod.VIP6, RS2_6, LADDR6)
    p = get(lab, url=f"http://[{labmod.VIP6}]/")
    assert p.returncode == 0, p.stderr
    assert "This is service #2" in p.stdout
    assert f"PEER {labmod.VIP6} 80" in p.stdout
    assert re.search(rf"^X-Client-Addr: \[{re.escape(LADDR6)}\]:\d+\r?$", p.stdout,
                     re.M), p.stdout
