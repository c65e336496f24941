"""End to end: fragmented UDP datagrams through xdplb (bpf/frag.h), over
IPv4 and over IPv6 (a fragment header).

The lab's client sends 4,000-byte datagrams over its 1,500-byte MTU link,
so its own stack fragments them; xdplb (native XDP on the lb) forwards the
fragments, and the real server must reassemble each datagram and answer
with one as large, which comes back fragmented too. The lb does not own
the VIP: a fragment xdplb did not forward would be lost, not answered.
"""
import re
import sys

import pytest

from test_e2e import RS, VIP, parse_stats, vip_on_lo
from test_e2e6 import RS6, SVC6, vip6_on_lo
from xdplb.lab import VIP6

SIZE = 4000
SVC = f"{VIP}:80"

CLIENT = r"""
import socket, sys
size, count, v6 = int(sys.argv[2]), int(sys.argv[3]), ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if not v6:  # IPv6 is fragmented by its sender anyway
    # IP_MTU_DISCOVER (10) = IP_PMTUDISC_DONT (0): fragments without DF
    s.setsockopt(socket.IPPROTO_IP, 10, 0)
s.settimeout(3)
for i in range(count):
    data = bytes((i + j) % 251 for j in range(size))
    s.sendto(data, (sys.argv[1], 80))
    try:
        reply, peer = s.recvfrom(65535)
    except socket.timeout:
        print("timeout")
        continue
    prefix, sep, echoed = reply.partition(b": ")
    print(prefix.decode(), len(reply), echoed == data, ("[%s]:%d" if v6 else "%s:%d") % peer[:2])
"""


@pytest.fixture
def lab(xlab_lab):
    """The module's lab with an empty service table."""
    xlab_lab.adm("-C")
    return xlab_lab


def counters(lab):
    """The lb's data-path counters (`xdplb status`)."""
    text = lab.run("lb", [sys.executable, "-m", "xdplb.cli", "status"]).stdout
    section = text.split("counters:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", section, re.M)}


def send(lab, count, vip=VIP):
    p = lab.run("client", [sys.executable, "-c", CLIENT, vip, str(SIZE), str(count)],
                check=False, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def reply_len(n):
    return len(f"service #{n}: ") + SIZE


def test_fragmented_udp_through_masq(lab):
    lab.adm("-A", "-u", SVC, "-s", "rr")
    lab.adm("-a", "-u", SVC, "-r", f"{RS[2]}:80", "-m")
    before = counters(lab)
    assert send(lab, 3) == [f"service #2 {reply_len(2)} True {VIP}:80"] * 3
    after = counters(lab)
    # 3 fragments each way per datagram, all forwarded by XDP
    assert after["fwd"] - before["fwd"] == 3 * 6
    assert after["frag_untracked"] == before["frag_untracked"]
    assert after["to_stack"] == before["to_stack"]
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    # as IPVS counts them: one packet per reassembled datagram, its L3 length
    datagram, reply = 20 + 8 + SIZE, 20 + 8 + reply_len(2)
    assert stats[("UDP", SVC)] == [1, 3, 3, 3 * datagram, 3 * reply]
    assert stats[("->", f"{RS[2]}:80")] == [1, 3, 3, 3 * datagram, 3 * reply]


def test_fragmented_udp_through_route(lab):
    """-g: rs1 owns the VIP on lo, reassembles the datagram xdplb forwarded
    with new MACs only, and answers the client itself (through the lb's
    stack: the lab routes the backends via the lb)."""
    with vip_on_lo(lab, "rs1"):
        lab.adm("-A", "-u", SVC, "-s", "rr")
        lab.adm("-a", "-u", SVC, "-r", f"{RS[1]}:80", "-g")
        before = counters(lab)
        out = send(lab, 2)
        # the echo server's unbound socket answers from its routed address
        assert [line.rsplit(" ", 1)[0] for line in out] == [f"service #1 {reply_len(1)} True"] * 2
        after = counters(lab)
        assert after["fwd"] - before["fwd"] == 2 * 3
        stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
        assert stats[("UDP", SVC)] == [1, 2, 0, 2 * (20 + 8 + SIZE), 0]


# --- IPv6: the sender's stack cuts each datagram with a fragment header ----------

def test_fragmented_udp_through_masq6(lab):
    lab.adm("-A", "-u", SVC6, "-s", "rr")
    lab.adm("-a", "-u", SVC6, "-r", f"[{RS6[2]}]:80", "-m")
    expected = f"service #2 {reply_len(2)} True [{VIP6}]:80"
    # the first: its fragments may go to the stack NATed while the lb
    # resolves rs2's neighbour (IPv6's is not resolved in advance)
    assert send(lab, 1, VIP6) == [expected]
    before = counters(lab)
    assert send(lab, 3, VIP6) == [expected] * 3
    after = counters(lab)
    # 3 fragments each way per datagram (1,448 bytes of data each), all by XDP
    assert after["fwd"] - before["fwd"] == 3 * 6
    assert after["frag_untracked"] == before["frag_untracked"]
    assert after["to_stack"] == before["to_stack"]
    stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
    # one packet per reassembled datagram, its IPv6 length (no fragment header)
    datagram, reply = 40 + 8 + SIZE, 40 + 8 + reply_len(2)
    # (each send is a client socket of its own: two connections)
    assert stats[("UDP", SVC6)] == [2, 4, 4, 4 * datagram, 4 * reply]
    assert stats[("->", f"[{RS6[2]}]:80")] == [2, 4, 4, 4 * datagram, 4 * reply]


def test_fragmented_udp_through_route6(lab):
    """-g: rs1 owns VIP6 on lo and reassembles the datagram xdplb forwarded
    with new MACs only; its fragmented answer goes back through the lb's
    stack (not a connection of xdplb's: its later fragments are untracked)."""
    with vip6_on_lo(lab, "rs1"):
        lab.adm("-A", "-u", SVC6, "-s", "rr")
        lab.adm("-a", "-u", SVC6, "-r", f"[{RS6[1]}]:80", "-g")
        before = counters(lab)
        out = send(lab, 2, VIP6)
        assert [line.rsplit(" ", 1)[0] for line in out] == [f"service #1 {reply_len(1)} True"] * 2
        after = counters(lab)
        assert after["fwd"] - before["fwd"] == 2 * 3
        stats = parse_stats(lab.adm("-L", "-n", "--stats", "--exact").stdout)
        assert stats[("UDP", SVC6)] == [1, 2, 0, 2 * (40 + 8 + SIZE), 0]
