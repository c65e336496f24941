"""Part `checks` (not in the default set: `xdplb bench --parts checks`): the
health checkers of `xdplb daemon -f` (xdplb/keepalived/checkers.py), the
real code on its real schedule, against 1,000 real servers at delay_loop 1.

The real servers are addresses 127.1.x.y of one port (8080, tiny asyncio
HTTP servers in SERVERS child processes, SO_REUSEPORT)
inside a namespace of the bench's own. The checkers run in this process on one asyncio loop, exactly
as the daemon runs them, for `seconds` after a first delay_loop of warm-up.
Reported per checker kind:

* checks per second (it holds the schedule when that is servers / delay_loop);
* the checker's CPU seconds (this process's user + system time; MISC_CHECK
  adds its children's) and checks per second per core = checks / CPU s;
* the schedule's slip: how much later than delay_loop each real server's
  next check started (p50, p99, max).

MISC_CHECK is measured apart with fewer servers: each check forks a process.
"""
import asyncio
import os
import resource
import subprocess
import sys
import time

from ..keepalived import checkers
from ..keepalived.model import Check, Script, Url
from ..netns import NetNs
from .common import child_env

PORT = 8080
SERVERS = 1
SERVER = r"""
import asyncio, sys
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
async def serve(r, w):
    try:
        await r.read(1)          # a TCP_CHECK closes at once; a GET sends its request
        w.write(ANSWER)
        await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(serve, "0.0.0.0", int(sys.argv[1]), backlog=4096,
                                     reuse_port=True)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


def real_servers(n):
    return [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]


def make_check(kind, addr, delay_loop):
    base = dict(addr=addr, port=PORT, connect_timeout=1.0, retry=1, delay_before_retry=1.0,
                delay_loop=delay_loop, alpha=False)
    if kind == "HTTP_GET":
        return Check("HTTP_GET", urls=(Url("/"),), **base)
    if kind == "MISC_CHECK":
        return Check("MISC_CHECK", script=Script(("/bin/true",), os.getuid(), os.getgid()),
                     misc_timeout=5.0, **base)
    return Check(kind, **base)


def _cpu(children):
    ru = resource.getrusage(resource.RUSAGE_SELF)
    t = ru.ru_utime + ru.ru_stime
    if children:
        rc = resource.getrusage(resource.RUSAGE_CHILDREN)
        t += rc.ru_utime + rc.ru_stime
    return t


async def _measure(kind, n, delay_loop, seconds):
    last, slips, outcome = {}, [], {"checks": 0, "failed": 0}
    measuring = False

    def reporter(i):
        def report(ok, weight, final):
            now = time.monotonic()
            if measuring:
                outcome["checks"] += 1
                outcome["failed"] += not ok
                if i in last:
                    slips.append(now - last[i] - delay_loop)
            last[i] = now
        return report
    tasks = [asyncio.create_task(checkers.schedule(make_check(kind, a, delay_loop), reporter(i)))
             for i, a in enumerate(real_servers(n))]
    await asyncio.sleep(delay_loop)             # every checker has started
    measuring = True
    cpu0, t0 = _cpu(kind == "MISC_CHECK"), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = _cpu(kind == "MISC_CHECK") - cpu0, time.monotonic() - t0
    measuring = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    slips.sort()

    def pct(p):
        return slips[min(len(slips) - 1, int(p * len(slips)))] * 1000 if slips else None
    return {"kind": kind, "servers": n, "delay_loop": delay_loop, "seconds": wall,
            "checks": outcome["checks"], "failed": outcome["failed"],
            "per_second": outcome["checks"] / wall, "target_per_second": n / delay_loop,
            "cpu_seconds": cpu, "per_core": outcome["checks"] / cpu if cpu else None,
            "slip_ms_p50": pct(0.5), "slip_ms_p99": pct(0.99),
            "slip_ms_max": slips[-1] * 1000 if slips else None}


def run(servers=1000, misc_servers=100, delay_loop=1.0, seconds=10.0, log=None):
    log = log or (lambda m: None)
    ns = NetNs.create(f"xdplbb-{os.getpid()}-chk")
    procs = []
    try:
        ns.link_up("lo")
        for _ in range(SERVERS):
            procs.append(subprocess.Popen(ns.cmd([sys.executable, "-c", SERVER, str(PORT)]),
                                            stdout=subprocess.PIPE, env=child_env(), text=True))
            if procs[-1].stdout.readline().strip() != "ready":
                raise RuntimeError("the bench's check server did not start")
        rows = []
        with ns.entered():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
            for kind, n in (("TCP_CHECK", servers), ("HTTP_GET", servers),
                            ("MISC_CHECK", misc_servers)):
                log(f"checks: {kind} x {n} at delay_loop {delay_loop:g} for {seconds:g} s")
                rows.append(asyncio.run(_measure(kind, n, delay_loop, seconds)))
        return {"rows": rows}
    finally:
        for server in procs:
            server.kill()
            server.wait()
        ns.delete()


def markdown(c):
    out = ["## Health checks (`xdplb daemon -f`: keepalived's checkers on one asyncio loop)",
           "",
           "Real servers on one loopback port in a namespace of the "
           "bench's own; the "
           "checkers are xdplb/keepalived/checkers.py on their real schedule. It holds the "
           "schedule when checks/s is servers / delay_loop; slip is how much later than "
           "delay_loop a server's next check came. MISC_CHECK forks /bin/true per check "
           "(its CPU includes the children).", "",
           "| checker | servers | delay_loop s | checks/s (target) | failed | CPU s | "
           "checks/s per core | slip p50 / p99 / max ms |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in c["rows"]:
        out.append(f"| {r['kind']} | {r['servers']:,} | {r['delay_loop']:g} | "
                   f"{r['per_second']:,.0f} ({r['target_per_second']:,.0f}) | {r['failed']} | "
                   f"{r['cpu_seconds']:.2f} | {r['per_core'] or 0:,.0f} | "
                   f"{r['slip_ms_p50'] or 0:.1f} / {r['slip_ms_p99'] or 0:.1f} / "
                   f"{r['slip_ms_max'] or 0:.1f} |")
    return "\n".join(out)
