"""Part 1, continued: the new-connection rows, xdplb beside the minimal
new-flow program (bench_newflow), both behind the same harness.

bench_newconn (bpf/bench_trivial.c) rewrites the frame from a SYN template
with a never-seen source address and port on every iteration and tail-calls
its target, so every BPF_PROG_TEST_RUN iteration is the first packet of a
connection; pointed at bench_trivial it measures itself (the control), and
every row is shown as raw - control + floor. Two table states, each with the
xdplb row and the reference side by side, taking turns:

    table with room   both tables emptied before each run, FRESH_MAX new
                      connections per run: no LRU eviction
    full table        both tables first filled, from every CPU, with as many
                      new connections as they have entries, so every insert
                      evicts; the tables' occupancy after the runs is part
                      of the proof

and a cross-check without the harness: one SYN per repeat=1 call.
"""
import ctypes as C
import os
import socket
import statistics

from .. import bpfsys
from ..maps import Map
from . import fnat, pkt
from .common import mac_bytes, percpu_sum

FRESH_MAX = 100_000    # new connections per run into an emptied table (one entry each)
PERCALL_MAX = 10_000   # SYNs of the repeat=1 cross-check
FULL_SHARE = 0.99      # a full LRU holds at least this share of its entries (some sit
                       # in per-CPU free lists)
LABELS = {
    "newconn-harness-fresh": "new-conn harness + trivial (control of the table-with-room rows)",
    "newflow-fresh": "minimal new-flow reference, table with room",
    "newconn-fresh": "xdplb new connection, table with room (SYN, rr, Masq, 3 dests)",
    "newconn-fnat-fresh": "xdplb new full-NAT connection, table with room (SYN, rr, FullNat, "
                          "3 dests)",
    "newconn-harness": "new-conn harness + trivial (control of the full-table rows)",
    "newflow": "minimal new-flow reference, full table",
    "newconn-raw": "new-conn harness + xdplb, full table (raw)",
    "newconn": "xdplb new connection, full table (SYN, rr, Masq, 3 dests)",
    "newconn-call": "xdplb new connection, one SYN per call (cross-check)",
}
XDPLB_PROOF = {"svc.conns": 1, "fwd": 1, "harness.seq": 1, "to_stack": 0}
# and each new full-NAT connection lent a reply tuple: one fnat_out mapping, none refused
FNAT_PROOF = {**XDPLB_PROOF, "fnat_out": 1, "fnat_no_port": 0}


class Harness:
    """bench_newconn sending SYNs to vip:80 that arrive on ifindex."""

    def __init__(self, b, fds, ifindex):
        self.b, self.fd, self.ifindex = b, fds["bench_newconn"], ifindex
        self.maps = {"nc_seq": b[b"nc_seq"]}

    @staticmethod
    def template(vip):
        return pkt.tcp_frame("11.0.0.0", vip, 0x8000, pkt.VPORT, pkt.TCP_SYN, pkt.CLIENT_MAC)

    def aim(self, target_fd, vip=pkt.VIP):
        """Tail-call target_fd with SYNs to vip."""
        tm = self.b[b"nc_tmpl"]
        leaf = tm.Leaf()
        C.memmove(C.addressof(leaf), self.template(vip), pkt.FRAME_LEN)
        tm[C.c_int(0)] = leaf
        self.b[b"nc_target"][C.c_int(0)] = C.c_int(target_fd)

    def timed(self, name, target_fd, repeat, probe=None, clear=None, vip=pkt.VIP):
        """A pkt.Timed of the harness aimed at target_fd; clear() empties
        the target's table before every run."""
        def prepare():
            self.aim(target_fd, vip)
            if clear:
                clear()
        return pkt.Timed(name, self.fd, self.template(vip), self.ifindex, repeat,
                         probe or self.probe, prepare)

    def probe(self):
        return {"harness.seq": percpu_sum(self.maps["nc_seq"])}

    def fill(self, target_fd, n, vip=pkt.VIP):
        """n new connections into the target's table from each CPU this
        process may run on: a per-CPU LRU (BPF_F_NO_COMMON_LRU) is full
        only once every CPU's share is."""
        self.aim(target_fd, vip)
        cpus = os.sched_getaffinity(0)
        try:
            for cpu in sorted(cpus):
                os.sched_setaffinity(0, {cpu})
                bpfsys.prog_test_run(self.fd, self.template(vip), repeat=n,
                                     ingress_ifindex=self.ifindex)
        finally:
            os.sched_setaffinity(0, cpus)


class NewFlow:
    """bench_newflow's table, its destination (RS1:8080) and its counters."""
    PROOF = {"newflow.new": 1, "newflow.hit": 0, "newflow.failed": 0, "harness.seq": 1}

    def __init__(self, b, harness):
        self.b, self.harness = b, harness
        self.table = b[b"mf_conns"]
        dest = b[b"mf_dest"]
        leaf = dest.Leaf()
        leaf.nat.daddr = int.from_bytes(socket.inet_aton(pkt.RSS[0]), "little")
        leaf.nat.dport = socket.htons(pkt.RPORT)
        C.memmove(C.addressof(leaf.nat.dmac), mac_bytes(pkt.RS_MACS[0]), 6)
        dest[C.c_int(0)] = leaf
        info = bpfsys.obj_info(self.table.map_fd, bpfsys.BpfMapInfo)
        self.max_entries = info.max_entries
        self.map = Map(self.table.map_fd, C.c_uint8 * info.key_size,
                       C.c_uint8 * info.value_size, "mf_conns")

    def probe(self):
        count = self.b[b"mf_count"]
        out = self.harness.probe()
        for i, name in enumerate(("new", "hit", "failed")):
            out[f"newflow.{name}"] = percpu_sum(count, i)
        return out

    def clear(self):
        self.table.items_delete_batch()


def entries(m):
    """Entries in map m (a maps.Map), in a few batch syscalls."""
    return sum(n for _, _, n in m.raw_chunks())


def rows(b, fds, st, ifindex, svc_slot, repeat, runs, floor, log, parts=("newconn",),
         fnat_slot=None):
    """The new-connection rows (see the module's doc), to the Masq service
    VIP:80 in svc_slot; with "newconn-fnat" in parts, the full-NAT service
    VIP_FNAT:80 in fnat_slot beside its table-with-room row (only those and
    their control without "newconn")."""
    bc0 = ifindex["bc0"]
    h = Harness(b, fds, bc0)
    nf = NewFlow(b, h)
    xprobe = pkt.probe(st, bench_maps=h.maps, svc=svc_slot)
    full = "newconn" in parts
    out = [_percall(fds, st, bc0, min(repeat, PERCALL_MAX), runs, floor, xprobe)] if full else []

    fresh = min(repeat, FRESH_MAX)
    log(f"pkt: new connections into tables with room ({fresh:,} per run)")
    timed = [h.timed("newconn-harness-fresh", fds["bench_trivial"], fresh),
             h.timed("newflow-fresh", fds["bench_newflow"], fresh, nf.probe, nf.clear),
             h.timed("newconn-fresh", st.prog_fd, fresh, xprobe, lambda: pkt.empty_conns(st))]
    named = [("newflow-fresh", nf.PROOF), ("newconn-fresh", XDPLB_PROOF)]
    if not full:
        del timed[1], named[0]
    if "newconn-fnat" in parts:
        timed.append(h.timed("newconn-fnat-fresh", st.prog_fd, fresh, _fnat_probe(st, h, fnat_slot),
                             lambda: pkt.empty_conns(st), vip=fnat.VIP_FNAT))
        named.append(("newconn-fnat-fresh", FNAT_PROOF))
    res = pkt.interleave(timed, runs)
    room = (f"{fresh:,} SYNs per run of never-seen 5-tuples to VIP:80 into a table emptied "
            "before each run (no LRU eviction)")
    out += _pair(res, "newconn-harness-fresh", named, fresh, floor, {
        "newflow-fresh": f"the harness tail-calling bench_newflow, {room}: "
                         f"{nf.max_entries:,} entries, conns' geometry",
        "newconn-fresh": f"the harness tail-calling xdplb, {room}, rr over 3 Masq real servers",
        "newconn-fnat-fresh": f"the harness tail-calling xdplb, {room.replace('VIP', 'VIP_FNAT')}"
                              " and fnat_out emptied with them (pkt.empty_conns: no port is "
                              "ever exhausted), rr over 3 full-NAT real servers, each SYN "
                              f"lent a source port of one of {len(pkt.LADDRS)} local "
                              "addresses through fnat_out (BPF_NOEXIST insert) before its "
                              "entry is inserted; fnat_out's fill read after every run"})
    if full:
        out += _full(h, nf, st, fds, repeat, runs, floor, xprobe, log)
    order = list(LABELS)
    return sorted(out, key=lambda r: order.index(r["part"]))


def _fnat_probe(st, h, slot):
    """The full-NAT row's probe: xdplb's counters (fnat_no_port too) and
    fnat_out's entries (each new connection holds one mapping)."""
    read = pkt.probe(st, bench_maps=h.maps, svc=slot, events=("fnat_no_port",))
    return lambda: {**read(), "fnat_out": entries(st.fnat_out)}


def _full(h, nf, st, fds, repeat, runs, floor, xprobe, log):
    """The full-table rows (the module's doc)."""
    log(f"pkt: filling both tables ({nf.max_entries:,} and {st.conns.max_entries:,} new "
        "connections)")
    h.fill(fds["bench_newflow"], nf.max_entries)
    h.fill(st.prog_fd, st.conns.max_entries)
    log(f"pkt: new connections into full tables ({repeat:,} per run)")
    res = pkt.interleave([h.timed("newconn-harness", fds["bench_trivial"], repeat),
                          h.timed("newflow", fds["bench_newflow"], repeat, nf.probe),
                          h.timed("newconn-raw", st.prog_fd, repeat, xprobe)], runs)
    fill = {"newflow": (entries(nf.map), nf.max_entries),
            "newconn-raw": (entries(st.conns), st.conns.max_entries)}
    full = ("filled first with as many new connections as it has entries, so every "
            "insert evicts: the steady state of a SYN flood")
    pair = _pair(res, "newconn-harness", [("newflow", nf.PROOF), ("newconn-raw", XDPLB_PROOF)],
                 repeat, floor, {
                     "newflow": f"the harness tail-calling bench_newflow, its LRU {full}",
                     "newconn-raw": f"the harness tail-calling xdplb (rr over 3 Masq real "
                                    f"servers), conns {full}; not net of the harness"}, fill)
    raw = pair[-1]
    net = [t - statistics.median(res["newconn-harness"][0]) + floor for t in raw["runs_ns"]]
    return pair + [pkt.row("newconn", LABELS["newconn"], net, raw["ok"] and pair[0]["ok"],
                           raw["proof"], raw["verdict"].split("/"),
                           "the raw row - its control + floor: the new-connection path alone")]


def _pair(res, control, named, repeat, floor, method, fill=None):
    """The control row and the rows named ((name, proof) each) of one
    interleave() result, net of the control (except a raw row)."""
    ctimes, cdeltas, cverd = res[control]
    cok, cproof = pkt.check(cdeltas, {"harness.seq": 1}, repeat)
    cok = cok and cverd == {"TX"}
    out = [pkt.row(control, LABELS[control], ctimes, cok, cproof, cverd,
                   "bench_newconn rewrites the frame from a template with a fresh source "
                   "address:port, then tail-calls bench_trivial")]
    cmed = statistics.median(ctimes)
    for name, proof in named:
        times, deltas, verdicts = res[name]
        ok, text = pkt.check(deltas, proof, repeat)
        if fill and name in fill:
            n, size = fill[name]
            ok = ok and n >= FULL_SHARE * size
            text += f"; {n:,} of {size:,} entries in use after the runs"
        if not name.endswith("-raw"):
            times = [t - cmed + floor for t in times]
            ok = ok and cok
        out.append(pkt.row(name, LABELS[name], times, ok, text, verdicts, method[name]))
    return out


def _percall(fds, st, ifindex, n, runs, floor, probe):
    """One distinct SYN per repeat=1 call, net of the trivial program's
    per-call time on the same frames."""
    pkt.empty_conns(st)
    syns = [pkt.tcp_frame(f"12.0.{i >> 8 & 255}.{i & 255}", pkt.VIP, 0x8000 + (i >> 16),
                          pkt.VPORT, pkt.TCP_SYN, pkt.CLIENT_MAC) for i in range(n)]
    before = probe()
    ctimes = [bpfsys.prog_test_run(st.prog_fd, f, ingress_ifindex=ifindex).duration
              for f in syns]
    after = probe()
    ttimes = [bpfsys.prog_test_run(fds["bench_trivial"], f, ingress_ifindex=ifindex).duration
              for f in syns]
    tmed = statistics.median(ttimes)
    groups = [ctimes[i::runs] for i in range(runs)]
    ok, proof = pkt.check([{k: after[k] - before[k] for k in after if k != "harness.seq"}],
                          {"svc.conns": 1, "fwd": 1, "to_stack": 0}, n)
    return pkt.row("newconn-call", LABELS["newconn-call"],
                   [statistics.median(g) - tmed + floor for g in groups], ok,
                   f"{proof} over {n:,} calls", {"REDIRECT"} if ok else {"?"},
                   f"{n:,} calls with repeat=1, each a SYN of a distinct 5-tuple; median "
                   f"per-call time - median per-call time of the trivial program on the same "
                   f"frames ({tmed:.0f} ns: timer and dispatch overhead) + floor; min–max are "
                   f"the medians of {runs} interleaved groups")
