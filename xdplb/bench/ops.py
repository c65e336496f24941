"""`xdplb bench` part 7: the anatomy of a new connection and of an
established packet: their building blocks, ns each, and the size of every
program on the path.

A new connection's building blocks (OPS): every program of bpf/bench_ops.c
does one operation on the never-seen 5-tuple the new-connection harness
(newconn.Harness) gives it on every iteration, in tables with the geometry of
xdplb's conns and conns_assured maps, and counts the expected outcome (the
proof: the count moves by exactly repeat). The parse row is the harness, the
parse and the count; every other row is shown net of it: the operation alone.
A new Masq connection of today's data path does, among other work, three
parses, two tail calls, a missed lookup in each connection table, one LRU
insert (its one entry) and (usually no) FIB lookup: these rows price each of
them. The two-insert rows price what a Masq connection took before it had
one entry (layout 2: the client's tuple and the reply's).

An established packet's building blocks (ESTABLISHED) need a tuple that is
in the tables, so they run without the harness on one fixed frame (an ACK
client -> VIP:80) whose tuple each table holds as its one entry, as xdplb's
established rows find theirs; their baseline is the same parse and count on
that frame with no lookup. xdplb's established client packet does a
conns_assured hit, the clock, an egress_cache lookup, per-CPU counters and a
devmap redirect; a reply adds an rs_table hit; bench_minnat does one LRU hit
and XDP_TX. PROG_TEST_RUN (without live frames) carries out neither XDP_TX
nor a redirect: the redirect row prices the helper (the devmap lookup and
the per-CPU redirect state), not the transmit.

All rows take turns. Program sizes come from the kernel's bpf_prog_info
(what bpftool prog show prints): instructions after verification (xlated),
bytes of machine code (jited) and the instructions the verifier walked (its
work, not a count of what runs): each building block's program (its row),
xdplb's entry program, every program its new_conn prog array holds, and the
reference programs.
"""
import contextlib
import ctypes as C
import os
import socket
import statistics
import time

from .. import bpfsys
from .. import structs as S
from ..loader import NEW_CONN_PIN
from . import newconn, pkt
from .common import percpu_sum

# A new connection's: (part, program, OP_* index in bench_ops.c, table emptied
# before each run, label)
OPS = (
    ("parse", "op_parse", 0, None,
     "harness + parse + a per-CPU count (the baseline of the new-connection rows)"),
    ("lru-miss", "op_lru_miss", 1, None, "LRU lookup that misses (conns' geometry, full)"),
    ("hash-miss", "op_hash_miss", 2, None,
     "hash lookup that misses (conns_assured's geometry, empty)"),
    ("lru-room", "op_lru_room_insert", 3, "op_lru_room", "LRU insert, table with room"),
    ("lru-full", "op_lru_full_insert", 4, None, "LRU insert, full table (evicts)"),
    ("lru2-room", "op_lru2_room_insert", 5, "op_lru_room",
     "two LRU inserts (the tuple and its reply: layout 2's Masq connection), table with room"),
    ("lru2-full", "op_lru2_full_insert", 6, None,
     "two LRU inserts (layout 2's Masq connection), full table"),
    ("pcpu-room", "op_pcpu_room_insert", 7, "op_pcpu_room",
     "per-CPU LRU (BPF_F_NO_COMMON_LRU) insert, table with room"),
    ("pcpu-full", "op_pcpu_full_insert", 8, None, "per-CPU LRU insert, full table (evicts)"),
    ("hash-move", "op_hash_move", 9, None, "hash insert then delete (a move between tables)"),
    ("tail", "op_tail", 10, None, "one tail call"),
    ("fib", "op_fib", 11, None, "bpf_fib_lookup of a real server (permanent neighbour)"),
)
FULL = (("op_lru_full", "op_lru_full_insert"), ("op_pcpu_full", "op_pcpu_full_insert"))
# An established packet's: (part, program, OP_* index, verdict, label)
ESTABLISHED = (
    ("est-parse", "op_est_parse", 12, "TX",
     "fixed frame + parse + a per-CPU count, no harness (the baseline of the established "
     "rows)"),
    ("hash-hit", "op_hash_hit", 13, "TX",
     "hash lookup that hits (conns_assured's geometry, one entry)"),
    ("lru-hit", "op_lru_hit", 14, "TX",
     "LRU lookup that hits (conns' geometry, one entry): bench_minnat's lookup"),
    ("rs-hit", "op_rs_hit", 15, "TX",
     "hash lookup that hits, allocated on demand (rs_table's geometry, one entry)"),
    ("pcpu-array", "op_pcpu_array", 16, "TX",
     "per-CPU array lookup (egress_cache's geometry; inlined by the verifier)"),
    ("clock", "op_clock_cache", 17, "TX",
     "bpf_jiffies64 + the per-CPU clock cache (clock.h now_ns)"),
    ("ktime", "op_ktime", 18, "TX", "bpf_ktime_get_coarse_ns (what the clock cache saves)"),
    ("redirect", "op_redirect", 19, "REDIRECT",
     "bpf_redirect_map into a devmap (tx_ports' geometry) and XDP_REDIRECT, where the "
     "baseline returns XDP_TX (and an array load that names the port)"),
)
BASELINES = {"parse": "new", "est-parse": "established"}


def run(repeat=1_000_000, runs=5, log=None):
    log = log or (lambda m: None)
    t0 = time.monotonic()
    fresh = min(repeat, newconn.FRESH_MAX)
    progs = [prog for _, prog, *_ in OPS + ESTABLISHED]
    with contextlib.ExitStack() as stack:
        log("ops: compiling bpf/xdplb.c (for its maps' geometry) and the building blocks")
        st = stack.enter_context(pkt.private_state())
        ref, rfds = pkt.compile_reference()
        stack.callback(ref.cleanup)
        b, fds = pkt.compile_bench("bench_ops.c", progs, st)
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}o"))
        b[b"op_next"][C.c_int(0)] = C.c_int(rfds["bench_trivial"])
        cfg = b[b"op_cfg"]
        leaf = cfg.Leaf()
        leaf.fib_dst = int.from_bytes(socket.inet_aton(pkt.RSS[0]), "little")
        leaf.tx_port = ifindex["br0"]
        cfg[C.c_int(0)] = leaf
        h = newconn.Harness(ref, rfds, ifindex["bc0"])
        for table, prog in FULL:
            log(f"ops: filling {table}")
            h.fill(fds[prog], st.conns.max_entries)
        frame = _fixed_point(b, ifindex["br0"])
        timed = _new_conn_timed(b, fds, h, fresh) + _established_timed(
            b, fds, frame, ifindex["bc0"], repeat)
        log(f"ops: {len(timed)} building blocks taking turns, {fresh:,} per new-connection run, "
            f"{repeat:,} per established run")
        res = pkt.interleave(timed, runs)
        insns = {prog: _xlated(bpfsys.obj_info(fd, bpfsys.BpfProgInfo))
                 for prog, fd in fds.items()}
        sizes = program_sizes(st, rfds)
    new = [(part, prog, "TX", label) for part, prog, _, _, label in OPS]
    est = [(part, prog, verdict, label) for part, prog, _, verdict, label in ESTABLISHED]
    rows = (_rows(res, new, fresh, {"op": 1, "harness.seq": 1}, insns)
            + _rows(res, est, repeat, {"op": 1}, insns))
    return {"rows": rows, "sizes": sizes, "repeat": fresh, "repeat_established": repeat,
            "runs": runs, "seconds": time.monotonic() - t0}


def _counted(b, op):
    count = b[b"op_count"]
    return lambda: {"op": percpu_sum(count, op)}


def _new_conn_timed(b, fds, h, fresh):
    """The new connection's rows behind the harness; a table with room is
    emptied before each run."""
    def probe(op):
        counted = _counted(b, op)
        return lambda: {**h.probe(), **counted()}

    def clear(table):
        return (lambda: b[table.encode()].items_delete_batch()) if table else None
    return [h.timed(part, fds[prog], fresh, probe(op), clear(table))
            for part, prog, op, table, _ in OPS]


def _established_timed(b, fds, frame, ifindex, repeat):
    return [pkt.Timed(part, fds[prog], frame, ifindex, repeat, _counted(b, op))
            for part, prog, op, _, _ in ESTABLISHED]


def _fixed_point(b, tx_port):
    """The established rows' frame, an ACK client:CPORT -> VIP:80 that no
    program rewrites; its tuple the one entry of each table they look up,
    tx_port in their devmap."""
    saddr, daddr = (int.from_bytes(socket.inet_aton(a), "little") for a in (pkt.CLIENT, pkt.VIP))
    for name in ("op_est_hash", "op_est_lru"):
        t = b[name.encode()]
        k = t.Key()
        k.saddr, k.daddr, k.sport, k.dport = saddr, daddr, pkt._p(pkt.CPORT), pkt._p(pkt.VPORT)
        k.proto = socket.IPPROTO_TCP
        t[k] = t.Leaf()
    rs = b[b"op_est_rs"]
    k = rs.Key()
    k.addr, k.port, k.proto = saddr, pkt._p(pkt.CPORT), socket.IPPROTO_TCP
    rs[k] = rs.Leaf()
    b[b"op_tx_ports"][C.c_int(tx_port)] = C.c_int(tx_port)
    return pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK, pkt.CLIENT_MAC)


def _rows(res, specs, repeat, proof, insns):
    """One group's rows (part, program, verdict, label), the first its
    baseline, the others net of the baseline's median."""
    base_part = specs[0][0]
    base = statistics.median(res[base_part][0])
    rows = []
    for part, prog, verdict, label in specs:
        times, deltas, verdicts = res[part]
        ok, text = pkt.check(deltas, proof, repeat)
        net = times if part == base_part else [t - base for t in times]
        rows.append({"part": part, "label": label, "program": prog,
                     "group": BASELINES[base_part], "baseline": part == base_part,
                     "xlated_insns": insns[prog], "ns": statistics.median(net),
                     "runs_ns": net, "ok": ok and verdicts == {verdict}, "proof": text,
                     "verdict": "/".join(sorted(verdicts))})
    return rows


def _xlated(info):
    """Instructions after verification (8 bytes each)."""
    return info.xlated_prog_len // 8


def _size(fd, role):
    i = bpfsys.obj_info(fd, bpfsys.BpfProgInfo)
    return {"name": i.name.decode(), "role": role, "xlated_insns": _xlated(i),
            "jited_bytes": i.jited_prog_len, "verified_insns": i.verified_insns}


def program_sizes(st, ref_fds):
    """xdplb's programs (the entry, then each program its new_conn array
    holds, once) and the reference programs."""
    from ..model import SCHED_NAMES
    out = [_size(st.prog_fd, "xdplb entry: parse, connection and service lookups")]
    arr = bpfsys.obj_get(os.path.join(st.folder, NEW_CONN_PIN))
    slots = {}      # prog id -> new_conn indexes
    try:
        for idx in range(bpfsys.obj_info(arr, bpfsys.BpfMapInfo).max_entries):
            prog_id = C.c_uint32()
            if bpfsys.lookup(arr, C.c_uint32(idx), prog_id):
                slots.setdefault(prog_id.value, []).append(idx)
    finally:
        os.close(arr)
    for prog_id, idxs in slots.items():
        fd = bpfsys._lib.bpf_prog_get_fd_by_id(prog_id)
        if fd < 0:
            continue
        names = [SCHED_NAMES[i] for i in idxs if i in SCHED_NAMES]
        role = ("xdplb: picks the destination, -s " + " ".join(names) if names
                else "xdplb: ICMP errors and answers" if S.XDPLB_PROG_ICMP in idxs
                else "xdplb: builds the connection")
        try:
            out.append(_size(fd, role))
        finally:
            os.close(fd)
    return out + [_size(fd, "reference") for name, fd in ref_fds.items()
                  if name not in pkt.HARNESSES]
