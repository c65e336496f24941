"""Part 3: connections per second and connect-to-close latency through a real
balancer hop, every variant with the same client, server and topology.

    client ns: c0 --veth-- lb ns: l0 [balancer] l1 --veth-- rs ns: s0 [server]

The server (`python -m xdplb.bench.cps server`, in the real server's
namespace) accepts, reads the request, writes a 63-byte HTTP/1.0 answer and
closes, in SERVER_PROCS forked processes sharing one listening socket. The
client (`python -m xdplb.bench.cps client`, in the client's namespace) forks
W workers; each one loops connect / send GET / read to EOF / close, timing
every cycle with time.perf_counter_ns, until its share of the count is done
or the time is up. The server closes first, so TIME_WAIT sits on the server
and the client's ports come back at once (its port range is 1024-65535).
Both run at nice -10, so that other work on the host disturbs them less, and
the variants are measured in turn over several rounds (conn/s is the median
round, p50/p99 are over every round's connections), so that a burst of other
work spreads over all of them. Variants differ only in the balancer namespace:

    plain      no balancing: the client connects to the real server's own
               address, routed through the balancer (the reference: what the
               client, the server and the two veth hops cost on their own)
    xdplb      xdplb attached natively to l0 and l1, one -t service (-m)
    nft        an nftables DNAT map (conntrack)
    iptables   kube-proxy-style chains for N services (conntrack), the
               benchmark's service in the middle of KUBE-SERVICES
    ipvs       kernel IPVS (-m), where the kernel has it

Everything runs on this host's CPUs: the client, the server and the softirqs
of the three namespaces. A veth transmit runs the peer's NAPI poll (and the
balancer's XDP program or netfilter hooks) on the sending CPU, in the
sender's context, and this kernel accounts CPU time by tick without separate
IRQ time, so the client's and the server's user + system time (the client's
workers over the measured loop, the server's processes around it) is the
whole chain's CPU cost; divided by the connections made it gives CPU µs per
connection, and its excess over plain is the balancer's share. That figure
does not depend on what else the host runs; the rate and the latencies do
(/proc/stat's host-wide busy share is recorded with every row).
"""
import argparse
import array
import contextlib
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import common, rules
from .. import topology as T
from ..netns import NetnsError
from .common import (LB_CL_IP, RPORT, RS_IP, VIP, VPORT, BenchError, Topo, child_env,
                     ipvs_available, pin_folder, tool)

SERVER_PROCS = 2
REQUEST = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
RESPONSE = (b"HTTP/1.0 200 OK\r\nServer: xdplb-bench\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nok\n")
CYCLE_TIMEOUT = 3.0     # seconds one connect/request/close may take (a SYN retry is 1 s)
PORT_RANGE = "1024 65535"
# The client and the server run at this niceness, so that whatever else the
# host runs (at 0) takes less of the CPUs they share with the balancer.
NICE = -10
# The bench topology, where the client also reaches the real server's own
# address through the balancer (the plain variant) from every port.
TOPOLOGY = dataclasses.replace(
    common.TOPOLOGY, routes=(*common.TOPOLOGY.routes, T.Route("cl", f"{RS_IP}/32", via=LB_CL_IP)),
    sysctls=(*common.TOPOLOGY.sysctls, T.Sysctl("cl", "net.ipv4.ip_local_port_range", PORT_RANGE)))


# ---- the two programs that run inside the namespaces ---------------------------------

def _die_with_parent():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)           # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)


def serve(port, procs=SERVER_PROCS, out=sys.stdout, host="127.0.0.1"):
    """Accept / read / answer / close forever, in procs processes, on host
    (the benchmark passes the real server's address in its own namespace)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(4096)
    pids = [os.getpid()]
    for _ in range(procs - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            break
        pids.append(pid)
    else:
        out.write("ready " + " ".join(map(str, pids)) + "\n")
        out.flush()
    while True:
        try:
            c, _ = ls.accept()
        except InterruptedError:
            continue
        try:
            c.recv(4096)
            c.sendall(RESPONSE)
        except OSError:
            pass
        c.close()


def _cycle(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(CYCLE_TIMEOUT)
        s.connect(addr)
        s.sendall(REQUEST)
        got = 0
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += len(b)
        return got == len(RESPONSE)
    except OSError:
        return False
    finally:
        s.close()


def _worker(addr, count, seconds, warmup, ready_w, go_r, out_w):
    """One client worker: warm up, wait for go, loop; write a header
    (ok, errors, first start ns, last end ns, CPU ns of the loop) and the
    latencies to out_w."""
    for _ in range(warmup):
        _cycle(addr)
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    lat = array.array("q")
    errors = 0
    pc = time.perf_counter_ns
    cpu0 = os.times()
    start = pc()
    deadline = start + int(seconds * 1e9)
    end = start
    for i in range(count):
        t0 = pc()
        ok = _cycle(addr)
        end = pc()
        if ok:
            lat.append(end - t0)
        else:
            errors += 1
        if end > deadline:
            break
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    head = array.array("q", [len(lat), errors, start, end, int(cpu * 1e9)])
    data = head.tobytes() + lat.tobytes()
    view = memoryview(data)
    while view:
        view = view[os.write(out_w, view):]
    os.close(out_w)


HEAD = 5 * 8     # a worker's header: conns, errors, start ns, end ns, CPU ns


def cpu_busy():
    """(busy seconds, total seconds) of all CPUs, from /proc/stat (host-wide)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return (total - idle) / hz, total / hz


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = max(0, math.ceil(q / 100 * len(sorted_vals)) - 1)     # nearest rank
    return sorted_vals[k]


def client(host, port, workers, count, seconds, warmup, lat_out=None):
    """Run the workers; returns the summary dict the orchestrator reads and,
    with lat_out, writes every latency (ns, int64) to that file."""
    addr = (host, port)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    kids = []
    per = max(1, count // workers)
    for _ in range(workers):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                os.close(out_r)
                _worker(addr, per, seconds, warmup, ready_w, go_r, out_w)
            except BaseException:      # noqa: BLE001 (a child never returns)
                code = 1
            finally:
                os._exit(code)
        os.close(out_w)
        kids.append((pid, out_r))
    for _ in range(workers):
        os.read(ready_r, 1)
    busy0, tot0 = cpu_busy()
    os.write(go_w, b"g" * workers)
    lat, errors, starts, ends, cpu_ns = array.array("q"), 0, [], [], 0
    for pid, out_r in kids:
        chunks = []
        while True:
            b = os.read(out_r, 1 << 20)
            if not b:
                break
            chunks.append(b)
        os.close(out_r)
        os.waitpid(pid, 0)
        data = b"".join(chunks)
        if len(data) < HEAD:
            raise SystemExit(f"client worker {pid} failed")
        head = array.array("q")
        head.frombytes(data[:HEAD])
        n, e, s, t, c = head
        part = array.array("q")
        part.frombytes(data[HEAD:HEAD + 8 * n])
        cpu_ns += c
        lat.extend(part)
        errors += e
        starts.append(s)
        ends.append(t)
    busy1, tot1 = cpu_busy()
    wall = (max(ends) - min(starts)) / 1e9
    if lat_out:
        with open(lat_out, "wb") as f:
            lat.tofile(f)
    vals = sorted(lat)
    n = len(vals)
    return {"workers": workers, "conns": n, "errors": errors, "seconds": wall,
            "cps": n / wall if wall > 0 else None,
            "p50_us": percentile(vals, 50) / 1e3 if n else None,
            "p99_us": percentile(vals, 99) / 1e3 if n else None,
            "client_cpu_s": cpu_ns / 1e9,
            "cpu_busy_s": busy1 - busy0, "cpu_total_s": tot1 - tot0}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xdplb.bench.cps",
                                description="connect/close benchmark server and client")
    p.add_argument("--nice", type=int, default=0, help="add this to the niceness first")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=RPORT)
    s.add_argument("--procs", type=int, default=SERVER_PROCS)
    s.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--workers", type=int, default=1)
    c.add_argument("--count", type=int, default=1000, help="connections at most (all workers)")
    c.add_argument("--seconds", type=float, default=3.0, help="time limit of the loop")
    c.add_argument("--warmup", type=int, default=20, help="connections per worker first")
    c.add_argument("--lat-out", help="write every latency (ns, native int64) to this file")
    a = p.parse_args(argv)
    if a.nice:
        os.nice(a.nice)
    if a.cmd == "server":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        serve(a.port, a.procs, host=a.bind)
    else:
        print(json.dumps(client(a.host, a.port, a.workers, a.count, a.seconds, a.warmup,
                                a.lat_out)))


# ---- variants (the balancer namespace) -------------------------------------------------

class Variant:
    """setup() before each round's measurements, teardown() after them,
    close() once at the end."""
    key = label = ""
    skip = None
    target = (VIP, VPORT)

    def __init__(self, topo, n=1):
        self.topo, self.n = topo, n

    def lb(self, argv, **kw):
        return self.topo.run("lb", argv, **kw)

    def svcs(self):
        return rules.services(self.n, 1, target=(self.n // 2, VIP, [(RS_IP, RPORT)]))

    def setup(self):
        pass

    def teardown(self):
        pass

    def close(self):
        pass


class Plain(Variant):
    key, label = "plain", "plain IP forwarding (no balancing, reference)"
    target = (RS_IP, RPORT)


class Xdplb(Variant):
    """Compiled, pinned and configured once; each round attaches and detaches."""
    key = "xdplb"
    _pins = None

    @property
    def label(self):
        return "xdplb (XDP, -m)" + (f", {self.n:,} svc" if self.n > 1 else "")

    def setup(self):
        first = self._pins is None
        if first:
            self._pins = pin_folder("cps")
            self.env = child_env(XDPLB_PIN_DIR=self._pins.__enter__())
        try:
            self.lb([*tool("xdplb"), "attach", "--mode", "native", "l0", "l1"], env=self.env,
                    timeout=600)
            if first:
                self.lb([*tool("xdplbadm"), "-R"], input=rules.ipvsadm_restore(self.svcs()),
                        env=self.env, timeout=180)
        except BaseException:
            self.teardown()
            raise

    def teardown(self):
        # Naming the interfaces keeps the pinned state (and its services).
        self.lb([*tool("xdplb"), "detach", "l0", "l1"], env=self.env, check=False)

    def close(self):
        if self._pins is not None:
            self.lb([*tool("xdplb"), "detach"], env=self.env, check=False)
            self._pins.__exit__(None, None, None)
            self._pins = None


class Nft(Variant):
    key, label = "nft", "nftables DNAT (map)"

    def setup(self):
        self.lb(["nft", "-f", "-"], input=rules.nft_dnat(self.svcs(), proto="tcp"))

    def teardown(self):
        self.lb(["nft", "delete", "table", "ip", "xbench"], check=False)


class Iptables(Variant):
    key = "iptables"

    @property
    def label(self):
        return f"iptables DNAT, kube-proxy chains, {self.n:,} svc"

    def setup(self):
        t0 = time.monotonic()
        self.lb(["iptables-restore"], input=rules.iptables_restore(self.svcs(), proto="tcp"),
                timeout=600)
        self.load_s = time.monotonic() - t0

    def teardown(self):
        for table in ("nat", "filter"):
            self.lb(["iptables", "-t", table, "-F"], check=False)
            self.lb(["iptables", "-t", table, "-X"], check=False)


class Ipvs(Variant):
    key, label = "ipvs", "kernel IPVS (-m)"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        if not ipvs_available():
            self.skip = (f"kernel {os.uname().release} has no IPVS (no /proc/net/ip_vs; "
                         "no loadable modules)")

    def setup(self):
        self.topo.ns["lb"].addr("replace", "lo", f"{VIP}/32")  # IPVS serves local VIPs
        self.lb(["ipvsadm", "-A", "-t", f"{VIP}:{VPORT}", "-s", "rr"])
        self.lb(["ipvsadm", "-a", "-t", f"{VIP}:{VPORT}", "-r", f"{RS_IP}:{RPORT}", "-m"])

    def teardown(self):
        self.lb(["ipvsadm", "-C"], check=False)
        with contextlib.suppress(NetnsError):
            self.topo.ns["lb"].addr("del", "lo", f"{VIP}/32")


def plan(sizes, xdplb_sizes=(1,)):
    """[(Variant class, n)] in run order (plain first: no conntrack state yet)."""
    out = [(Plain, 1)] + [(Xdplb, n) for n in xdplb_sizes] + [(Nft, 1)]
    out += [(Iptables, n) for n in sizes]
    out.append((Ipvs, 1))
    return out


# ---- orchestration -------------------------------------------------------------------

class Server:
    """The answering server in the real server's namespace (its own process group)."""

    def __init__(self, topo):
        self.p = subprocess.Popen(topo.cmd("rs", [sys.executable, "-m", "xdplb.bench.cps",
                                                  "--nice", str(NICE), "server", "--port",
                                                  str(RPORT), "--bind", RS_IP]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=child_env(), start_new_session=True)
        line = self.p.stdout.readline().split()
        if not line or line[0] != "ready":
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            self.stop()
            raise BenchError(f"cps server did not start: {line!r} {err.strip()}")
        self.pids = [int(x) for x in line[1:]]

    def cpu_s(self):
        """user + system seconds of the server's processes so far (their softirq
        work included: this kernel accounts by tick, without IRQ time)."""
        ticks = 0
        for pid in self.pids:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=10)
        for f in (self.p.stdout, self.p.stderr):
            with contextlib.suppress(Exception):
                f.close()


def measure(topo, server, target, workers, count, seconds, warmup, lat_out=None):
    """One client run; the summary plus the server's CPU seconds meanwhile."""
    cpu0 = server.cpu_s()
    r = _client(topo, target, workers, count, seconds, warmup, lat_out)
    # The server also answered the warm-up: charge it per connection served.
    served = r["conns"] + r["errors"] + workers * warmup
    r["server_cpu_s"] = (server.cpu_s() - cpu0) * r["conns"] / served if served else 0.0
    return r


def _client(topo, target, workers, count, seconds, warmup, lat_out):
    argv = topo.cmd("cl", [sys.executable, "-m", "xdplb.bench.cps", "--nice", str(NICE),
                           "client", target[0], str(target[1]), "--workers", str(workers),
                           "--count", str(count), "--seconds", str(seconds),
                           "--warmup", str(warmup)] + (["--lat-out", lat_out] if lat_out else []))
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(), start_new_session=True)
    try:
        out, err = p.communicate(timeout=seconds + warmup * CYCLE_TIMEOUT + 60)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    if p.returncode:
        raise BenchError(f"cps client failed ({p.returncode}): {err.strip()[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def _pool(runs, lats):
    """One row from a variant's rounds at one worker count."""
    vals = sorted(lats)
    conns = sum(r["conns"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    rates = [r["cps"] for r in runs]
    return {"workers": runs[0]["workers"], "rounds": len(runs), "conns": conns,
            "errors": sum(r["errors"] for r in runs), "seconds": secs,
            "cps": sorted(rates)[len(rates) // 2] if len(rates) % 2 else conns / secs,
            "runs_cps": rates,
            "p50_us": percentile(vals, 50) / 1e3, "p99_us": percentile(vals, 99) / 1e3,
            "max_us": vals[-1] / 1e3, "slow_1s": sum(1 for v in vals if v >= 900_000_000),
            **{k: sum(r[k] for r in runs) for k in ("client_cpu_s", "server_cpu_s",
                                                    "cpu_busy_s", "cpu_total_s")}}


def run(sizes=(1, 1000, 10000), workers=(1, 8), count=100_000, seconds=1.0, rounds=3,
        warmup=50, xdplb_sizes=(1,), log=None):
    """Every variant x every worker count, `rounds` times in turn (so that a
    burst of other work on the host spreads over the variants); returns the
    results dict report.py shows. xdplb runs with one service by default: its
    cost against the number of services is part 1's curve, and loading
    10,000 services with `xdplbadm -R` is part 4's subject."""
    log = log or (lambda m: None)
    t0 = time.monotonic()
    runs, lats, loads = {}, {}, {}
    with contextlib.ExitStack() as stack:
        log("cps: building client/lb/rs namespaces, starting the server")
        topo = stack.enter_context(Topo("k", TOPOLOGY))
        server = Server(topo)
        stack.callback(server.stop)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="xdplb-cps-"))
        lat_file = os.path.join(tmp, "lat")
        # What the rest of the host was doing: the rates and the tails below
        # depend on it (the CPU per connection much less).
        b0, t0_ = cpu_busy()
        time.sleep(0.5)
        b1, t1_ = cpu_busy()
        background = (b1 - b0) / (t1_ - t0_) if t1_ > t0_ else None
        variants = [cls(topo, n) for cls, n in plan(sizes, xdplb_sizes)]
        for v in variants:
            stack.callback(v.close)
            if v.skip:
                log(f"cps: {v.label}: skipped ({v.skip})")
        for rnd in range(rounds):
            for v in variants:
                if v.skip:
                    continue
                log(f"cps: round {rnd + 1}/{rounds}: {v.label}")
                v.setup()
                try:
                    for w in workers:
                        r = measure(topo, server, v.target, w, count, seconds, warmup, lat_file)
                        if not r["conns"]:
                            raise BenchError(f"cps: no connection through {v.label} "
                                             f"succeeded ({r['errors']} failed)")
                        runs.setdefault((v.key, v.n, w), []).append(r)
                        lat = lats.setdefault((v.key, v.n, w), array.array("q"))
                        with open(lat_file, "rb") as f:
                            lat.frombytes(f.read())
                finally:
                    v.teardown()
                if hasattr(v, "load_s"):
                    loads[(v.key, v.n)] = v.load_s
    rows = []
    for v in variants:
        for w in workers:
            if v.skip:
                rows.append({"variant": v.key, "n": v.n, "label": v.label, "workers": w,
                             "skip": v.skip})
                continue
            rows.append({"variant": v.key, "n": v.n, "label": v.label,
                         "load_s": loads.get((v.key, v.n)),
                         **_pool(runs[(v.key, v.n, w)], lats[(v.key, v.n, w)])})
    _derive(rows)
    return {"rows": rows, "seconds": time.monotonic() - t0, "count": count,
            "time_limit": seconds, "rounds": rounds, "workers": list(workers),
            "warmup": warmup, "server_procs": SERVER_PROCS, "cpus": os.cpu_count(),
            "background_busy": background, "nice": NICE}


def _derive(rows):
    tick = 1 / os.sysconf("SC_CLK_TCK")
    for w in {r["workers"] for r in rows}:
        wrows = [r for r in rows if r["workers"] == w and r.get("cps")]
        for r in wrows:
            cpu = r["client_cpu_s"] + r["server_cpu_s"]
            r["cpu_us_conn"] = cpu / r["conns"] * 1e6
            # Tick-sampled CPU time: about sqrt(ticks) ticks of noise.
            r["cpu_us_err"] = math.sqrt(max(cpu / tick, 1)) * tick / r["conns"] * 1e6
            r["host_busy"] = r["cpu_busy_s"] / r["cpu_total_s"] if r["cpu_total_s"] else None
        plain = next((r for r in wrows if r["variant"] == "plain"), None)
        xd = next((r for r in wrows if r["variant"] == "xdplb" and r["n"] == 1), None)
        for r in wrows:
            r["x_vs_xdplb"] = xd["cps"] / r["cps"] if xd else None
            if plain:
                r["vs_plain"] = r["cps"] / plain["cps"]
                r["cpu_us_over_plain"] = r["cpu_us_conn"] - plain["cpu_us_conn"]
                r["cpu_us_over_plain_err"] = math.hypot(r["cpu_us_err"], plain["cpu_us_err"])
                r["p50_over_plain_us"] = r["p50_us"] - plain["p50_us"]


def bottleneck(r):
    """What limits this row: everything shares the host's CPUs, so the side
    that takes most of the CPU time of one connection."""
    if "cps" not in r:
        return "—"
    if r["variant"] == "plain":
        return "client + server (Python): the reference"
    over = r.get("cpu_us_over_plain")
    if over is None:
        return "—"
    share = max(over, 0.0) / r["cpu_us_conn"] if r["cpu_us_conn"] else 0.0
    if over <= 2 * r.get("cpu_us_over_plain_err", 0.0):
        return "client + server (balancer cost within noise)"
    side = "balancer" if share >= 0.5 else "client + server"
    return f"{side} (balancer ≈ {share:.0%} of the CPU per connection)"


if __name__ == "__main__":
    main()
