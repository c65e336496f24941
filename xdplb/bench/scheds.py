"""Part 1, continued: a new connection per scheduler.

One row per scheduler xdplb.model knows (model.SCHED_IDS) with 3 Masq
destinations, and the list schedulers, which walk their destinations, with
XDPLB_LIST_MAX (64) too. Each service is configured through the control API
(xdplb/control.py) exactly as `xdplbadm -A -s NAME` / `-a ... -m -w W` would.
Every row is the harness of newconn.py (a never-seen SYN per iteration) into
a table emptied before each run, all rows taking turns with the harness's
control and the floor, so each is raw - control + floor and its ratio to the
rr row net of the floor is (raw - control) / (raw rr - control), the median
over the runs (targets.net_ratio).
"""
import contextlib
import ctypes as C
import os
import statistics

from .. import model
from ..control import Control
from ..structs import XDPLB_LIST_MAX
from . import newconn, pkt, targets

LIST_SCHEDS = ("lc", "wlc", "sed", "nq", "fo", "ovf")
FEW, MANY = 3, XDPLB_LIST_MAX


def part(name, n):
    return f"sched-{name}" if n == FEW else f"sched-{name}-{n}"


def _weights(name, n):
    # ovf sends to the heaviest destination until it has more active
    # connections than its weight: weights near 65535 keep that from happening.
    return [65536 - w if name == "ovf" else w for w in range(1, n + 1)]


def add_service(ctl, vip, name, n, rport=pkt.RPORT):
    """A Masq service vip:80 with n real servers on rport (weights 1..n);
    its slot."""
    key = (model.IPPROTO_TCP, vip, pkt.VPORT)
    ctl.add_service(model.Service(*key, sched=name))
    for w, rs in zip(_weights(name, n), pkt.RSS[:n]):
        ctl.add_dest(key, model.Destination(rs, rport, fwd=0, weight=w))
    return ctl.get_service(*key).slot


def run(repeat, runs, log):
    """The rows, in plan order (rr first); skipped schedulers say why."""
    plan = [(name, FEW) for name in model.SCHED_IDS] + [(name, MANY) for name in LIST_SCHEDS]
    fresh = min(repeat, newconn.FRESH_MAX)
    rows = []
    with contextlib.ExitStack() as stack:
        st = stack.enter_context(pkt.private_state())
        b, fds = pkt.compile_reference()
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}s"))
        for idx in ifindex.values():
            st.tx_ports.put(idx, C.c_uint32(idx))
        ctl = Control(st)
        h = newconn.Harness(b, fds, ifindex["bc0"])

        def empty():  # an emptied table, and the live per-destination counts with it
            pkt.empty_conns(st)
            ctl.sweep()
        est = pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK,
                            pkt.CLIENT_MAC)
        timed = [pkt.Timed("trivial", fds["bench_trivial"], est, ifindex["bc0"], fresh),
                 h.timed("control", fds["bench_trivial"], fresh)]
        for k, (name, n) in enumerate(plan, 1):
            vip = f"10.0.2.{k}"
            try:   # a port of its own: a real server addr:port is in 8 services at most
                slot = add_service(ctl, vip, name, n, pkt.RPORT + k)
            except model.XdplbError as e:
                rows.append({"part": part(name, n), "sched": name, "dests": n,
                             "label": f"new connection, -s {name}, {n} dests", "skip": e.message})
                continue
            timed.append(h.timed(part(name, n), st.prog_fd, fresh,
                                 pkt.probe(st, bench_maps=h.maps, svc=slot), empty, vip))
        log(f"pkt: new connection per scheduler ({len(timed) - 2} rows taking turns)")
        res = pkt.interleave(timed, runs)
    floor = statistics.median(res["trivial"][0])
    control = statistics.median(res["control"][0])
    for name, n in plan:
        if part(name, n) not in res:
            continue
        times, deltas, verdicts = res[part(name, n)]
        ok, proof = pkt.check(deltas, newconn.XDPLB_PROOF, fresh)
        net = [t - control + floor for t in times]
        rows.append({"part": part(name, n), "sched": name, "dests": n,
                     "label": f"xdplb new connection, -s {name}, {n} Masq dests (weights "
                              f"1..{n}, SYN, table with room)",
                     "ns": statistics.median(net), "runs_ns": net, "ok": ok, "proof": proof,
                     "verdict": "/".join(sorted(verdicts)), "floor": floor,
                     "x_floor": statistics.median(net) / floor})
    rows.sort(key=lambda r: plan.index((r["sched"], r["dests"])))
    rr = next((r for r in rows if r["part"] == "sched-rr" and "ns" in r), None)
    for r in rows:
        if rr and "ns" in r:
            r["x_rr"] = targets.net_ratio(r, rr, floor)
    return rows
