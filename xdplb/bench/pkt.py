"""`xdplb bench` part 1: ns per packet of the XDP data path, via BPF_PROG_TEST_RUN.

Every figure is the kernel's own per-iteration time of BPF_PROG_TEST_RUN with
a large repeat (the median of several runs), measured on the real program
(bpf/xdplb.c, compiled and pinned into a private folder) inside a private
network namespace whose devices, routes and permanent neighbours let
bpf_fib_lookup succeed and whose tx_ports devmap holds the egress devices.

PROG_TEST_RUN does not restore the frame between iterations (docs/kernel-and-lab.md §8), so
each xdplb row is built so that the rewritten frame takes the same path
again, and the program's own counters must have moved by exactly the repeat
count on every run; a row whose counters disagree is marked as failed.
"""
import contextlib
import ctypes as C
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
                      XDPLB_DEST_F_AVAILABLE, XDPLB_SCHED_RR, ConnKey, DestEntry, RingKey,
                      SchedPos, SvcEntry, SvcKey)

BENCH_SRC = os.path.join(BPF_DIR, "bench_trivial.c")

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

# The private topology: one namespace, the balancer's two sides as veths.
CLIENT, CLIENT_MAC = "10.0.0.2", "02:00:0a:00:00:02"
LB_C, LB_R = "10.0.0.1", "172.80.0.1"
VIP, VIP_DR, VPORT = "10.0.0.100", "10.0.0.101", 80
RSS = ["172.80.0.2", "172.80.0.3", "172.80.0.4"]
RS_MACS = ["02:00:ac:50:00:02", "02:00:ac:50:00:03", "02:00:ac:50:00:04"]
RPORT = 8080           # Masq real-server port (so the port rewrite is exercised)
CPORT = 40000          # the established flows' client port
TCP_SYN, TCP_ACK = 0x02, 0x10
FRAME_LEN = 64         # 14 + 20 + 20 bytes of headers, zero padded (the harness copies 64)

SVC_NAT, SVC_DR = 1, 2                 # service slots
DEST_NAT = (1, 2, 3)                   # dest slots of the Masq service (rr over three)
DEST_DR = 4                            # dest slot of the DR service

# Row ids, in the order they run (newconn last: it fills the LRU table and
# evicts the established rows' entries).
PARTS = ("trivial", "minnat", "nat", "nat-reply", "dr", "newconn")
LABELS = {
    "trivial": "trivial XDP_TX (floor)",
    "minnat": "minimal NAT reference",
    "nat": "xdplb established NAT (client -> VIP, Masq)",
    "nat-reply": "xdplb established NAT reply (RS -> client, un-NAT)",
    "dr": "xdplb established DR (client -> VIP, Route)",
    "newconn-harness": "new-conn harness + trivial (control)",
    "newconn-raw": "new-conn harness + xdplb (raw)",
    "newconn-call": "xdplb new connection, one SYN per call (cross-check)",
    "newconn-fresh": "xdplb new connection, table with room (SYN, rr, Masq)",
    "newconn": "xdplb new connection, full table (SYN, rr, Masq)",
}
TARGETS = {"nat": 1.5, "nat-reply": 1.5, "dr": 1.5, "newconn-call": 3.0, "newconn-fresh": 3.0,
           "newconn": 3.0}
PERCALL_MAX = 10_000   # SYNs of the repeat=1 cross-check
FRESH_MAX = 100_000    # SYNs per run into an emptied table: 200k entries < XDPLB_MAX_CONNS  # x floor, from the issue
MINNAT_TARGET = 1.2    # x minimal NAT, the aim for established flows (docs/kernel-and-lab.md §9)


from .common import BenchError  # noqa: E402


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

def _bpffs():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "bpf" and pre.split()[4] == "/sys/fs/bpf":
                return "/sys/fs/bpf"
    from ..state import bpffs_root
    return bpffs_root(create=True)


@contextlib.contextmanager
def private_state():
    """The real program and maps, compiled and pinned in <bpffs>/xdplb/bench-<pid>."""
    from ..loader import open_state
    from ..state import private_folder
    with private_folder(f"bench-{os.getpid()}") as folder:
        with open_state(folder) as st:
            yield st


def compile_reference():
    """bpf/bench_trivial.c: (bcc object, {function name: prog fd})."""
    from bcc import BPF
    b = BPF(src_file=BENCH_SRC.encode(), cflags=[f"-I{BPF_DIR}", "-Wno-unused-function"])
    fds = {f: b.load_func(f.encode(), BPF.XDP).fd
           for f in ("bench_trivial", "bench_minnat", "bench_newconn")}
    return b, fds


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


def measure(prog_fd, frame, ifindex, repeat, runs, probe=None, warmup=True, prepare=None):
    """ns per iteration of each run, and per run the counter deltas of probe().
    prepare(), if given, runs before the warm-up and before every run."""
    if warmup:
        if prepare:
            prepare()
        bpfsys.prog_test_run(prog_fd, frame, repeat=max(1, min(repeat, 100_000)),
                             ingress_ifindex=ifindex)
    times, deltas, verdicts = [], [], set()
    for _ in range(runs):
        if prepare:
            prepare()
        before = probe() if probe else {}
        verdict, _out, ns = bpfsys.prog_test_run(prog_fd, frame, repeat=repeat,
                                                 ingress_ifindex=ifindex)
        after = probe() if probe else {}
        times.append(ns)
        verdicts.add(VERDICTS.get(verdict, str(verdict)))
        deltas.append({k: after[k] - before[k] for k in after})
    return times, deltas, verdicts


def _check(deltas, expect, repeat):
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


def _row(part, times, ok, proof, verdicts, method):
    return {"part": part, "label": LABELS[part], "ns": statistics.median(times),
            "runs_ns": list(times), "ok": ok, "proof": proof,
            "verdict": "/".join(sorted(verdicts)), "method": method}


def _probe(st, bench_maps=None, svc=None, dest=None):
    def probe():
        out = {"fwd": _counter(st, 2), "to_stack": _counter(st, 3)}
        if svc is not None:
            s = _svc(st, svc)
            out["svc.conns"] = s.conns
        if dest is not None:
            d = _dest(st, dest)
            out["dest.inpkts"], out["dest.outpkts"] = d.inpkts, d.outpkts
        if bench_maps is not None:
            out["harness.seq"] = bench_maps["nc_seq"][C.c_int(0)].value
        return out
    return probe


def _percpu_sum(table):
    return sum(int(getattr(v, "value", v)) for v in table[C.c_int(0)])


def run(parts=PARTS, repeat=1_000_000, runs=5, log=None):
    """Measure the given parts; returns {"rows": [...], "meta": {...}}."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise BenchError(f"unknown part(s): {', '.join(sorted(unknown))}")
    parts = [p for p in PARTS if p in set(parts) | {"trivial"}]
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    rows = []
    ns_name = f"xdplb-bench-{os.getpid()}"
    with contextlib.ExitStack() as stack:
        log("compiling bpf/bench_trivial.c")
        b, fds = compile_reference()
        stack.callback(b.cleanup)
        st = None
        if any(p in parts for p in ("nat", "nat-reply", "dr", "newconn")):
            log("compiling bpf/xdplb.c into a private pin folder")
            st = stack.enter_context(private_state())
        ifindex = stack.enter_context(netns(ns_name))
        bc0, br0 = ifindex["bc0"], ifindex["br0"]
        if st is not None:
            configure(st, ifindex)
        est_frame = tcp_frame(CLIENT, VIP, CPORT, VPORT, TCP_ACK, CLIENT_MAC)

        # The floor.
        log("trivial")
        times, _, verdicts = measure(fds["bench_trivial"], est_frame, bc0, repeat, runs)
        rows.append(_row("trivial", times, True, "verdict XDP_TX (no counter: the floor)",
                         verdicts, "bench_trivial: returns XDP_TX, touches nothing"))

        if "minnat" in parts:
            log("minnat")
            mn = b[b"mn_conns"]
            nat = mn.Leaf()
            nat.daddr = int.from_bytes(socket.inet_aton(RSS[0]), "little")
            nat.dport = _p(RPORT)
            for key_dst, key_port in ((VIP, VPORT), (RSS[0], RPORT)):  # original + rewritten
                k = mn.Key()
                k.saddr = int.from_bytes(socket.inet_aton(CLIENT), "little")
                k.daddr = int.from_bytes(socket.inet_aton(key_dst), "little")
                k.sport, k.dport, k.proto = _p(CPORT), _p(key_port), socket.IPPROTO_TCP
                mn[k] = nat
            hits = b[b"mn_hits"]
            times, deltas, verdicts = measure(
                fds["bench_minnat"], est_frame, bc0, repeat, runs,
                probe=lambda: {"minnat.hits": _percpu_sum(hits)})
            ok, proof = _check(deltas, {"minnat.hits": 1}, repeat)
            rows.append(_row("minnat", times, ok, proof, verdicts,
                             "bench_minnat with LRU entries for client->VIP:80 and its rewritten "
                             "form client->RS:8080 (both rewrite to RS:8080)"))

        if "nat" in parts or "nat-reply" in parts:
            # A real SYN through the program creates the IN and OUT entries and
            # caches the egress in the IN entry; one reply caches it in OUT.
            v, _, _ = bpfsys.prog_test_run(
                st.prog_fd, tcp_frame(CLIENT, VIP, CPORT, VPORT, TCP_SYN, CLIENT_MAC),
                ingress_ifindex=bc0)
            in_key = conn_key(CLIENT, VIP, CPORT, VPORT)
            c = st.conn_table.get(in_key)
            if c is None or v not in (XDP_TX, XDP_REDIRECT):
                raise BenchError(f"xdplb did not forward the set-up SYN (verdict "
                                 f"{VERDICTS.get(v, v)}): is bpf/xdplb.c the data path?")
            rs, dslot = socket.inet_ntoa(bytes(c.addr)), c.dest_slot
            reply = tcp_frame(rs, CLIENT, RPORT, CPORT, TCP_ACK | TCP_SYN, RS_MACS[0])
            bpfsys.prog_test_run(st.prog_fd, reply, ingress_ifindex=br0)
            # Fixed points: the rewritten frame finds an entry that rewrites it
            # to itself, so every iteration takes the established path.
            _copy_conn(st, in_key, in_key, IP_VS_TCP_S_ESTABLISHED)
            _copy_conn(st, in_key, conn_key(CLIENT, rs, CPORT, RPORT), IP_VS_TCP_S_ESTABLISHED)
            _copy_conn(st, conn_key(rs, CLIENT, RPORT, CPORT), conn_key(VIP, CLIENT, VPORT, CPORT))
            probe = _probe(st, svc=SVC_NAT, dest=dslot)
            if "nat" in parts:
                log("nat")
                times, deltas, verdicts = measure(st.prog_fd, est_frame, bc0, repeat, runs, probe)
                ok, proof = _check(deltas, {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0,
                                            "to_stack": 0}, repeat)
                rows.append(_row("nat", times, ok, proof, verdicts,
                                 f"ACK client:{CPORT}->VIP:80 on a connection set up by a real "
                                 "SYN (egress cached by the program); a copy of its IN entry "
                                 f"keyed by the rewritten tuple client->{rs}:{RPORT} makes the "
                                 "rewrite a fixed point"))
            if "nat-reply" in parts:
                log("nat-reply")
                reply = tcp_frame(rs, CLIENT, RPORT, CPORT, TCP_ACK, RS_MACS[0])
                times, deltas, verdicts = measure(st.prog_fd, reply, br0, repeat, runs, probe)
                ok, proof = _check(deltas, {"dest.outpkts": 1, "fwd": 1, "svc.conns": 0,
                                            "to_stack": 0}, repeat)
                rows.append(_row("nat-reply", times, ok, proof, verdicts,
                                 f"ACK {rs}:{RPORT}->client:{CPORT}; a copy of its OUT entry "
                                 "keyed by the un-NATed tuple VIP:80->client makes the rewrite "
                                 "a fixed point (a pure ACK in ESTABLISHED leaves the IN entry alone)"))

        if "dr" in parts:
            log("dr")
            v, _, _ = bpfsys.prog_test_run(
                st.prog_fd, tcp_frame(CLIENT, VIP_DR, CPORT, VPORT, TCP_SYN, CLIENT_MAC),
                ingress_ifindex=bc0)
            key = conn_key(CLIENT, VIP_DR, CPORT, VPORT)
            if st.conn_table.get(key) is None or v not in (XDP_TX, XDP_REDIRECT):
                raise BenchError(f"xdplb did not forward the DR set-up SYN "
                                 f"(verdict {VERDICTS.get(v, v)})")
            _copy_conn(st, key, key, IP_VS_TCP_S_ESTABLISHED)
            frame = tcp_frame(CLIENT, VIP_DR, CPORT, VPORT, TCP_ACK, CLIENT_MAC)
            times, deltas, verdicts = measure(st.prog_fd, frame, bc0, repeat, runs,
                                              _probe(st, svc=SVC_DR, dest=DEST_DR))
            ok, proof = _check(deltas, {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0,
                                        "to_stack": 0}, repeat)
            rows.append(_row("dr", times, ok, proof, verdicts,
                             "ACK client->VIP_DR:80 on a connection set up by a real SYN; DR "
                             "only rewrites MACs, so the frame is its own fixed point"))

        if "newconn" in parts:
            log("newconn")
            tmpl = tcp_frame("11.0.0.0", VIP, 0x8000, VPORT, TCP_SYN, CLIENT_MAC)
            tm = b[b"nc_tmpl"]
            leaf = tm.Leaf()
            C.memmove(C.addressof(leaf), tmpl, FRAME_LEN)
            tm[C.c_int(0)] = leaf
            target = b[b"nc_target"]
            bmaps = {"nc_seq": b[b"nc_seq"]}
            # Control: the harness tail-calling the trivial program.
            target[C.c_int(0)] = C.c_int(fds["bench_trivial"])
            htimes, hdeltas, hverd = measure(fds["bench_newconn"], tmpl, bc0, repeat, runs,
                                             _probe(st, bench_maps=bmaps))
            hok, hproof = _check(hdeltas, {"harness.seq": 1, "fwd": 0}, repeat)
            rows.append(_row("newconn-harness", htimes, hok and hverd == {"TX"}, hproof, hverd,
                             "bench_newconn rewrites the frame from a template with a fresh "
                             "source address:port, then tail-calls bench_trivial"))
            target[C.c_int(0)] = C.c_int(st.prog_fd)
            probe = _probe(st, bench_maps=bmaps, svc=SVC_NAT)
            # Cross-check without the harness: one distinct SYN per call.
            st.conn_table.clear()
            n = min(repeat, PERCALL_MAX)
            syns = [tcp_frame(f"12.0.{i >> 8 & 255}.{i & 255}", VIP, 0x8000 + (i >> 16), VPORT,
                              TCP_SYN, CLIENT_MAC) for i in range(n)]
            before = probe()
            ctimes = [bpfsys.prog_test_run(st.prog_fd, f, ingress_ifindex=bc0).duration
                      for f in syns]
            after = probe()
            ttimes = [bpfsys.prog_test_run(fds["bench_trivial"], f, ingress_ifindex=bc0).duration
                      for f in syns]
            floor = rows[0]["ns"]
            tmed = statistics.median(ttimes)
            groups = [ctimes[i::runs] for i in range(runs)]
            cok, cproof = _check([{k: after[k] - before[k] for k in after if k != "harness.seq"}],
                                 {"svc.conns": 1, "fwd": 1, "to_stack": 0}, n)
            rows.append(_row("newconn-call", [statistics.median(g) - tmed + floor for g in groups],
                             cok, f"{cproof} over {n:,} calls",
                             {"REDIRECT"} if cok else {"?"},
                             f"{n:,} calls with repeat=1, each a SYN of a distinct 5-tuple; "
                             f"median per-call time - median per-call time of the trivial "
                             f"program on the same frames ({tmed:.0f} ns: timer and dispatch "
                             f"overhead) + floor; min–max are the medians of {runs} interleaved "
                             "groups"))
            # With the harness, first with room in the table: emptied before every run, and few
            # enough SYNs (two entries each) that the LRU never has to evict.
            fresh = min(repeat, FRESH_MAX)
            t1 = time.monotonic()
            ftimes, fdeltas, fverd = measure(fds["bench_newconn"], tmpl, bc0, fresh, runs, probe,
                                             prepare=st.conn_table.clear)
            log(f"newconn-fresh took {time.monotonic() - t1:.1f} s")
            fok, fproof = _check(fdeltas, {"svc.conns": 1, "fwd": 1, "harness.seq": 1,
                                           "to_stack": 0}, fresh)
            floor = rows[0]["ns"]
            hmed = statistics.median(htimes)
            rows.append(_row("newconn-fresh", [t - hmed + floor for t in ftimes], fok and hok,
                             fproof, fverd,
                             f"the harness tail-calling xdplb, {fresh:,} SYNs per run of never-seen "
                             "5-tuples to VIP:80 (rr over 3 Masq real servers) into a conns table "
                             "emptied before each run (no LRU eviction); shown as raw - control + "
                             "floor"))
            times, deltas, verdicts = measure(fds["bench_newconn"], tmpl, bc0, repeat, runs, probe)
            ok, proof = _check(deltas, {"svc.conns": 1, "fwd": 1, "harness.seq": 1,
                                        "to_stack": 0}, repeat)
            rows.append(_row("newconn-raw", times, ok, proof, verdicts,
                             "the same harness tail-calling xdplb: every iteration is a SYN of "
                             "a never-seen 5-tuple to VIP:80 (rr over 3 Masq real servers); "
                             "the conns LRU fills and evicts as on a busy balancer"))
            rows.append(_row("newconn", [t - hmed + floor for t in times], ok and hok, proof,
                             verdicts, "raw - control + floor: the new-connection path alone, "
                             "with the harness's template copy and tail call taken out; after "
                             "~131k SYNs the conns LRU is full, so this is the steady state of "
                             "a busy balancer: every SYN evicts"))
    floor = rows[0]["ns"]
    minnat = next((r["ns"] for r in rows if r["part"] == "minnat"), None)
    for r in rows:
        r["x_floor"] = r["ns"] / floor if floor else None
        r["x_minnat"] = r["ns"] / minnat if minnat else None
    meta = {"repeat": repeat, "runs": runs, "kernel": platform.release(),
            "cpus": os.cpu_count(), "seconds": time.monotonic() - t0,
            "cpu_model": _cpu_model()}
    return {"rows": rows, "meta": meta}


def _cpu_model():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ---- printing ------------------------------------------------------------------------

def _target(r):
    part = r["part"]
    out = []
    if part in TARGETS:
        t = TARGETS[part]
        out.append(f"≤ {t:g}× floor: {'yes' if r['x_floor'] <= t else 'no'}")
    if part in ("nat", "nat-reply", "dr") and r["x_minnat"] is not None:
        out.append(f"≤ {MINNAT_TARGET:g}× min NAT: "
                   f"{'yes' if r['x_minnat'] <= MINNAT_TARGET else 'no'}")
    return "; ".join(out) or "—"


def format_table(result):
    rows, meta = result["rows"], result["meta"]
    lines = [
        f"xdplb bench: BPF_PROG_TEST_RUN, repeat {meta['repeat']:,} per run, median of "
        f"{meta['runs']} runs; kernel {meta['kernel']}, {meta['cpus']} CPUs ({meta['cpu_model']})",
        "",
        "| measurement | ns/packet (median) | runs min–max | × floor | × min NAT | hits = repeat | target |",
        "| --- | ---: | ---: | ---: | ---: | :---: | --- |",
    ]
    for r in rows:
        xf = f"{r['x_floor']:.2f}" if r["x_floor"] else "—"
        xm = f"{r['x_minnat']:.2f}" if r["x_minnat"] else "—"
        hits = "—" if r["part"] == "trivial" else ("yes" if r["ok"] else "**NO**")
        lo, hi = min(r["runs_ns"]), max(r["runs_ns"])
        lines.append(f"| {r['label']} | {r['ns']:.0f} | {lo:.0f}–{hi:.0f} | {xf} | {xm} | "
                     f"{hits} | {_target(r)} |")
    lines += ["", "Notes:", ""]
    for r in rows:
        lines.append(f"- {r['label']}: {r['method']}. Verdict {r['verdict']}. "
                     f"Counters: {r['proof']}.")
    lines += [
        "- Every xdplb row runs the real bpf/xdplb.c, compiled and pinned in a private bpffs "
        "folder, inside a private netns (veths, addresses, permanent neighbours, "
        "ip_forward=1, tx_ports filled as `xdplb attach` does) so bpf_fib_lookup and the "
        "devmap redirect succeed; services, destinations, the rr ring and the connection "
        "entries go straight into the maps.",
        "- PROG_TEST_RUN does not restore the frame between iterations, so each row is built "
        "to take the same path every iteration and proves it: the counters listed moved by "
        "exactly repeat on every run (fwd = XDPLB_CNT_FWD, to_stack = XDPLB_CNT_TO_STACK, "
        "svc/dest = the IPVS stats of the service and destination slots).",
        "- Targets: the issue asks established ≤ 1.5× and new connection ≤ 3× the trivial "
        "program; the calibration in docs/kernel-and-lab.md §9 shows the minimal NAT program "
        "alone is 2.5–2.8× trivial, so for established flows the realistic aim is ≤ 1.2× that "
        "program.",
        f"- Total time {meta['seconds']:.1f} s.",
    ]
    return "\n".join(lines)


def all_ok(result):
    return all(r["ok"] for r in result["rows"])
