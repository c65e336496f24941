"""`xdplb bench` part 7: the anatomy of a new connection: its building
blocks, ns each, and the size of every program on the path.

Every program of bpf/bench_ops.c does one operation on the never-seen
5-tuple the new-connection harness (newconn.Harness) gives it on every
iteration, in tables with the geometry of xdplb's conns and conns_assured
maps, and counts the expected outcome (the proof: the count moves by exactly
repeat). All rows take turns. The parse row is the harness, the parse and
the count; every other row is shown net of it: the operation alone.
A new Masq connection of today's data path does, among other work, three
parses, two tail calls, a missed lookup in each connection table, one LRU
insert (its one entry) and (usually no) FIB lookup: these rows price each of
them. The two-insert rows price what a Masq connection took before it had
one entry (layout 2: the client's tuple and the reply's).

Program sizes come from the kernel's bpf_prog_info (what bpftool prog show
prints): instructions after verification (xlated), bytes of machine code
(jited) and the instructions the verifier walked (its work, not a count of
what runs): xdplb's entry program, every program its new_conn prog array
holds, and the reference programs.
"""
import contextlib
import ctypes as C
import os
import socket
import statistics
import time

from .. import bpfsys
from ..loader import NEW_CONN_PIN
from . import newconn, pkt
from .common import percpu_sum

# (part, program, OP_* index in bench_ops.c, table emptied before each run, label)
OPS = (
    ("parse", "op_parse", 0, None,
     "harness + parse + a per-CPU count (the baseline of the rows below)"),
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


def run(repeat=1_000_000, runs=5, log=None):
    log = log or (lambda m: None)
    t0 = time.monotonic()
    fresh = min(repeat, newconn.FRESH_MAX)
    with contextlib.ExitStack() as stack:
        log("ops: compiling bpf/xdplb.c (for its maps' geometry) and the building blocks")
        st = stack.enter_context(pkt.private_state())
        ref, rfds = pkt.compile_reference()
        stack.callback(ref.cleanup)
        b, fds = pkt.compile_bench("bench_ops.c", [prog for _, prog, _, _, _ in OPS], st)
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}o"))
        b[b"op_next"][C.c_int(0)] = C.c_int(rfds["bench_trivial"])
        cfg = b[b"op_cfg"]
        leaf = cfg.Leaf()
        leaf.fib_dst = int.from_bytes(socket.inet_aton(pkt.RSS[0]), "little")
        cfg[C.c_int(0)] = leaf
        h = newconn.Harness(ref, rfds, ifindex["bc0"])
        for table, prog in FULL:
            log(f"ops: filling {table}")
            h.fill(fds[prog], st.conns.max_entries)
        count = b[b"op_count"]

        def probe(op):
            return lambda: {**h.probe(), "op": percpu_sum(count, op)}

        def clear(table):
            return (lambda: b[table.encode()].items_delete_batch()) if table else None
        timed = [h.timed(part, fds[prog], fresh, probe(op), clear(table))
                 for part, prog, op, table, _ in OPS]
        log(f"ops: {len(OPS)} building blocks taking turns, {fresh:,} per run")
        res = pkt.interleave(timed, runs)
        sizes = program_sizes(st, rfds)
    base = statistics.median(res["parse"][0])
    rows = []
    for part, prog, _, _, label in OPS:
        times, deltas, verdicts = res[part]
        ok, proof = pkt.check(deltas, {"op": 1, "harness.seq": 1}, fresh)
        net = times if part == "parse" else [t - base for t in times]
        rows.append({"part": part, "label": label, "program": prog, "ns": statistics.median(net),
                     "runs_ns": net, "ok": ok and verdicts == {"TX"}, "proof": proof,
                     "verdict": "/".join(sorted(verdicts))})
    return {"rows": rows, "sizes": sizes, "repeat": fresh, "runs": runs,
            "seconds": time.monotonic() - t0}


def _size(fd, role):
    i = bpfsys.obj_info(fd, bpfsys.BpfProgInfo)
    return {"name": i.name.decode(), "role": role, "xlated_insns": i.xlated_prog_len // 8,
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
                else "xdplb: builds the connection")
        try:
            out.append(_size(fd, role))
        finally:
            os.close(fd)
    return out + [_size(fd, "reference") for name, fd in ref_fds.items()
                  if name != "bench_newconn"]
