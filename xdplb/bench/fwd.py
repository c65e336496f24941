"""Part 2: forwarding rate through a real balancer hop, every variant with the
same generator, the same frames and the same topology, in one run.

    client ns: c0 --veth-- lb ns: l0 [balancer] l1 --veth-- rs ns: s0 [bench_sink]

The generator is BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (what
xdp-trafficgen does) of bpf/bench_fwd.c's bench_inject on c0: it writes each
64-byte UDP frame from a template and returns XDP_TX, so the frame crosses
the veth into the balancer's l0. What arrives on s0 is counted and dropped by
bench_sink. Variants differ only in the balancer namespace:

    xdplb      xdplb attached natively to l0 and l1 (`xdplb attach`, `xdplbadm`)
    nft        bench_pass (XDP_PASS) on l0, an nftables DNAT map
    iptables   bench_pass on l0, kube-proxy-style chains for N services
    ipvs       bench_pass on l0, kernel IPVS (-m), where the kernel has it
    plain      bench_pass on l0, the VIP routed to the real server (no balancing)
    ceiling    bench_sink on l0 itself: the generator and one veth hop alone

Everything (injection, the balancer, the sink) runs on the injecting CPU: the
test run's NAPI softirqs are served on the CPU that raised them. That CPU is
what saturates; 1/rate splits into the generator's share (1/ceiling) and the
balancer hop's (1/rate - 1/ceiling), which the table shows.
"""
import contextlib
import os
import statistics
import time

from . import rules
from ..netns import NetnsError
from .common import (CL_IP, CL_MAC, LB_CL_MAC, RPORT, RS_IP, VIP, VPORT, Topo,
                     child_env, inject, ipvs_available, percpu_sum, pin_folder, tool,
                     udp_frame)

BENCH_SRC = "bench_fwd.c"
FLOWS = 1024           # established mix: source ports 10000..11023
CHUNK = 250_000        # frames per BPF_PROG_TEST_RUN call
TIME_LIMIT = 8.0       # seconds of injection per measurement, at most


def compile_gen():
    from bcc import BPF
    from ..loader import BPF_DIR
    b = BPF(src_file=os.path.join(BPF_DIR, BENCH_SRC).encode(), cflags=[f"-I{BPF_DIR}"])
    fds = {f: b.load_func(f.encode(), BPF.XDP).fd
           for f in ("bench_inject", "bench_pass", "bench_sink")}
    return b, fds


class Gen:
    """bench_inject on the interface ifindex of netns ns, sending frame (a
    64-byte template) varied per flow; tcp: frame is TCP (its checksum is
    kept right)."""

    def __init__(self, b, fds, ns, ifindex, frame, tcp=False):
        import ctypes as C
        self.b, self.fds, self.ns, self.ifindex = b, fds, ns, ifindex
        self.frame, self.tcp = frame, tcp
        tm = b[b"gen_tmpl"]
        leaf = tm.Leaf()
        C.memmove(C.addressof(leaf), self.frame, len(self.frame))
        tm[C.c_int(0)] = leaf
        self.set_flows(0)

    def set_flows(self, flows):
        """flows source ports (10000 up), or 0: a new source per frame."""
        import ctypes as C
        cfg = self.b[b"gen_cfg"]
        leaf = cfg.Leaf()
        leaf.flows = flows
        leaf.tcp = int(self.tcp)
        cfg[C.c_int(0)] = leaf

    def sunk(self):
        return percpu_sum(self.b[b"sink_cnt"], 0)

    def run(self, count, time_limit=TIME_LIMIT):
        """Inject up to count frames (chunks, stopping after time_limit s);
        returns (injected, delivered, seconds)."""
        cpu = max(os.sched_getaffinity(0))
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        before, sent, secs = self.sunk(), 0, 0.0
        try:
            with self.ns.entered():
                while sent < count and secs < time_limit:
                    n = min(CHUNK, count - sent)
                    secs += inject(self.fds["bench_inject"], self.frame, n, self.ifindex)
                    sent += n
        finally:
            os.sched_setaffinity(0, saved)
        return sent, self.sunk() - before, secs


# ---- variants -----------------------------------------------------------------------

class Variant:
    key = label = ""
    skip = None            # a reason, where it cannot run here

    def __init__(self, topo, gen, n=1):
        self.topo, self.gen, self.n = topo, gen, n

    def setup(self):
        pass

    def teardown(self):
        pass

    def lb(self, argv, **kw):
        return self.topo.run("lb", argv, **kw)

    def pass_l0(self, on=True):
        self.topo.xdp("lb", "l0", self.gen.fds["bench_pass"] if on else 0)


class Xdplb(Variant):
    key, label = "xdplb", "xdplb (XDP, -m)"

    def setup(self):
        self._pins = pin_folder("fwd")
        folder = self._pins.__enter__()
        self.env = child_env(XDPLB_PIN_DIR=folder)
        # bcc compiles for up to a minute under software emulation (qemu guests)
        self.lb([*tool("xdplb"), "attach", "--mode", "native", "l0", "l1"], env=self.env,
                timeout=600)
        text = rules.ipvsadm_restore(self._svcs(), proto_flag="-u")
        self.lb([*tool("xdplbadm"), "-R"], input=text, env=self.env)

    def _svcs(self):
        return rules.services(self.n, 1, target=(self.n // 2, VIP, [(RS_IP, RPORT)]))

    def teardown(self):
        self.lb([*tool("xdplb"), "detach"], env=self.env, check=False)
        self._pins.__exit__(None, None, None)


class Nft(Variant):
    key, label = "nft", "nftables DNAT (map)"

    def setup(self):
        svcs = rules.services(self.n, 1, target=(self.n // 2, VIP, [(RS_IP, RPORT)]))
        self.lb(["nft", "-f", "-"], input=rules.nft_dnat(svcs))
        self.pass_l0()

    def teardown(self):
        self.pass_l0(False)
        self.lb(["nft", "delete", "table", "ip", "xbench"], check=False)


class Iptables(Variant):
    key = "iptables"

    @property
    def label(self):
        return f"iptables DNAT, kube-proxy chains, {self.n:,} svc"

    def setup(self):
        svcs = rules.services(self.n, 1, target=(self.n // 2, VIP, [(RS_IP, RPORT)]))
        t0 = time.monotonic()
        self.lb(["iptables-restore"], input=rules.iptables_restore(svcs, proto="udp"),
                timeout=600)
        self.load_s = time.monotonic() - t0
        self.pass_l0()

    def teardown(self):
        self.pass_l0(False)
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
        self.lb(["ipvsadm", "-A", "-u", f"{VIP}:{VPORT}", "-s", "rr"])
        self.lb(["ipvsadm", "-a", "-u", f"{VIP}:{VPORT}", "-r", f"{RS_IP}:{RPORT}", "-m"])
        self.pass_l0()

    def teardown(self):
        self.pass_l0(False)
        self.lb(["ipvsadm", "-C"], check=False)
        with contextlib.suppress(NetnsError):
            self.topo.ns["lb"].addr("del", "lo", f"{VIP}/32")


class Plain(Variant):
    key, label = "plain", "plain IP forwarding (no balancing)"

    def setup(self):
        self.topo.ns["lb"].route("add", f"{VIP}/32", via=RS_IP, dev="l1")
        self.pass_l0()

    def teardown(self):
        self.pass_l0(False)
        with contextlib.suppress(NetnsError):
            self.topo.ns["lb"].route("del", f"{VIP}/32")


class Ceiling(Variant):
    key, label = "ceiling", "generator ceiling (dropped on the balancer's l0)"

    def setup(self):
        self.topo.xdp("lb", "l0", self.gen.fds["bench_sink"])

    def teardown(self):
        self.topo.xdp("lb", "l0", 0)


def plan(sizes):
    """[(Variant class, n)] in run order."""
    out = [(Ceiling, 1), (Xdplb, 1), (Nft, 1)]
    out += [(Iptables, n) for n in sizes]
    out += [(Ipvs, 1), (Plain, 1)]
    return out


MIXES = {"est": f"{FLOWS:,} established UDP flows", "new": "a new UDP flow every frame"}


def run(sizes=(1, 1000, 10000), count=1_000_000, new_count=300_000, runs=3, mixes=("est", "new"),
        log=None):
    log = log or (lambda m: None)
    rows, t0 = [], time.monotonic()
    with contextlib.ExitStack() as stack:
        log("fwd: compiling bpf/bench_fwd.c, building client/lb/rs namespaces")
        b, fds = compile_gen()
        stack.callback(b.cleanup)
        topo = stack.enter_context(Topo("f"))
        topo.xdp("rs", "s0", fds["bench_sink"])
        gen = Gen(b, fds, topo.ns["cl"], topo.ifindex("cl", "c0"),
                  udp_frame(CL_IP, VIP, 10000, VPORT, CL_MAC, LB_CL_MAC))
        for cls, n in plan(sizes):
            v = cls(topo, gen, n)
            if v.skip:
                for mix in mixes:
                    rows.append({"variant": v.key, "n": n, "label": v.label, "mix": mix,
                                 "skip": v.skip})
                log(f"fwd: {v.label}: skipped ({v.skip})")
                continue
            log(f"fwd: {v.label}")
            v.setup()
            try:
                for mix in mixes:
                    total = count if mix == "est" else new_count
                    gen.set_flows(FLOWS if mix == "est" else 0)
                    gen.run(FLOWS * 4 if mix == "est" else 10_000)    # warm-up
                    res = [gen.run(total) for _ in range(runs)]
                    rates = [d / s for _, d, s in res]
                    sent = sum(r[0] for r in res)
                    got = sum(r[1] for r in res)
                    rows.append({"variant": v.key, "n": n, "label": v.label, "mix": mix,
                                 "pps": statistics.median(rates), "runs_pps": rates,
                                 "injected": sent, "delivered": got,
                                 "load_s": getattr(v, "load_s", None)})
            finally:
                v.teardown()
    _derive(rows)
    return {"rows": rows, "seconds": time.monotonic() - t0, "count": count,
            "new_count": new_count, "runs": runs, "flows": FLOWS}


def _derive(rows):
    for mix in {r["mix"] for r in rows}:
        mrows = [r for r in rows if r["mix"] == mix and "pps" in r]
        ceil = next((r["pps"] for r in mrows if r["variant"] == "ceiling"), None)
        xd = next((r["pps"] for r in mrows if r["variant"] == "xdplb"), None)
        for r in mrows:
            r["x_vs_xdplb"] = xd / r["pps"] if xd and r["pps"] else None
            r["ns_pkt"] = 1e9 / r["pps"] if r["pps"] else None
            if ceil and r["variant"] != "ceiling" and r["pps"]:
                hop = 1e9 / r["pps"] - 1e9 / ceil
                r["hop_ns"] = max(hop, 0.0)
                r["hop_share"] = max(hop, 0.0) / (1e9 / r["pps"])
        xhop = next((r.get("hop_ns") for r in mrows if r["variant"] == "xdplb"), None)
        for r in mrows:
            if xhop and r.get("hop_ns"):
                r["hop_x_vs_xdplb"] = r["hop_ns"] / xhop


def bottleneck(r):
    if r["variant"] == "ceiling":
        return "the generator's CPU (injection + veth + sink XDP)"
    share = r.get("hop_share")
    if share is None:
        return "—"
    loss = 1 - r["delivered"] / r["injected"] if r["injected"] else 0
    side = "balancer" if share >= 0.5 else "generator"
    extra = f"; {loss:.1%} lost" if loss > 0.001 else ""
    return f"{side} ({share:.0%} of the CPU's time per frame is the balancer hop{extra})"
