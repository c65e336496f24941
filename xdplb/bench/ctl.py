"""Part 4: the control plane. Time to load S services x 10 destinations with
`xdplbadm -R` against `iptables-restore` of the equivalent kube-proxy-style
rules (and `ipvsadm -R` where the kernel has IPVS), then the wall time of one
more destination at that size (process start included): `xdplbadm -a`, and
for iptables what kube-proxy does, an `iptables-restore --noflush` adding one
endpoint chain and its jump. Each tool runs in a namespace of its own."""
import contextlib
import os
import statistics
import time

from . import rules
from .common import BenchError, child_env, ipvs_available, pin_folder, run_timed, tool
from .. import topology as T
from ..netns import NetnsError

DESTS = 10


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


def run(sizes=(1000, 10000), timeout=60.0, adds=3, log=None):
    log = log or (lambda m: None)
    rows, t0 = [], time.monotonic()
    tag = f"xb{os.getpid()}c"
    with contextlib.ExitStack() as stack:
        try:
            ns = stack.enter_context(T.build(T.Topology(nodes=("ctl",)), tag)).ns["ctl"]
        except NetnsError as e:
            raise BenchError(str(e)) from None
        folder = stack.enter_context(pin_folder("ctl"))
        env = child_env(XDPLB_PIN_DIR=folder)
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
        for n in sizes:
            svcs = rules.services(n, DESTS)
            # xdplbadm -R
            run_timed(cmd([*tool("xdplbadm"), "-C"]), env=env)
            text = rules.ipvsadm_restore(svcs)
            log(f"ctl: xdplbadm -R {n:,} x {DESTS} ({text.count(chr(10)):,} lines, "
                f"limit {timeout:.0f} s)")
            try:
                t, p = run_timed(cmd([*tool("xdplbadm"), "-R"]), stdin=text, env=env,
                                 timeout=timeout)
                done, loaded = p.returncode == 0, n
                if p.returncode:
                    raise BenchError(f"xdplbadm -R failed: {p.stderr.strip()[-300:]}")
            except __import__("subprocess").TimeoutExpired:
                t, done = timeout, False
                loaded = _count_xdplb(cmd, env)
            rows.append({"tool": "xdplbadm -R", "what": f"{n:,} svc x {DESTS}", "size": n,
                         "seconds": t, "done": done, "loaded": loaded})
            times = []
            for k in range(adds):
                t, p = run_timed(cmd([*tool("xdplbadm"), "-a", "-t", f"{rules.vip(1 + k)}:80",
                                      "-r", "10.255.0.1:8080", "-m"]), env=env)
                if p.returncode == 0:
                    times.append(t)
            rows.append({"tool": "xdplbadm -a", "what": f"one more dest at {loaded:,} svc",
                         "size": n, "seconds": statistics.median(times) if times else None,
                         "done": bool(times), "runs": times})
            # iptables-restore, kube-proxy style
            for table in ("nat", "filter"):
                run_timed(cmd(["iptables", "-t", table, "-F"]))
                run_timed(cmd(["iptables", "-t", table, "-X"]))
            text = rules.iptables_restore(svcs)
            nrules = sum(1 for line in text.splitlines() if line.startswith("-A"))
            log(f"ctl: iptables-restore {n:,} x {DESTS} ({nrules:,} rules)")
            try:
                t, p = run_timed(cmd(["iptables-restore"]), stdin=text, timeout=timeout * 3)
                done = p.returncode == 0
                if not done:
                    raise BenchError(f"iptables-restore failed: {p.stderr.strip()[-300:]}")
            except __import__("subprocess").TimeoutExpired:
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
            if ipvs_available():
                run_timed(cmd(["ipvsadm", "-C"]))
                t, p = run_timed(cmd(["ipvsadm", "-R"]), stdin=rules.ipvsadm_restore(svcs),
                                 timeout=timeout)
                rows.append({"tool": "ipvsadm -R", "what": f"{n:,} svc x {DESTS}", "size": n,
                             "seconds": t, "done": p.returncode == 0})
                t, p = run_timed(cmd(["ipvsadm", "-a", "-t", f"{rules.vip(1)}:80", "-r",
                                      "10.255.0.1:8080", "-m"]))
                rows.append({"tool": "ipvsadm -a", "what": f"one more dest at {n:,} svc",
                             "size": n, "seconds": t, "done": p.returncode == 0})
                run_timed(cmd(["ipvsadm", "-C"]))
        run_timed(cmd([*tool("xdplbadm"), "-C"]), env=env)
    skip = None if ipvs_available() else (
        f"ipvsadm -R / -a: skipped, kernel {os.uname().release} has no IPVS")
    return {"rows": rows, "seconds": time.monotonic() - t0, "timeout": timeout,
            "dests": DESTS, "skip": skip}
