"""Part 4: the control plane. Time to load S services x 10 destinations with
`xdplbadm -R` (rr; wrr with weights 1..10; mh at the most services its
4,093-entry tables leave room for) against `iptables-restore` of the
equivalent kube-proxy-style rules (and `ipvsadm -R` where the kernel has
IPVS), then the wall time of one more destination (process start included):
`xdplbadm -a`, runs interleaved with the same command against a state of 10
services, and for iptables what kube-proxy does, an `iptables-restore
--noflush` adding one endpoint chain and its jump. Each tool runs in a
namespace of its own. The tools run as installed: with their bytecode
cached (PYTHONDONTWRITEBYTECODE is dropped; a first call writes it)."""
import contextlib
import os
import statistics
import subprocess
import time

from . import rules
from .common import BenchError, child_env, ipvs_available, pin_folder, run_timed, tool
from .. import topology as T
from ..netns import NetnsError
from ..structs import XDPLB_MAX_RING, XDPLB_MH_TAB_SIZE

DESTS = 10
SMALL = 10                                    # services of the state one -a is compared with
MH_SERVICES = XDPLB_MAX_RING // XDPLB_MH_TAB_SIZE // 10 * 10   # 250: what mh's tables fit


def _count_xdplb(cmd, env):
    _, p = run_timed(cmd([*tool("xdplbadm"), "-S", "-n"]), env=env, timeout=300)
    return sum(1 for line in p.stdout.splitlines() if line.startswith("-A"))


def _one_more_ipt(n):
    """kube-proxy's change for one new endpoint of service 1 (--noflush)."""
    v = rules.vip(1)
    svc = rules._chain("KUBE-SVC", v, 80, "tcp")
    sep = rules._chain("KUBE-SEP", v, "10.255.0.1", 8080)
    return ("*nat\n"
            f":{sep} - [0:0]\n"
            f"-I {svc} 1 -m statistic --mode random --probability 0.09090909091 -j {sep}\n"
            f"-A {sep} -s 10.255.0.1/32 -j KUBE-MARK-MASQ\n"
            f"-A {sep} -p tcp -m tcp -j DNAT --to-destination 10.255.0.1:8080\n"
            "COMMIT\n")


def _restore(cmd, env, n, sched, timeout, log):
    """One xdplbadm -R of n services x DESTS after -C: a result row."""
    weights = (lambda j: j + 1) if sched == "wrr" else None
    text = rules.ipvsadm_restore(rules.services(n, DESTS), sched=sched, weights=weights)
    run_timed(cmd([*tool("xdplbadm"), "-C"]), env=env)
    what = f"{n:,} svc x {DESTS}, -s {sched}" + (", weights 1..10" if weights else "")
    log(f"ctl: xdplbadm -R {what} ({text.count(chr(10)):,} lines, limit {timeout:.0f} s)")
    try:
        t, p = run_timed(cmd([*tool("xdplbadm"), "-R"]), stdin=text, env=env, timeout=timeout)
        if p.returncode:
            raise BenchError(f"xdplbadm -R failed: {p.stderr.strip()[-300:]}")
        done, loaded = True, n
    except subprocess.TimeoutExpired:
        t, done = timeout, False
        loaded = _count_xdplb(cmd, env)
    return {"tool": "xdplbadm -R", "what": what, "size": n, "sched": sched, "seconds": t,
            "done": done, "loaded": loaded}


def _one_more_dest(cmd, env, small_env, n, runs, log):
    """Medians of one `xdplbadm -a` against the n-service state and against
    the SMALL-service one, runs interleaved (a different new destination
    each time: 10.255.<n % 256>.<run>)."""
    log(f"ctl: one xdplbadm -a at {n:,} and at {SMALL} services, {runs} runs each")
    times = {n: [], SMALL: []}
    for k in range(runs):
        for size, e in ((n, env), (SMALL, small_env)):
            t, p = run_timed(cmd([*tool("xdplbadm"), "-a", "-t", f"{rules.vip(1)}:80", "-r",
                                  f"10.255.{n % 256}.{k % 250 + 1}:8080", "-m"]), env=e)
            if p.returncode:
                raise BenchError(f"xdplbadm -a failed: {p.stderr.strip()[-300:]}")
            times[size].append(t)
    big, small = (statistics.median(times[s]) if times[s] else None for s in (n, SMALL))
    return {"tool": "xdplbadm -a", "what": f"one more dest at {n:,} svc", "size": n,
            "seconds": big, "done": bool(times[n]), "runs": times[n],
            "small_seconds": small, "ratio": big / small if big and small else None}


def _iptables(cmd, n, timeout, log):
    for table in ("nat", "filter"):
        run_timed(cmd(["iptables", "-t", table, "-F"]))
        run_timed(cmd(["iptables", "-t", table, "-X"]))
    text = rules.iptables_restore(rules.services(n, DESTS))
    nrules = sum(1 for line in text.splitlines() if line.startswith("-A"))
    log(f"ctl: iptables-restore {n:,} x {DESTS} ({nrules:,} rules)")
    rows = []
    try:
        t, p = run_timed(cmd(["iptables-restore"]), stdin=text, timeout=timeout * 3)
        done = p.returncode == 0
        if not done:
            raise BenchError(f"iptables-restore failed: {p.stderr.strip()[-300:]}")
    except subprocess.TimeoutExpired:
        t, done = timeout * 3, False
    rows.append({"tool": "iptables-restore", "what": f"{n:,} svc x {DESTS} "
                 f"({nrules:,} rules)", "size": n, "seconds": t, "done": done})
    if done:
        t, p = run_timed(cmd(["iptables-restore", "--noflush"]), stdin=_one_more_ipt(n),
                         timeout=timeout)
        rows.append({"tool": "iptables-restore --noflush",
                     "what": f"one more endpoint at {n:,} svc", "size": n,
                     "seconds": t, "done": p.returncode == 0})
    for table in ("nat", "filter"):
        run_timed(cmd(["iptables", "-t", table, "-F"]))
        run_timed(cmd(["iptables", "-t", table, "-X"]))
    return rows


def _ipvsadm(cmd, n, timeout):
    run_timed(cmd(["ipvsadm", "-C"]))
    t, p = run_timed(cmd(["ipvsadm", "-R"]), stdin=rules.ipvsadm_restore(
        rules.services(n, DESTS)), timeout=timeout)
    rows = [{"tool": "ipvsadm -R", "what": f"{n:,} svc x {DESTS}", "size": n, "seconds": t,
             "done": p.returncode == 0}]
    t, p = run_timed(cmd(["ipvsadm", "-a", "-t", f"{rules.vip(1)}:80", "-r", "10.255.0.1:8080",
                          "-m"]))
    rows.append({"tool": "ipvsadm -a", "what": f"one more dest at {n:,} svc", "size": n,
                 "seconds": t, "done": p.returncode == 0})
    run_timed(cmd(["ipvsadm", "-C"]))
    return rows


def run(sizes=(1000, 10000), timeout=60.0, adds=15, log=None):
    log = log or (lambda m: None)
    rows, t0 = [], time.monotonic()
    tag = f"xb{os.getpid()}c"
    with contextlib.ExitStack() as stack:
        try:
            ns = stack.enter_context(T.build(T.Topology(nodes=("ctl",)), tag)).ns["ctl"]
        except NetnsError as e:
            raise BenchError(str(e)) from None
        folder = stack.enter_context(pin_folder("ctl"))
        small = stack.enter_context(pin_folder("ctl10"))
        base = child_env()
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        env, small_env = dict(base, XDPLB_PIN_DIR=folder), dict(base, XDPLB_PIN_DIR=small)
        cmd = ns.cmd

        # The first configuration command of a netns compiles and pins the data
        # path (once per host boot / netns); it is timed apart.
        log("ctl: first xdplbadm call (compiles and pins the data path)")
        t, p = run_timed(cmd([*tool("xdplbadm"), "-A", "-t", "192.0.2.1:1", "-s", "rr"]),
                         env=env)
        if p.returncode:
            raise BenchError(f"xdplbadm -A failed: {p.stderr.strip()}")
        rows.append({"tool": "xdplbadm", "what": "first call in a netns (compile + pin)",
                     "size": 0, "seconds": t, "done": True})
        _, p = run_timed(cmd([*tool("xdplbadm"), "-R"]), env=small_env, stdin=rules.
                         ipvsadm_restore(rules.services(SMALL, DESTS)))
        if p.returncode:
            raise BenchError(f"xdplbadm -R failed: {p.stderr.strip()[-300:]}")
        for n in sizes:
            rows.append(_restore(cmd, env, n, "rr", timeout, log))
            rows.append(_one_more_dest(cmd, env, small_env, rows[-1]["loaded"], adds, log))
            rows.append(_restore(cmd, env, n, "wrr", timeout, log))
            rows += _iptables(cmd, n, timeout, log)
            if ipvs_available():
                rows += _ipvsadm(cmd, n, timeout)
        rows.append(_restore(cmd, env, min(MH_SERVICES, max(sizes)), "mh", timeout, log))
        run_timed(cmd([*tool("xdplbadm"), "-C"]), env=env)
    skip = None if ipvs_available() else (
        f"ipvsadm -R / -a: skipped, kernel {os.uname().release} has no IPVS")
    return {"rows": rows, "seconds": time.monotonic() - t0, "timeout": timeout,
            "dests": DESTS, "small": SMALL, "skip": skip}
