"""`xdplb bench` part 1: ns per packet of the XDP data path, via BPF_PROG_TEST_RUN.

Every figure is the kernel's own per-iteration time of BPF_PROG_TEST_RUN with
a large repeat (the median of several runs), measured on the real program
(bpf/xdplb.c, compiled and pinned into a private folder) inside a private
network namespace whose devices, routes and permanent neighbours let
bpf_fib_lookup succeed and whose tx_ports devmap holds the egress devices,
side by side with the reference programs of bpf/bench_trivial.c compiled in
the same run. Rows compared with each other take turns (interleave()).

PROG_TEST_RUN does not restore the frame between iterations (docs/kernel-and-lab.md §8), so
each xdplb row is built so that the rewritten frame takes the same path
again, and the program's own counters must have moved by exactly the repeat
count on every run; a row whose counters disagree is marked as failed.
This module holds the lab (namespace, state, frames), the timing and proof
primitives and the established-flow rows; newconn.py the new-connection rows.
"""
import contextlib
import ctypes as C
import dataclasses
import os
import platform
import socket
import statistics
import struct
import time


from .. import bpfsys
from .. import topology as T
from ..loader import BPF_DIR
from ..netns import NetnsError
from ..structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_TCP_S_ESTABLISHED,
                      XDPLB_DEST_F_AVAILABLE, XDPLB_LIST_MAX, XDPLB_SCHED_RR, ConnKey,
                      DestEntry, RingKey, SchedPos, SvcEntry, SvcKey)
from .common import BenchError, percpu_sum

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

# The private topology: one namespace, the balancer's two sides as veths.
CLIENT, CLIENT_MAC = "10.0.0.2", "02:00:0a:00:00:02"
LB_C, LB_R = "10.0.0.1", "172.80.0.1"
VIP, VIP_DR, VPORT = "10.0.0.100", "10.0.0.101", 80
# As many real servers as a list scheduler considers (XDPLB_LIST_MAX), each
# with a permanent neighbour; most rows use the first three.
RSS = [f"172.80.0.{i}" for i in range(2, 2 + XDPLB_LIST_MAX)]
RS_MACS = [f"02:00:ac:50:00:{i:02x}" for i in range(2, 2 + XDPLB_LIST_MAX)]
RPORT = 8080           # Masq real-server port (so the port rewrite is exercised)
CPORT = 40000          # the established flows' client port
TCP_SYN, TCP_ACK = 0x02, 0x10
FRAME_LEN = 64         # 14 + 20 + 20 bytes of headers, zero padded (the harness copies 64)

SVC_NAT, SVC_DR = 1, 2                 # service slots
DEST_NAT = (1, 2, 3)                   # dest slots of the Masq service (rr over three)
DEST_DR = 4                            # dest slot of the DR service

# The established-flow rows, in the order they run (part names of run()).
PARTS = ("trivial", "minnat", "nat", "nat-reply", "dr", "newconn")
LABELS = {
    "trivial": "trivial XDP_TX (floor)",
    "minnat": "minimal NAT reference",
    "nat": "xdplb established NAT (client -> VIP, Masq)",
    "nat-reply": "xdplb established NAT reply (RS -> client, un-NAT)",
    "dr": "xdplb established DR (client -> VIP, Route)",
}
REFERENCES = ("trivial", "minnat", "newflow-fresh", "newflow")  # rows that are not xdplb
WARMUP_MAX = 100_000   # iterations of a warm-up run


# ---- frames -------------------------------------------------------------------

def _mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp_frame(src, dst, sport, dport, flags, smac="02:00:00:00:00:aa", dmac="02:00:00:00:00:bb"):
    """An Ethernet/IPv4/TCP frame with correct checksums, padded to FRAME_LEN."""
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1 if flags & TCP_ACK else 0,
                      5 << 4, flags, 64240, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64,
                     socket.IPPROTO_TCP, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    frame = _mac(dmac) + _mac(smac) + struct.pack("!H", 0x0800) + ip + tcp
    return frame + bytes(FRAME_LEN - len(frame))


def _a(s):
    return (C.c_uint8 * 4)(*socket.inet_aton(s))


def _p(port):
    return socket.htons(port)


def conn_key(src, dst, sport, dport):
    return ConnKey(saddr=_a(src), daddr=_a(dst), sport=_p(sport), dport=_p(dport),
                   proto=socket.IPPROTO_TCP)


# ---- namespace ----------------------------------------------------------------

TOPOLOGY = T.Topology(    # the balancer's two sides: bc0 faces the client, br0 the servers
    nodes=("lb",),
    veths=(T.Veth(T.End("lb", "bc0", addrs=(f"{LB_C}/24",)), T.End("lb", "bc1")),
           T.Veth(T.End("lb", "br0", addrs=(f"{LB_R}/24",)), T.End("lb", "br1"))),
    neighbours=(T.Neigh("lb", "bc0", CLIENT, CLIENT_MAC),
                *(T.Neigh("lb", "br0", rs, mac) for rs, mac in zip(RSS, RS_MACS))),
    # bpf_fib_lookup answers FWD_DISABLED unless the ingress forwards.
    sysctls=(T.Sysctl("lb", "net.ipv4.ip_forward", 1),))


@contextlib.contextmanager
def netns(prefix):
    """TOPOLOGY built and the calling thread inside it; yields the ifindex of
    bc0 and br0. Leaving removes everything."""
    try:
        net = T.build(TOPOLOGY, prefix)
    except NetnsError as e:
        raise BenchError(str(e)) from None
    with net, net.ns["lb"].entered() as ns:
        yield {d: ns.ifindex(d) for d in ("bc0", "br0")}


# ---- pinned state ---------------------------------------------------------------

@contextlib.contextmanager
def private_state():
    """The real program and maps, compiled and pinned in <bpffs>/xdplb/bench-<pid>."""
    from ..loader import open_state
    from ..state import private_folder
    with private_folder(f"bench-{os.getpid()}") as folder:
        with open_state(folder) as st:
            yield st


BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH = 1, 9


def geometry(st):
    """-D flags for bpf/bench.h: xdplb's conns (an LRU hash) and
    conns_assured (a hash) as the kernel reports them."""
    flags = []
    for name, prefix, kind in (("conns", "CONNS", BPF_MAP_TYPE_LRU_HASH),
                               ("conns_assured", "ASSURED", BPF_MAP_TYPE_HASH)):
        mi = bpfsys.obj_info(getattr(st, name).fd, bpfsys.BpfMapInfo)
        if mi.type != kind:
            raise BenchError(f"{name} is a map of type {mi.type}, not {kind}: the reference "
                             "programs' tables (bpf/bench.h) must follow it")
        flags += [f"-DBENCH_{prefix}_MAX={mi.max_entries}",
                  f"-DBENCH_{prefix}_FLAGS={mi.map_flags}"]
        if name == "conns":
            flags += [f"-DBENCH_KEY_SIZE={mi.key_size}", f"-DBENCH_VALUE_SIZE={mi.value_size}"]
    return flags


def compile_bench(src, progs, st=None):
    """bpf/<src> compiled with bcc: (bcc object, {function name: prog fd}).
    st: an xdplb state whose connection maps' geometry the programs'
    tables take (see geometry()); without it they are small placeholders."""
    from bcc import BPF
    cflags = [f"-I{BPF_DIR}", "-Wno-unused-function", *(geometry(st) if st else ())]
    b = BPF(src_file=os.path.join(BPF_DIR, src).encode(), cflags=cflags)
    return b, {f: b.load_func(f.encode(), BPF.XDP).fd for f in progs}


def compile_reference(st=None):
    """bpf/bench_trivial.c (see compile_bench)."""
    return compile_bench("bench_trivial.c", ("bench_trivial", "bench_minnat", "bench_newflow",
                                             "bench_newconn"), st)


# ---- configuration through the maps ------------------------------------------------

def _service(st, slot, vip, dest_slots):
    st.services.put(SvcKey(addr=_a(vip), port=_p(VPORT), proto=socket.IPPROTO_TCP),
                    SvcEntry(slot=slot, seq=slot, sched=XDPLB_SCHED_RR,
                             ring_len=len(dest_slots), ring_prefix=0, ring_gen=0,
                             ring_base=0, netmask=_a("255.255.255.255")))
    for i, d in enumerate(dest_slots):
        st.sched_ring.put(RingKey(svc_slot=slot, index=i), C.c_uint32(d))
    st.sched_pos.put(slot, SchedPos(pos=0))


def configure(st, ifindex):
    """Masq service VIP:80 -> RS1..3:8080 (rr), DR service VIP_DR:80 -> RS1:80."""
    for d, rs in zip(DEST_NAT, RSS):
        st.dests.put(d, DestEntry(addr=_a(rs), port=_p(RPORT), fwd=IP_VS_CONN_F_MASQ,
                                  flags=XDPLB_DEST_F_AVAILABLE, svc_slot=SVC_NAT, seq=d, weight=1))
    st.dests.put(DEST_DR, DestEntry(addr=_a(RSS[0]), port=_p(VPORT), fwd=IP_VS_CONN_F_DROUTE,
                                    flags=XDPLB_DEST_F_AVAILABLE, svc_slot=SVC_DR, seq=DEST_DR,
                                    weight=1))
    _service(st, SVC_NAT, VIP, DEST_NAT)
    _service(st, SVC_DR, VIP_DR, (DEST_DR,))
    for idx in ifindex.values():  # what `xdplb attach` does for each device
        st.tx_ports.put(idx, C.c_uint32(idx))


def _copy_conn(st, src_key, dst_key, state=None):
    """Copy a connection entry to dst_key in conns_assured, where the data
    path keeps established connections."""
    c = st.conn_table.get(src_key)
    if c is None:
        raise BenchError("the data path did not create the expected connection entry")
    if state is not None:
        c.state = state
    put_assured(st, dst_key, c)
    return c


bpfsys._lib.bpf_map_delete_batch.argtypes = [C.c_int, C.c_void_p, C.POINTER(C.c_uint32),
                                             C.c_void_p]
bpfsys._lib.bpf_map_delete_batch.restype = C.c_int


def empty_conns(st):
    """Both connection tables emptied in a few batch syscalls, where
    st.conn_table.clear() takes one syscall per key (seconds at 10^5)."""
    for m in (st.conns_assured, st.conns):
        for keys, _, n in list(m.raw_chunks()):
            done = C.c_uint32(n)
            if bpfsys._lib.bpf_map_delete_batch(m.fd, keys, C.byref(done), None) < 0:
                ksz = len(keys) // n
                for i in range(done.value, n):
                    bpfsys.delete(m.fd, (C.c_uint8 * ksz).from_buffer_copy(
                        keys[i * ksz:(i + 1) * ksz]))


def put_assured(st, key, c):
    st.conn_table.delete(key)
    st.conns_assured.put(key, c)


# ---- measuring ---------------------------------------------------------------------

def _counter(st, idx):
    return st.counters.sum(idx)


def _dest(st, slot):
    return st.dest_stats.sum(slot)


def _svc(st, slot):
    return st.svc_stats.sum(slot)


@dataclasses.dataclass
class Timed:
    """One thing to time: prog_fd on frame arriving on ifindex, repeat
    iterations per run. probe() returns the counters that prove the path;
    prepare() runs before the warm-up and before every run."""
    name: str
    prog_fd: int
    frame: bytes
    ifindex: int
    repeat: int
    probe: object = None
    prepare: object = None


def interleave(timed, runs, warmup=True):
    """Time every Timed runs times, taking turns, so that a burst of other
    work on the machine spreads over all of them. Returns {name: (ns per
    iteration of each run, counter deltas of each run, verdicts)}."""
    if warmup:
        for t in timed:
            if t.prepare:
                t.prepare()
            bpfsys.prog_test_run(t.prog_fd, t.frame, repeat=max(1, min(t.repeat, WARMUP_MAX)),
                                 ingress_ifindex=t.ifindex)
    out = {t.name: ([], [], set()) for t in timed}
    for _ in range(runs):
        for t in timed:
            times, deltas, verdicts = out[t.name]
            if t.prepare:
                t.prepare()
            before = t.probe() if t.probe else {}
            verdict, _out, ns = bpfsys.prog_test_run(t.prog_fd, t.frame, repeat=t.repeat,
                                                     ingress_ifindex=t.ifindex)
            after = t.probe() if t.probe else {}
            times.append(ns)
            verdicts.add(VERDICTS.get(verdict, str(verdict)))
            deltas.append({k: after[k] - before[k] for k in after})
    return out


def measure(prog_fd, frame, ifindex, repeat, runs, probe=None, warmup=True, prepare=None):
    """interleave() of one: (times, deltas, verdicts)."""
    return interleave([Timed("", prog_fd, frame, ifindex, repeat, probe, prepare)], runs,
                      warmup)[""]


def check(deltas, expect, repeat):
    """expect: {counter: multiple of repeat}; returns (ok, text)."""
    bad = []
    for d in deltas:
        for k, mult in expect.items():
            if d[k] != mult * repeat:
                bad.append(f"{k}={d[k]}")
    names = ", ".join(f"{k} +{mult * repeat if mult else 0}" for k, mult in expect.items())
    if bad:
        return False, f"FAILED: expected {names} per run, saw {', '.join(sorted(set(bad)))}"
    if len(deltas) == 1:
        return True, names
    return True, f"{names} per run (all {len(deltas)} runs)"


def row(part, label, times, ok, proof, verdicts, method):
    return {"part": part, "label": label, "ns": statistics.median(times),
            "runs_ns": list(times), "ok": ok, "proof": proof,
            "verdict": "/".join(sorted(verdicts)), "method": method,
            "reference": part in REFERENCES}


def probe(st, bench_maps=None, svc=None, dest=None):
    """A probe() of xdplb's counters (and the harness's sequence)."""
    def read():
        out = {"fwd": _counter(st, 2), "to_stack": _counter(st, 3)}
        if svc is not None:
            s = _svc(st, svc)
            out["svc.conns"], out["svc.inpkts"] = s.conns, s.inpkts
        if dest is not None:
            d = _dest(st, dest)
            out["dest.inpkts"], out["dest.outpkts"] = d.inpkts, d.outpkts
        if bench_maps is not None:
            out["harness.seq"] = percpu_sum(bench_maps["nc_seq"])
        return out
    return read


# ---- established flows as fixed points -----------------------------------------------

def syn(st, ifindex, dst, cport):
    """A real SYN client:cport -> dst:80 through the program; its IN entry."""
    v, _, _ = bpfsys.prog_test_run(st.prog_fd, tcp_frame(CLIENT, dst, cport, VPORT, TCP_SYN,
                                                         CLIENT_MAC), ingress_ifindex=ifindex)
    c = st.conn_table.get(conn_key(CLIENT, dst, cport, VPORT))
    if c is None or v not in (XDP_TX, XDP_REDIRECT):
        raise BenchError(f"xdplb did not forward the set-up SYN to {dst} (verdict "
                         f"{VERDICTS.get(v, v)}): is bpf/xdplb.c the data path?")
    return c


def establish_nat(st, ifindex, cport=CPORT):
    """A Masq connection client:cport -> VIP:80 set up by a real SYN (which
    caches the egress in its IN entry) and one reply (which caches it in its
    OUT entry), made a fixed point: the rewritten frame finds an entry that
    rewrites it to itself, so every iteration takes the established path.
    Returns (ACK frame, reply ACK frame, real server, dest slot)."""
    c = syn(st, ifindex["bc0"], VIP, cport)
    rs, dslot = socket.inet_ntoa(bytes(c.addr)), c.dest_slot
    mac = RS_MACS[RSS.index(rs)]
    bpfsys.prog_test_run(st.prog_fd, tcp_frame(rs, CLIENT, RPORT, cport, TCP_ACK | TCP_SYN, mac),
                         ingress_ifindex=ifindex["br0"])
    in_key = conn_key(CLIENT, VIP, cport, VPORT)
    _copy_conn(st, in_key, in_key, IP_VS_TCP_S_ESTABLISHED)
    _copy_conn(st, in_key, conn_key(CLIENT, rs, cport, RPORT), IP_VS_TCP_S_ESTABLISHED)
    _copy_conn(st, conn_key(rs, CLIENT, RPORT, cport), conn_key(VIP, CLIENT, VPORT, cport))
    return (tcp_frame(CLIENT, VIP, cport, VPORT, TCP_ACK, CLIENT_MAC),
            tcp_frame(rs, CLIENT, RPORT, cport, TCP_ACK, mac), rs, dslot)


def establish_dr(st, ifindex, cport=CPORT):
    """A DR connection client:cport -> VIP_DR:80 set up by a real SYN; DR
    only rewrites MACs, so its ACK is its own fixed point. Returns the ACK."""
    syn(st, ifindex["bc0"], VIP_DR, cport)
    key = conn_key(CLIENT, VIP_DR, cport, VPORT)
    _copy_conn(st, key, key, IP_VS_TCP_S_ESTABLISHED)
    return tcp_frame(CLIENT, VIP_DR, cport, VPORT, TCP_ACK, CLIENT_MAC)


def minnat_flow(b, cport=CPORT):
    """bench_minnat's fixed point for client:cport -> VIP:80: LRU entries for
    the frame and its rewritten form, both rewriting to RS1:8080. Returns
    the ACK frame."""
    mn = b[b"mn_conns"]
    nat = mn.Leaf()
    nat.daddr = int.from_bytes(socket.inet_aton(RSS[0]), "little")
    nat.dport = _p(RPORT)
    for key_dst, key_port in ((VIP, VPORT), (RSS[0], RPORT)):
        k = mn.Key()
        k.saddr = int.from_bytes(socket.inet_aton(CLIENT), "little")
        k.daddr = int.from_bytes(socket.inet_aton(key_dst), "little")
        k.sport, k.dport, k.proto = _p(cport), _p(key_port), socket.IPPROTO_TCP
        mn[k] = nat
    return tcp_frame(CLIENT, VIP, cport, VPORT, TCP_ACK, CLIENT_MAC)


# ---- the rows -------------------------------------------------------------------------

def _established(b, fds, st, ifindex, parts, repeat, runs):
    """The floor, the minimal NAT program and xdplb's established rows, taking turns."""
    bc0, br0 = ifindex["bc0"], ifindex["br0"]
    est_frame = tcp_frame(CLIENT, VIP, CPORT, VPORT, TCP_ACK, CLIENT_MAC)
    timed = [Timed("trivial", fds["bench_trivial"], est_frame, bc0, repeat)]
    expect, method = {}, {"trivial": "bench_trivial: returns XDP_TX, touches nothing"}
    if "minnat" in parts:
        hits = b[b"mn_hits"]
        timed.append(Timed("minnat", fds["bench_minnat"], minnat_flow(b), bc0, repeat,
                           lambda: {"minnat.hits": percpu_sum(hits)}))
        expect["minnat"] = {"minnat.hits": 1}
        method["minnat"] = ("bench_minnat with LRU entries for client->VIP:80 and its "
                            "rewritten form client->RS:8080 (both rewrite to RS:8080)")
    if "nat" in parts or "nat-reply" in parts:
        frame, reply, rs, dslot = establish_nat(st, ifindex)
        nat_probe = probe(st, svc=SVC_NAT, dest=dslot)
        if "nat" in parts:
            timed.append(Timed("nat", st.prog_fd, frame, bc0, repeat, nat_probe))
            expect["nat"] = {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0}
            method["nat"] = (f"ACK client:{CPORT}->VIP:80 on a connection set up by a real "
                             "SYN (egress cached by the program); a copy of its IN entry "
                             f"keyed by the rewritten tuple client->{rs}:{RPORT} makes the "
                             "rewrite a fixed point")
        if "nat-reply" in parts:
            timed.append(Timed("nat-reply", st.prog_fd, reply, br0, repeat, nat_probe))
            expect["nat-reply"] = {"dest.outpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0}
            method["nat-reply"] = (f"ACK {rs}:{RPORT}->client:{CPORT}; a copy of its OUT entry "
                                   "keyed by the un-NATed tuple VIP:80->client makes the "
                                   "rewrite a fixed point (a pure ACK in ESTABLISHED leaves the "
                                   "IN entry alone)")
    if "dr" in parts:
        timed.append(Timed("dr", st.prog_fd, establish_dr(st, ifindex), bc0, repeat,
                           probe(st, svc=SVC_DR, dest=DEST_DR)))
        expect["dr"] = {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0}
        method["dr"] = ("ACK client->VIP_DR:80 on a connection set up by a real SYN; DR "
                        "only rewrites MACs, so the frame is its own fixed point")
    rows = []
    for name, (times, deltas, verdicts) in interleave(timed, runs).items():
        if name == "trivial":
            ok, proof = verdicts == {"TX"}, "verdict XDP_TX (no counter: the floor)"
        else:
            ok, proof = check(deltas, expect[name], repeat)
        rows.append(row(name, LABELS[name], times, ok, proof, verdicts, method[name]))
    return rows


def run(parts=PARTS, repeat=1_000_000, runs=5, log=None):
    """Measure the given parts; returns {"rows": [...], "meta": {...}}."""
    from . import newconn
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise BenchError(f"unknown part(s): {', '.join(sorted(unknown))}")
    parts = [p for p in PARTS if p in set(parts) | {"trivial"}]
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        st = None
        if any(p in parts for p in ("nat", "nat-reply", "dr", "newconn")):
            log("compiling bpf/xdplb.c into a private pin folder")
            st = stack.enter_context(private_state())
        log("compiling bpf/bench_trivial.c (the reference programs)")
        b, fds = compile_reference(st)
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(netns(f"xdplb-bench-{os.getpid()}"))
        if st is not None:
            configure(st, ifindex)
        log("pkt: established flows (" + ", ".join(p for p in parts if p != "newconn") + ")")
        rows = _established(b, fds, st, ifindex, parts, repeat, runs)
        if "newconn" in parts:
            rows += newconn.rows(b, fds, st, ifindex, repeat, runs, rows[0]["ns"], log)
    floor = rows[0]["ns"]
    minnat = next((r["ns"] for r in rows if r["part"] == "minnat"), None)
    for r in rows:
        r["x_floor"] = r["ns"] / floor if floor else None
        r["x_minnat"] = r["ns"] / minnat if minnat else None
    meta = {"repeat": repeat, "runs": runs, "kernel": platform.release(),
            "cpus": os.cpu_count(), "seconds": time.monotonic() - t0,
            "cpu_model": cpu_model()}
    return {"rows": rows, "meta": meta}


def cpu_model():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown CPU"
