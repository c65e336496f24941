"""The fuzz runner: writes the oracle's services into the pinned maps (the
real-server table through the control plane's own rs_join), runs
generated frames through the real program with BPF_PROG_TEST_RUN (in the
test network's netns, which the caller has entered), has the oracle judge
every answer, and compares the kernel's tables with the model after every
batch of frames (maps and model are reset at the start of each)."""
import collections
import ctypes as C
import errno
import random
import socket
import time

from xdplb import bpfsys, config
from xdplb import structs as S
from xdplb.keys import fold, svc_key
from xdplb.tables import Plan, Tables

from .frames import FrameGen
from .oracle import MConn, Oracle, Violation, fmt_key
from .services import FULLNAT_LADDRS, SLOTS, TUNNELS
from .wire import V4, V6, VERDICTS, Topology, ntop, parse, parse_later


class Fuzzer:
    """Generates frames, runs them and checks every verdict and output
    against the oracle. state: the pinned xdplb state; net: the test
    network (xdplb/testnet.py's build())."""

    def __init__(self, state, net, seed=1, batch=4096, log=None, max_violations=20):
        self.s, self.net = state, Topology(net)
        self.rng = random.Random(seed)
        self.seed = seed
        self.batch = batch
        self.log = log or (lambda msg: None)
        self.max_violations = max_violations
        self.runner = bpfsys.ProgTestRun(state.prog_fd)
        self.stats = collections.Counter()
        self.kinds = collections.Counter()
        self.oracle = Oracle(self.net, self.stats)
        self.gen = FrameGen(self.rng, self.net, self.oracle, self.kinds)
        self.violations = []
        self.frames = 0
        self.batches = 0
        self.in_batch = 0

    # -- the maps -----------------------------------------------------------------

    def _clear(self):
        s = self.s
        for name in ("services", "services6", "sched_ring", "conn_table", "conn_table6",
                     "rs_table", "rs_table6", "frags", "frags6", "fnat_out", "fnat_out6"):
            getattr(s, name).clear()
        for slot in FULLNAT_LADDRS:
            s.laddrs.put(slot, S.LaddrSet())
        s.rs_filter.put_zeros(range(S.XDPLB_RS_FILTER_WORDS))
        # the oracle models IPVS's settings all off (conn_reuse_mode too, whose
        # kernel default 1 a new state starts with): tests/test_settings.py
        # covers each one on
        s.sysctl.put_zeros(range(S.XDPLB_SYSCTL_MAX))
        for slot in range(SLOTS):
            s.dests.put(slot, S.DestEntry())
            s.sched_pos.put(slot, S.SchedPos())

    def write_config(self):
        """The oracle's services and destinations into the maps, tables empty."""
        self._clear()
        for (addr, port, proto), svc in self.oracle.services.items():
            for i, dslot in enumerate(svc.ring):
                self.s.sched_ring.put(S.RingKey(svc.slot, i), C.c_uint32(dslot))
            services = self.s.services6 if len(addr) == V6 else self.s.services
            services.put(svc_key(proto, ntop(addr), port),
                         S.SvcEntry(slot=svc.slot, ring_len=len(svc.ring), sched=S.XDPLB_SCHED_RR))
        for d in self.oracle.dests.values():
            self._put_dest(d)
        self._real_servers(self.oracle.masq_dests())
        self._fullnat()
        for idx, addr in self.net.tun_src.items():
            self.s.tun_src.put(idx, C.c_uint32.from_buffer_copy(addr))

    def _real_servers(self, joins):
        """rs_table and rs_filter as the control plane writes them for
        joins [(oracle Svc, oracle MDest)], in order."""
        t = Tables(self.s)
        for svc, d in joins:
            plan = Plan()
            svc_k = (svc.proto, ntop(svc.addr), svc.port)
            config.rs_join(t, plan, svc_k, d.addr, socket.htons(d.port))
            t.apply(plan)
        t.write(self.s)

    def _fullnat(self):
        """The full-NAT services' local addresses, and their real servers'
        rs_filter bits as the control plane writes them."""
        for slot, addrs in FULLNAT_LADDRS.items():
            v = S.LaddrSet(n=len(addrs))
            for i, a in enumerate(addrs):
                v.a[i].addr[:len(a)] = a
                v.a[i].af = S.XDPLB_AF_INET6 if len(a) == V6 else S.XDPLB_AF_INET
            self.s.laddrs.put(slot, v)
        t = Tables(self.s)
        for d in self.oracle.dests.values():
            if d.fwd == S.XDPLB_CONN_F_FULLNAT:
                plan = Plan()
                config.rs_filter_join(t, plan, d.addr)
                t.apply(plan)
        t.write(self.s)

    def _put_dest(self, d):
        self.s.dests.put(d.slot, _dest_entry(d))

    def _dest_goes(self):
        """The oracle's GONE_DESTS go (Oracle.dest_goes): their services stay
        in the real servers' rs_table entries (the sweep's to prune), a
        service that takes a slot joins it, then the destination is written."""
        for d in self.oracle.dest_goes(self.batches):
            if d.available:
                self._real_servers([(self.oracle.by_slot[d.svc_slot], d)])
            self._put_dest(d)

    def cleanup(self):
        """Leave the maps empty, as tests/test_datapath.py's fixture expects."""
        self._clear()
        for idx in self.net.tun_src:
            self.s.tun_src.put(idx, C.c_uint32(0))
        for slot in range(SLOTS):
            self.s.svc_stats.zero(slot)
            self.s.dest_stats.zero(slot)
        for idx in range(S.XDPLB_CNT_MAX):
            self.s.counters.zero(idx)

    def _kernel_entry(self, key):
        """The kernel's connection entry for a flow key, as an MConn (or None)."""
        n = len(key[0])
        k = (S.ConnKey6 if n == V6 else S.ConnKey)(
            saddr=(C.c_uint8 * n)(*key[0]), daddr=(C.c_uint8 * n)(*key[1]),
            sport=socket.htons(key[2]), dport=socket.htons(key[3]), proto=key[4])
        v = (self.s.conn_table6 if n == V6 else self.s.conn_table).get(k)
        return None if v is None else _mconn(v)

    # -- batches: reset maps and the model, warm up flows, check at the end ---------

    def start_batch(self):
        self.oracle.new_batch()
        self.write_config()
        for idx in range(S.XDPLB_CNT_MAX):
            self.s.counters.zero(idx)
        self.in_batch = 0
        for f, ingress in self.gen.warmup():
            self.check(f, ingress, "warmup")
        self._dest_goes()

    def end_batch(self):
        """The kernel's connection table equals the model; counters agree."""
        got = {}
        for fam, lru, assured, table in (
                (V4, self.s.conns, self.s.conns_assured, self.s.conn_table),
                (V6, self.s.conns6, self.s.conns6_assured, self.s.conn_table6)):
            both = {kb for kb, _ in lru.raw_items()} & {kb for kb, _ in assured.raw_items()}
            if both:
                self.violation(f"a connection is in both {lru.name} and {assured.name}", None,
                               0, None, None, f"{len(both)} keys")
            key_t, entry_t = (S.ConnKey6, S.Conn6) if fam == V6 else (S.ConnKey, S.Conn)
            for kb, vb in table.raw_items():
                k = key_t.from_buffer_copy(kb)
                v = entry_t.from_buffer_copy(vb)
                c = v.c if fam == V6 else v
                key = (bytes(k.saddr), bytes(k.daddr), socket.ntohs(k.sport),
                       socket.ntohs(k.dport), k.proto)
                got[key] = (_mconn(v), (c.ifindex, bytes(c.smac), bytes(c.dmac)) if c.ifindex
                            else None)
        for what, detail in self.oracle.table_problems(got):
            self.violation(what, None, 0, None, None, detail)
        for what, detail in self.oracle.fullnat.problems(self.s.fnat_out.raw_items() +
                                                         self.s.fnat_out6.raw_items()):
            self.violation(what, None, 0, None, None, detail)
        cnt = {name: self.s.counters.sum(i) for i, name in enumerate(S.COUNTERS)}
        for what, detail in self.oracle.counter_problems(cnt, self.in_batch):
            self.violation(what, None, 0, None, None, detail)
        self.batches += 1

    # -- one frame --------------------------------------------------------------------

    def check(self, f, ifindex, kind):
        """Run one frame through the program and have the oracle judge it."""
        self.frames += 1
        self.in_batch += 1
        self.kinds[kind] += 1
        p = parse(f)
        q = parse_later(f) if p is None else None
        expected = self.oracle.frags.expect(q) if q else self.oracle.expect(f, p)
        try:
            verdict, out, _ = self.runner.run(f, ifindex)
        except OSError as e:
            if len(f) < 14 and e.errno == errno.EINVAL:
                self.in_batch -= 1
                self.frames -= 1
                self.kinds[kind] -= 1
                self.stats["refused (< ETH_HLEN)"] += 1
                return
            self.violation(f"PROG_TEST_RUN failed: {e}", f, ifindex, None, None)
            return
        try:
            if q:
                self.oracle.judge_later(f, q, expected, ifindex, verdict, out)
            else:
                self.oracle.judge(f, p, expected, ifindex, verdict, out, self._kernel_entry)
        except Violation as v:
            self.violation(str(v), f, ifindex, verdict, out)

    def violation(self, what, f, ifindex, verdict, out, extra=""):
        v = {"what": what, "frame": bytes(f).hex() if f is not None else None,
             "ingress": self.net.ifname(ifindex),
             "verdict": VERDICTS[verdict] if verdict is not None and verdict < 5 else verdict,
             "out": out.hex() if out is not None else None, "extra": extra}
        if f is not None:
            p = parse(f)
            if p is not None:
                reply = self.oracle.reply_of(p)
                c = self.oracle.conns.get(p.key)
                v["conn"] = (f"reply of {fmt_key(reply.key)} entry {reply.conn}" if reply else
                             f"{fmt_key(p.key)} entry {c}" if c else "no entry")
        self.stats["violations"] += 1
        if len(self.violations) < self.max_violations:
            self.violations.append(v)
            self.log(f"VIOLATION: {v}")

    # -- sweeps and the main loop -------------------------------------------------------

    def sweep(self, f, ingress, kind="truncation sweep"):
        """f truncated at every offset (0 .. len), then whole."""
        for n in range(len(f) + 1):
            self.check(bytearray(f[:n]), ingress, kind)

    def run(self, frames, sweep_every=1, stop_on_violation=False):
        """Fuzz about `frames` frames in batches; returns the number of violations."""
        t0 = time.monotonic()
        last = t0
        while self.frames < frames:
            self.start_batch()
            if self.batches % sweep_every == 0:     # IPv4's, then IPv6's
                fam = V6 if self.batches // sweep_every % 2 else V4
                self.sweep(*self.gen.template(fam), "truncation sweep" if fam == V4 else
                           "truncation sweep6")
            while self.in_batch < self.batch and self.frames < frames:
                self.check(*self.gen.frame())
            self.end_batch()
            if stop_on_violation and self.violations:
                break
            now = time.monotonic()
            if now - last > 10:
                last = now
                self.log(f"  {self.frames} frames, {self.frames / (now - t0):.0f} frames/s, "
                         f"{self.stats['violations']} violations")
        self.elapsed = time.monotonic() - t0
        return self.stats["violations"]

    def summary(self):
        el = getattr(self, "elapsed", 0) or 1e-9
        lines = [(f"seed {self.seed}: {self.frames} frames in {el:.1f} s "
                  f"({self.frames / el:.0f} frames/s), {self.batches} batches, "
                  f"{self.stats['violations']} violations")]
        lines.append("frames by kind:")
        for k, v in sorted(self.kinds.items(), key=lambda kv: (kv[0].startswith(" "), kv[0])):
            lines.append(f"  {k:<28} {v:>10}")
        lines.append("oracle:")
        for k, v in sorted(self.stats.items()):
            lines.append(f"  {k:<56} {v:>10}")
        lines.append("outcomes:")
        for k, v in sorted(self.oracle.outcomes.items()):
            lines.append(f"  {k:<40} {v:>10}")
        for v in self.violations:
            lines.append(f"VIOLATION {v}")
        return "\n".join(lines)


def _dest_entry(d):
    """An oracle MDest as the dests map's entry (an IPv6 one's address in
    addr6, its fold in addr)."""
    tun_type, tun_port, tun_flags = TUNNELS.get(d.slot, (0, 0, 0))
    v6 = len(d.addr) == V6
    e = S.DestEntry(addr=(C.c_uint8 * 4)(*(fold(d.addr) if v6 else d.addr)),
                    port=socket.htons(d.port), fwd=d.fwd,
                    flags=S.XDPLB_DEST_F_AVAILABLE if d.available else 0,
                    svc_slot=d.svc_slot, weight=1, tun_type=tun_type,
                    tun_port=socket.htons(tun_port), tun_flags=tun_flags)
    if v6:
        e.af, e.addr6 = S.XDPLB_AF_INET6, (C.c_uint8 * 16)(*d.addr)
    return e


def _mconn(v):
    """A kernel connection entry (structs.Conn, or Conn6: its address in
    addr6) as the oracle's MConn."""
    c, addr, laddr = (v.c, bytes(v.addr6), bytes(v.laddr6)) if isinstance(v, S.Conn6) else \
        (v, bytes(v.addr), bytes(v.laddr))
    return MConn(addr, socket.ntohs(c.port), c.dir, c.fwd, c.dest_slot, c.svc_slot,
                 laddr if c.lport else b"", socket.ntohs(c.lport))
