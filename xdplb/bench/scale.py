"""`xdplb bench` part 6: scaling across CPUs.

The per-packet rows again, each run with one BPF_PROG_TEST_RUN loop on one
CPU and with one loop pinned on every CPU at once (a thread each,
os.sched_setaffinity; ctypes lets go of the GIL during the syscall, and a
test run's loop never leaves its CPU). xdplb's all-CPU/one-CPU rate ratio
is set against that of the reference program doing the same work, measured
the same way in the same run: shared atomics, shared cache lines and global
locks show up as a lower ratio, and the reference sets the bar (two vCPUs
may share a core).

    new connection   the harness of newconn.py into full tables (filled
                     first), xdplb with -s rr and with -s sh beside
                     bench_newflow; each CPU's tuples are its own (the
                     harness mixes the CPU's number into the source address)
    established      one flow per CPU, as RSS would steer them: xdplb's Masq
                     fixed point beside bench_minnat's

Rates are net of the harness's control (new connections) or of the trivial
program (established), measured the same way; every loop's counters are
checked as in part 1, summed over the loops that ran. Variants and modes
take turns, and the one-CPU loop alternates between the CPUs.
"""
import contextlib
import ctypes as C
import dataclasses
import os
import statistics
import threading
import time

from .. import bpfsys
from ..control import Control
from . import newconn, pkt, scheds
from .common import BenchError, percpu_sum

VIP_SH = "10.0.0.102"
LABELS = {"control": "new-conn harness + trivial (control)",
          "newflow": "minimal new-flow reference, full table",
          "rr": "xdplb new connection, -s rr, full table",
          "sh": "xdplb new connection, -s sh, full table",
          "trivial": "trivial XDP_TX (floor)",
          "minnat": "minimal NAT reference, one flow per CPU",
          "nat": "xdplb established NAT, one flow per CPU"}
# (xdplb variant, its reference, the baseline both are net of)
PAIRS = (("rr", "newflow", "control"), ("sh", "newflow", "control"),
         ("nat", "minnat", "trivial"))
TARGET = 0.9   # xdplb's ratio at least this share of the reference's


@dataclasses.dataclass
class Job:
    """A loop to run: prog_fd on frames[cpu]; expect as in pkt.check, per
    loop; prepare() before every run."""
    name: str
    prog_fd: int
    frames: dict
    ifindex: int
    probe: object
    expect: dict
    prepare: object = None
    repeat: int = 0         # iterations per loop, set by calibrate()


def loops(job, cpus):
    """job's loop on every CPU of cpus at once; [(verdict, ns per
    iteration, wall seconds)] in the order of cpus."""
    out, errors = [None] * len(cpus), []
    start = threading.Barrier(len(cpus))

    def loop(i, cpu):
        try:
            os.sched_setaffinity(0, {cpu})
            tr = bpfsys.ProgTestRun(job.prog_fd, len(job.frames[cpu]))
            start.wait()
            t0 = time.perf_counter()
            r = tr.run(job.frames[cpu], ingress_ifindex=job.ifindex, repeat=job.repeat)
            out[i] = (r.verdict, r.duration, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 (handed to the main thread)
            start.abort()
            errors.append(e)
    threads = [threading.Thread(target=loop, args=(i, cpu)) for i, cpu in enumerate(cpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"{job.name}: a test-run loop failed: {errors[0]}")
    return out


def calibrate(jobs, cpu, repeat, seconds):
    """Each job's iterations per loop: at least repeat, and enough for
    seconds of work, so that the loops of a run overlap (threads start a few
    ms apart). Doubles as the warm-up."""
    for job in jobs:
        if job.prepare:
            job.prepare()
        _, ns, _ = loops(dataclasses.replace(job, repeat=min(repeat, pkt.WARMUP_MAX)), [cpu])[0]
        job.repeat = max(repeat, int(seconds * 1e9 / max(ns, 1)))


def _measure(jobs, cpus, runs):
    """{name: {"one": [ns], "all": [[ns per CPU]], "wall": [[s]], "ok": bool,
    "bad": [...]}} over runs rounds of every job, one CPU then all."""
    res = {j.name: {"one": [], "all": [], "wall": [], "bad": [], "verdicts": set(),
                    "repeat": j.repeat} for j in jobs}
    for r in range(runs):
        for job in jobs:
            for mode, on in (("one", [cpus[r % len(cpus)]]), ("all", cpus)):
                if job.prepare:
                    job.prepare()
                before = job.probe() if job.probe else {}
                got = loops(job, on)
                after = job.probe() if job.probe else {}
                d = res[job.name]
                d["verdicts"] |= {pkt.VERDICTS.get(v, str(v)) for v, _, _ in got}
                ok, text = pkt.check([{k: after[k] - before[k] for k in after}], job.expect,
                                     job.repeat * len(on))
                if not ok:
                    d["bad"].append(f"{mode}: {text}")
                if mode == "one":
                    d["one"].append(got[0][1])
                else:
                    d["all"].append([ns for _, ns, _ in got])
                    d["wall"].append([s for _, _, s in got])
    return res


def _setup(st, b, fds, ifindex, cpus, log):
    """Services, full tables and per-CPU flows; the jobs."""
    bc0 = ifindex["bc0"]
    for idx in ifindex.values():
        st.tx_ports.put(idx, C.c_uint32(idx))
    ctl = Control(st)
    rr = scheds.add_service(ctl, pkt.VIP, "rr", 3)
    sh = scheds.add_service(ctl, VIP_SH, "sh", 3)
    h = newconn.Harness(b, fds, bc0)
    nf = newconn.NewFlow(b, h)
    log(f"scale: filling both tables ({nf.max_entries:,} and {st.conns.max_entries:,} new "
        "connections)")
    h.fill(fds["bench_newflow"], nf.max_entries)
    h.fill(st.prog_fd, st.conns.max_entries)
    est = {cpu: pkt.establish_nat(st, ifindex, pkt.CPORT + 1 + i)[0]
           for i, cpu in enumerate(cpus)}
    mn = {cpu: pkt.minnat_flow(b, pkt.CPORT + 1 + i) for i, cpu in enumerate(cpus)}
    hits = b[b"mn_hits"]

    def harness(name, target_fd, probe, expect, vip=pkt.VIP):
        t = h.timed(name, target_fd, 0, probe, vip=vip)
        return Job(name, h.fd, {cpu: t.frame for cpu in cpus}, bc0, t.probe, expect, t.prepare)
    return [
        harness("control", fds["bench_trivial"], None, {"harness.seq": 1}),
        harness("newflow", fds["bench_newflow"], nf.probe, newconn.NewFlow.PROOF),
        harness("rr", st.prog_fd, pkt.probe(st, bench_maps=h.maps, svc=rr),
                newconn.XDPLB_PROOF),
        harness("sh", st.prog_fd, pkt.probe(st, bench_maps=h.maps, svc=sh),
                newconn.XDPLB_PROOF, VIP_SH),
        Job("trivial", fds["bench_trivial"], est, bc0, None, {}),
        Job("minnat", fds["bench_minnat"], mn, bc0,
            lambda: {"minnat.hits": percpu_sum(hits)}, {"minnat.hits": 1}),
        Job("nat", st.prog_fd, est, bc0, pkt.probe(st, svc=rr),
            {"svc.inpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0}),
    ]


def run(repeat=1_000_000, runs=5, seconds=1.0, log=None):
    """repeat: iterations per loop at least; seconds: of work per loop at least."""
    log = log or (lambda m: None)
    t0 = time.monotonic()
    cpus = sorted(os.sched_getaffinity(0))
    meta = {"cpus": cpus, "repeat": repeat, "runs": runs, "seconds_per_loop": seconds}
    if len(cpus) < 2:
        return {**meta, "skip": "this process may run on one CPU only", "rows": [],
                "pairs": [], "seconds": 0.0}
    with contextlib.ExitStack() as stack:
        log("scale: compiling bpf/xdplb.c and the reference programs")
        st = stack.enter_context(pkt.private_state())
        b, fds = pkt.compile_reference(st)
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}c"))
        jobs = _setup(st, b, fds, ifindex, cpus, log)
        calibrate(jobs, cpus[0], repeat, seconds)
        log(f"scale: {len(jobs)} variants on 1 and on {len(cpus)} CPUs, {runs} rounds")
        res = _measure(jobs, cpus, runs)
    rows = _rows(res)
    return {**meta, "rows": rows, "pairs": _pairs(rows), "seconds": time.monotonic() - t0}


def _rows(res):
    """Per variant: median ns on one CPU and per loop on all CPUs; net of
    the variant's baseline at the same width, the rates and their ratio."""
    base_of = {x: b for x, _, b in PAIRS} | {r: b for _, r, b in PAIRS}
    rows = []
    for name, d in res.items():
        ok = not d["bad"] and (d["verdicts"] <= {"TX", "REDIRECT"})
        row = {"name": name, "label": LABELS[name], "repeat": d["repeat"],
               "one_ns": statistics.median(d["one"]),
               "all_ns": statistics.median(ns for run in d["all"] for ns in run),
               "overlap": statistics.median(min(w) / max(w) for w in d["wall"]),
               "ok": ok, "proof": "; ".join(d["bad"]) or "counters = repeat x loops, every run",
               "verdict": "/".join(sorted(d["verdicts"])), "reference": name in
               ("control", "newflow", "trivial", "minnat")}
        rows.append(row)
    by = {r["name"]: r for r in rows}
    for r in rows:
        base = by.get(base_of.get(r["name"]))
        if base is None:
            continue
        d, ncpu = res[r["name"]], len(res[r["name"]]["all"][0])
        one = [1e9 / max(ns - base["one_ns"], 1e-3) for ns in d["one"]]
        every = [sum(1e9 / max(ns - base["all_ns"], 1e-3) for ns in run) for run in d["all"]]
        # Each round's all-CPU run right after its one-CPU run: their ratio
        # is paired, so a slow stretch of the machine hits both.
        ratios = [e / o for e, o in zip(every, one)]
        r.update(net_one_ns=r["one_ns"] - base["one_ns"], net_all_ns=r["all_ns"] - base["all_ns"],
                 one_mpps=statistics.median(one) / 1e6, all_mpps=statistics.median(every) / 1e6,
                 cpus=ncpu, ratio=statistics.median(ratios), ratio_runs=ratios)
    return rows


def _pairs(rows):
    by = {r["name"]: r for r in rows}
    out = []
    for x, ref, _ in PAIRS:
        if "ratio" not in by.get(x, {}) or "ratio" not in by.get(ref, {}):
            continue
        rel = by[x]["ratio"] / by[ref]["ratio"]
        out.append({"xdplb": x, "reference": ref, "label": by[x]["label"],
                    "ref_label": by[ref]["label"], "ratio": by[x]["ratio"],
                    "ref_ratio": by[ref]["ratio"], "relative": rel, "target": TARGET,
                    "ok": by[x]["ok"] and by[ref]["ok"]})
    return out
