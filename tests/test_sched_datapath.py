"""Schedulers, live counts, thresholds, expiry and persistence in the real data
path, packet by packet (BPF_PROG_TEST_RUN), configured through the control
API exactly as xdplbadm does. Expected picks come from xdplb/sched.py's
reference ports of the kernel's algorithms (docs/ipvs-behaviour.md §5).
"""
import ctypes as C
import socket
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from packets import tcp, udp
from xdplb import bpfsys
from xdplb import sched as S
from xdplb import structs as T
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP, Destination, Service
from xdplb.tables import Tables

XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
VIP, VPORT, RPORT = "10.0.0.100", 80, 8080
CLIENT = "10.0.0.2"
RS = ["172.80.0.2", "172.80.0.3", "172.80.0.4"]
SVC = (IPPROTO_TCP, VIP, VPORT)


def run(ctl, frame, ifindex=None):
    verdict, out, _ = bpfsys.prog_test_run(ctl.st.prog_fd, bytes(frame),
                                           ingress_ifindex=ifindex or _cli_idx())
    return verdict, out


def _cli_idx():
    return socket.if_nametoindex("cli0")


def backend(verdict, out):
    """Which real server a forwarded SYN went to (None: not forwarded)."""
    if verdict not in (XDP_TX, XDP_REDIRECT, XDP_PASS):
        return None
    dst = Ether(out)[IP].dst
    return dst if dst in RS else None


def setup(ctl, sched, added, proto=IPPROTO_TCP, flags=0, timeout=0, netmask="255.255.255.255",
          port=VPORT, **dest_kw):
    """added: [(rs index, weight)] in add order. Returns the kernel list
    [(addr, weight)] (newest first)."""
    ctl.add_service(Service(proto, VIP, port, sched=sched, flags=flags, timeout=timeout,
                            netmask=netmask))
    for i, w in added:
        ctl.add_dest((proto, VIP, port), Destination(RS[i], RPORT, fwd=0, weight=w, **dest_kw))
    return [(RS[i], w) for i, w in reversed(added)]


def syns(ctl, n, sport0=20000, src=CLIENT):
    return [backend(*run(ctl, tcp(src, VIP, sport0 + k, VPORT))) for k in range(n)]


CONFIGS = {"w311": [(0, 3), (1, 1), (2, 1)], "w13": [(0, 1), (1, 3)],
           "w011": [(0, 0), (1, 1), (2, 1)], "w113": [(2, 1), (1, 1), (0, 3)]}


def expect_open(sched, dests, n):
    """Picks for n SYNs that stay open (SYN_RECV counts as active)."""
    act = {a: 0 for a, _ in dests}
    cache = None
    out = []
    if sched == "lblcr":
        return expect_lblcr(dests, n)
    for _ in range(n):
        if sched in ("lblc", "lblcr") and cache is not None:
            w = dict(dests)[cache]
            over = act[cache] > w and any(act[a] * 2 < wt for a, wt in dests)
            if w > 0 and not over:
                out.append(cache)
                act[cache] += 1
                continue
        pick = S.list_pick(sched, [(a, w, act[a], 0, 0) for a, w in dests])
        if sched in ("lblc", "lblcr") and pick is not None:
            cache = pick
        out.append(pick)
        if pick is not None:
            act[pick] += 1
    return out


def expect_lblcr(dests, n):
    """ip_vs_lblcr_schedule for one destination address: the server set's
    weighted least-connection member unless overloaded, else wlc's pick is
    added to the set (at its head)."""
    act = {a: 0 for a, _ in dests}
    weight = dict(dests)
    members = None
    out = []

    def overloaded(a):
        return act[a] > weight[a] and any(act[b] * 2 < w for b, w in dests)
    for _ in range(n):
        pick = None
        if members is not None:
            least = None
            for m in members:
                if weight[m] <= 0:
                    continue
                if least is None or (act[least] << 8) * weight[m] > (act[m] << 8) * weight[least]:
                    least = m
            if least is not None and not overloaded(least):
                pick = least
        if pick is None:
            pick = S.list_pick("wlc", [(a, w, act[a], 0, 0) for a, w in dests])
            if members is None:
                members = [pick]
            elif pick is not None and pick not in members:
                members.insert(0, pick)
        out.append(pick)
        if pick is not None:
            act[pick] += 1
    return out


@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("sched", ["lc", "wlc", "sed", "nq", "fo", "ovf", "lblc", "lblcr"])
def test_list_schedulers_open_connections(ctl, sched, cfg):
    dests = setup(ctl, sched, CONFIGS[cfg])
    assert syns(ctl, 9) == expect_open(sched, dests, 9)
    counts = ctl.conn_counts()
    live = {socket.inet_ntoa(bytes(d.addr)): ctl.st.dest_conns.get(s)
            for s, d in Tables(ctl.st).every_dest().items()}
    for s, (a, i, p) in counts.items():
        d = Tables(ctl.st).every_dest()[s]
        dc = live[socket.inet_ntoa(bytes(d.addr))]
        assert (dc.active, dc.inactive, dc.persist) == (a, i, p)


def test_state_changes_move_live_counts_and_steer_wlc(ctl):
    """RST on A's connection makes it inactive (CLOSE): wlc's overhead
    256*active + inactive then prefers A again."""
    setup(ctl, "wlc", [(0, 1), (1, 1)])         # list: RS1, RS0
    assert syns(ctl, 2, 21000) == [RS[1], RS[0]]
    slot = {socket.inet_ntoa(bytes(d.addr)): s for s, d in Tables(ctl.st).every_dest().items()}
    assert ctl.st.dest_conns.get(slot[RS[1]]).active == 1
    run(ctl, tcp(CLIENT, VIP, 21000, VPORT, flags="A"))      # ESTABLISHED
    assert ctl.st.dest_conns.get(slot[RS[1]]).active == 1
    run(ctl, tcp(CLIENT, VIP, 21000, VPORT, flags="R"))      # CLOSE
    dc = ctl.st.dest_conns.get(slot[RS[1]])
    assert (dc.active, dc.inactive) == (0, 1)
    assert syns(ctl, 1, 21100) == [RS[1]]         # 1 < 256
    ctl.sweep()
    dc = ctl.st.dest_conns.get(slot[RS[1]])
    assert (dc.active, dc.inactive) == (1, 1)


def test_mh_quiesce_keeps_the_table_and_removal_moves_few(ctl):
    clients = [f"10.0.{k // 200}.{k % 200 + 10}" for k in range(300)]
    setup(ctl, "mh", [(0, 1), (1, 1), (2, 1)])

    def picks():
        return [backend(*run(ctl, tcp(c, VIP, 30000, VPORT))) for c in clients]

    def model(dests):
        t = S.mh_table([(a, int.from_bytes(socket.inet_aton(a), "big"), RPORT, lw)
                        for a, lw in dests])
        return [t[S.mh_hashkey(int.from_bytes(socket.inet_aton(c), "big"), 0, S.MH_HASH1)
                  % len(t)] for c in clients]
    first = picks()
    assert first == model([(RS[2], 1), (RS[1], 1), (RS[0], 1)])
    assert len(set(first)) == 3
    # the same client always lands on the same backend
    ctl.st.conn_table.clear()
    assert picks() == first
    # quiesce RS0: the table stays (last_weight); its clients get nothing
    ctl.edit_dest(SVC, Destination(RS[0], RPORT, fwd=0, weight=0))
    ctl.st.conn_table.clear()
    assert picks() == [None if b == RS[0] else b for b in first]
    # remove RS0: its clients move, the others (almost all) stay
    ctl.edit_dest(SVC, Destination(RS[0], RPORT, fwd=0, weight=1))
    ctl.delete_dest(SVC, RS[0], RPORT)
    ctl.st.conn_table.clear()
    after = picks()
    assert after == model([(RS[2], 1), (RS[1], 1)])
    assert all(b != RS[0] for b in after)
    moved = sum(1 for a, b in zip(first, after) if a != RS[0] and a != b)
    assert moved <= len(clients) // 20, moved


def test_sh_same_client_same_backend_and_fallback(ctl):
    setup(ctl, "sh", [(0, 1), (1, 1), (2, 1)], flags=T.IP_VS_SVC_F_SCHED1)
    clients = [f"10.0.1.{k}" for k in range(2, 60)]
    table = S.sh_table([(RS[2], 1), (RS[1], 1), (RS[0], 1)])
    want = [table[S.sh_hashkey(int.from_bytes(socket.inet_aton(c), "big"), 0)] for c in clients]
    got = [backend(*run(ctl, tcp(c, VIP, 30001, VPORT))) for c in clients]
    assert got == want
    ctl.edit_dest(SVC, Destination(RS[1], RPORT, fwd=0, weight=0))
    ctl.st.conn_table.clear()
    got = [backend(*run(ctl, tcp(c, VIP, 30002, VPORT))) for c in clients]
    # sh-fallback: every client still served, never by the quiesced one
    assert None not in got and RS[1] not in got


def test_threshold_overload_and_recovery(ctl):
    """fo with -x 2 -y 1: the third connection skips RS0 (OVERLOAD); once its
    connections are gone (closed + expired) it is used again."""
    setup(ctl, "fo", [(1, 1), (0, 100)], u_threshold=2, l_threshold=1)
    # list: RS0 (w100, x2), RS1 (w1, x2): fo takes the highest weight
    assert syns(ctl, 4, 22000) == [RS[0], RS[0], RS[1], RS[1]]
    for k in (0, 1):
        run(ctl, tcp(CLIENT, VIP, 22000 + k, VPORT, flags="A"))
        run(ctl, tcp(CLIENT, VIP, 22000 + k, VPORT, flags="R"))   # CLOSE: 10 s timeout
    slot = {socket.inet_ntoa(bytes(d.addr)): s for s, d in Tables(ctl.st).every_dest().items()}
    assert ctl.st.dest_conns.get(slot[RS[0]]).overload == 1
    # expire them as the timer would: age the entries past CLOSE's 10 s
    for k in (0, 1):
        key = T.ConnKey((C.c_uint8 * 4)(*socket.inet_aton(CLIENT)),
                        (C.c_uint8 * 4)(*socket.inet_aton(VIP)), socket.htons(22000 + k),
                        socket.htons(VPORT), IPPROTO_TCP)
        c = ctl.st.conn_table.get(key)
        c.last_seen -= 20 * 10**9
        ctl.st.conn_table.put(key, c)
    assert ctl.sweep() >= 2
    dc = ctl.st.dest_conns.get(slot[RS[0]])
    assert (dc.active, dc.inactive, dc.overload) == (0, 0, 0)
    assert syns(ctl, 1, 22100) == [RS[0]]


def test_udp_expiry_on_lookup_reschedules_and_uncounts(ctl):
    """--set udp 1: an idle UDP flow expires; its next datagram is a new
    connection (rr moves on) and the old destination's count drops."""
    ctl.set_timeouts(0, 0, 1)
    assert ctl.timeouts() == (900, 120, 1)
    setup(ctl, "rr", [(0, 1), (1, 1)], proto=IPPROTO_UDP, port=53)   # list RS1, RS0
    q = udp(CLIENT, VIP, 5353, 53)
    assert backend(*run(ctl, q)) == RS[1]
    slot = {socket.inet_ntoa(bytes(d.addr)): s for s, d in Tables(ctl.st).every_dest().items()}
    assert ctl.st.dest_conns.get(slot[RS[1]]).inactive == 1
    assert backend(*run(ctl, q)) == RS[1]
    time.sleep(1.6)
    assert backend(*run(ctl, q)) == RS[0]
    assert ctl.st.dest_conns.get(slot[RS[1]]).inactive == 0
    assert ctl.st.dest_conns.get(slot[RS[0]]).inactive == 1
    assert ctl.conn_counts() == {slot[RS[0]]: [0, 1, 0]}


def test_lru_eviction_is_reconciled_by_the_sweep(ctl):
    setup(ctl, "lc", [(0, 1)])
    syns(ctl, 3, 23000)
    slot = next(iter(Tables(ctl.st).every_dest()))
    assert ctl.st.dest_conns.get(slot).active == 3
    ctl.st.conn_table.clear()               # as if the LRU had evicted them
    ctl.sweep()
    assert ctl.st.dest_conns.get(slot).active == 0


def test_persistence_netmask_groups_a_24(ctl):
    """-p 300 -M 255.255.255.0: clients of one /24 share the template; another
    /24 is scheduled anew (rr moves on)."""
    setup(ctl, "rr", [(0, 1), (1, 1), (2, 1)], flags=T.IP_VS_SVC_F_PERSISTENT, timeout=300,
          netmask="255.255.255.0")
    a = syns(ctl, 3, 24000, src="10.0.0.2") + syns(ctl, 2, 24100, src="10.0.0.77")
    assert a == [RS[2]] * 5
    b = syns(ctl, 3, 24200, src="10.0.7.2")
    assert b == [RS[1]] * 3
    conns = ctl.connections()
    tpl = sorted((c[2], c[3], c[4], c[5], c[6], c[8]) for c in conns if c[3] == 0)
    assert tpl == [("10.0.0.0", 0, VIP, VPORT, RS[2], "NONE"),
                   ("10.0.7.0", 0, VIP, VPORT, RS[1], "NONE")]
    counts = ctl.conn_counts()
    slot = {socket.inet_ntoa(bytes(d.addr)): s for s, d in Tables(ctl.st).every_dest().items()}
    assert counts[slot[RS[2]]] == [5, 0, 1] and counts[slot[RS[1]]] == [3, 0, 1]
    assert ctl.st.dest_conns.get(slot[RS[2]]).persist == 1
    # svc stats count real connections only
    assert ctl.st.svc_stats.sum(ctl.get_service(*SVC, counts=False).slot).conns == 8


def test_persistent_udp_port_zero_service(ctl):
    setup(ctl, "rr", [(0, 1), (1, 1)], proto=IPPROTO_UDP, flags=T.IP_VS_SVC_F_PERSISTENT,
          timeout=60, port=0)
    got = [backend(*run(ctl, udp(CLIENT, VIP, 6000 + k, dport))) for k, dport in
           enumerate((53, 123, 5000))]
    assert got == [RS[1]] * 3
    # the connection keeps the client's destination port (port-zero service)
    v, out = run(ctl, udp(CLIENT, VIP, 6100, 4242))
    assert Ether(out)[IP].payload.dport == 4242


def test_edit_service_switches_scheduler(ctl):
    """-E from rr to wlc to sh and back: each takes over at once."""
    dests = setup(ctl, "rr", [(0, 1), (1, 1), (2, 1)])
    assert syns(ctl, 2, 25000) == [RS[2], RS[1]]
    ctl.edit_service(Service(IPPROTO_TCP, VIP, VPORT, sched="wlc"))
    assert syns(ctl, 1, 25100) == [RS[0]]             # the only one with no connection
    ctl.edit_service(Service(IPPROTO_TCP, VIP, VPORT, sched="sh"))
    table = S.sh_table(dests)
    want = table[S.sh_hashkey(int.from_bytes(socket.inet_aton(CLIENT), "big"), 0)]
    assert syns(ctl, 3, 25200) == [want] * 3
    ctl.edit_service(Service(IPPROTO_TCP, VIP, VPORT, sched="rr"))
    assert syns(ctl, 3, 25300) == [RS[2], RS[1], RS[0]]
    assert ctl.save(numeric=True).splitlines()[0] == f"-A -t {VIP}:{VPORT} -s rr"
