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
This module holds the lab (namespace, state, connection keys), the timing
and proof primitives and the fixed points of established flows of either
family; frames.py the frames, established.py (with xlate.py and tun.py) the
established rows, newconn.py the new-connection rows.
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


from .. import bpfsys, config, model
from .. import topology as T
from ..control import Control
from ..loader import BPF_DIR
from ..netns import NetnsError
from ..structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_TCP_S_ESTABLISHED,
                      XDPLB_CONN_F_FULLNAT, XDPLB_LIST_MAX, COUNTERS, Conn6, ConnKey, ConnKey6)
from .common import BenchError, percpu_sum
from .frames import FRAME_LEN, TCP_ACK, TCP_SYN, is6, packed, tcp_frame  # noqa: F401 (pkt.*)

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
# IPv6 on the same links: a dual-stack client and the first three real servers.
CLIENT6, LB_C6, LB_R6 = "fd00:10::2", "fd00:10::1", "fd00:172::1"
VIP6, VIP6_DR = "fd00:10::100", "fd00:10::101"
RSS6 = [f"fd00:172::{i}" for i in range(2, 5)]
RS_MAC = dict(zip(RSS + RSS6, RS_MACS + RS_MACS[:len(RSS6)]))
# full-NAT's local addresses (bench/fnat.py), on br0: four, so that a run of
# new connections fills a small share of the reply tuples they lend
LADDRS = [f"172.80.0.{i}" for i in range(250, 254)]
RPORT = 8080           # Masq real-server port (so the port rewrite is exercised)
CPORT = 40000          # the established flows' client port
CPORT_REPLY = 41000    # the client port of the reply row's connections

# The rows, in the order they run (part names of run()): established.py's
# (the floor, the minimal NAT program, xdplb's established flows: IPv4, IPv6,
# an ICMP error translated, Route and Tunnel behind the replay harness: the
# client's IPv4, then its IPv6; full-NAT's), then newconn.py's (Masq, then
# full-NAT's beside Masq's table-with-room row).
PARTS = ("trivial", "minnat", "nat", "nat-reply", "dr", "nat6", "nat6-reply", "dr6", "icmp",
         "replay", "dr-live", "tun-ipip", "tun-gue", "tun-4in6", "dr6-live", "tun6-ipip",
         "tun6-gue", "tun-6in4", "fnat", "fnat-reply", "newconn", "newconn-fnat")
# Groups of rows `xdplb bench --rows` takes by name: each with the rows it
# is compared with (targets.ISSUE12).
ROW_GROUPS = {"tunnel": ("dr", "dr6", "replay", "dr-live", "tun-ipip", "tun-gue", "tun-4in6",
                         "dr6-live", "tun6-ipip", "tun6-gue", "tun-6in4"),
              "fnat": ("nat", "nat-reply", "fnat", "fnat-reply", "newconn-fnat")}
IPV6_SERVICES = ("nat6", "nat6-reply", "dr6", "dr6-live")   # the parts configure6() serves
REFERENCES = ("trivial", "minnat", "newflow-fresh", "newflow")  # rows that are not xdplb
HARNESSES = ("bench_newconn", "bench_replay")   # bench_trivial.c's programs that are harnesses
WARMUP_MAX = 100_000   # iterations of a warm-up run


# ---- frames and keys -------------------------------------------------------------

def _p(port):
    return socket.htons(port)


def conn_key(src, dst, sport, dport):
    """The connection key (ConnKey, or ConnKey6 for IPv6 addresses) of a TCP tuple."""
    if is6(src):
        return ConnKey6.from_buffer_copy(packed(src) + packed(dst) + struct.pack(
            "!HHB3x", sport, dport, socket.IPPROTO_TCP))
    return ConnKey(saddr=(C.c_uint8 * 4)(*packed(src)), daddr=(C.c_uint8 * 4)(*packed(dst)),
                   sport=_p(sport), dport=_p(dport), proto=socket.IPPROTO_TCP)


def client_of(dst):
    return CLIENT6 if is6(dst) else CLIENT


def entry(value):
    """The struct conn of a connection table's value (an IPv6 one wraps it)."""
    return value.c if isinstance(value, Conn6) else value


def local_of(value):
    """(address, port) a source-NATed connection was lent (IPv4)."""
    return socket.inet_ntoa(bytes(entry(value).laddr)), socket.ntohs(entry(value).lport)


def real_of(value):
    """(address, port) of a connection's real server."""
    if isinstance(value, Conn6):
        return socket.inet_ntop(socket.AF_INET6, bytes(value.addr6)), socket.ntohs(value.c.port)
    return socket.inet_ntoa(bytes(value.addr)), socket.ntohs(value.port)


# ---- namespace ----------------------------------------------------------------

TOPOLOGY = T.Topology(    # the balancer's two sides: bc0 faces the client, br0 the servers
    nodes=("lb",),
    veths=(T.Veth(T.End("lb", "bc0", addrs=(f"{LB_C}/24", f"{LB_C6}/64")), T.End("lb", "bc1")),
           T.Veth(T.End("lb", "br0", addrs=(f"{LB_R}/24", f"{LB_R6}/64",
                                            *(f"{la}/32" for la in LADDRS))),
                  T.End("lb", "br1"))),
    neighbours=(T.Neigh("lb", "bc0", CLIENT, CLIENT_MAC), T.Neigh("lb", "bc0", CLIENT6, CLIENT_MAC),
                *(T.Neigh("lb", "br0", rs, mac) for rs, mac in RS_MAC.items())),
    # bpf_fib_lookup answers FWD_DISABLED unless the ingress forwards.
    sysctls=(T.Sysctl("lb", "net.ipv4.ip_forward", 1),
             T.Sysctl("lb", "net.ipv6.conf.all.forwarding", 1)))


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


BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_HASH = 1, 6, 9
BPF_MAP_TYPE_DEVMAP = 14

bpfsys._lib.bpf_map_get_fd_by_id.argtypes = [C.c_uint32]
bpfsys._lib.bpf_map_get_fd_by_id.restype = C.c_int


def _expect(name, mi, kind):
    if mi.type != kind:
        raise BenchError(f"{name} is a map of type {mi.type}, not {kind}: the reference "
                         "programs' tables (bpf/bench.h) must follow it")
    return mi


def prog_map_info(prog_fd, name):
    """The BpfMapInfo of the map `name` that prog_fd uses: for the maps the
    data path keeps private (not pinned)."""
    n = bpfsys.obj_info(prog_fd, bpfsys.BpfProgInfo).nr_map_ids
    ids = (C.c_uint32 * n)()
    info = bpfsys.BpfProgInfo(nr_map_ids=n, map_ids=C.addressof(ids))
    size = C.c_uint32(C.sizeof(info))
    bpfsys._check(bpfsys._lib.bpf_obj_get_info_by_fd(prog_fd, C.byref(info), C.byref(size)),
                  "program info")
    for map_id in ids:
        fd = bpfsys._lib.bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            continue
        try:
            mi = bpfsys.obj_info(fd, bpfsys.BpfMapInfo)
        finally:
            os.close(fd)
        if mi.name.decode() == name:
            return mi
    raise BenchError(f"the data path's program uses no map {name}")


def geometry(st):
    """-D flags for bpf/bench.h: xdplb's conns (an LRU hash), conns_assured
    (a hash), rs_table (a hash), egress_cache (a per-CPU array) and tx_ports
    (a devmap) as the kernel reports them."""
    flags = []
    for name, prefix, kind in (("conns", "CONNS", BPF_MAP_TYPE_LRU_HASH),
                               ("conns_assured", "ASSURED", BPF_MAP_TYPE_HASH)):
        mi = _expect(name, bpfsys.obj_info(getattr(st, name).fd, bpfsys.BpfMapInfo), kind)
        flags += [f"-DBENCH_{prefix}_MAX={mi.max_entries}",
                  f"-DBENCH_{prefix}_FLAGS={mi.map_flags}"]
        if name == "conns":
            flags += [f"-DBENCH_KEY_SIZE={mi.key_size}", f"-DBENCH_VALUE_SIZE={mi.value_size}"]
    rs = _expect("rs_table", bpfsys.obj_info(st.rs_table.fd, bpfsys.BpfMapInfo),
                 BPF_MAP_TYPE_HASH)
    eg = _expect("egress_cache", prog_map_info(st.prog_fd, "egress_cache"),
                 BPF_MAP_TYPE_PERCPU_ARRAY)
    tx = _expect("tx_ports", bpfsys.obj_info(st.tx_ports.fd, bpfsys.BpfMapInfo),
                 BPF_MAP_TYPE_DEVMAP)
    return flags + [f"-DBENCH_RS_MAX={rs.max_entries}", f"-DBENCH_RS_FLAGS={rs.map_flags}",
                    f"-DBENCH_RS_KEY_SIZE={rs.key_size}",
                    f"-DBENCH_RS_VALUE_SIZE={rs.value_size}",
                    f"-DBENCH_EGRESS_SLOTS={eg.max_entries}",
                    f"-DBENCH_EGRESS_VALUE_SIZE={eg.value_size}",
                    f"-DBENCH_TX_PORTS_MAX={tx.max_entries}"]


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
                                             *HARNESSES), st)


# ---- configuration, through the control API ---------------------------------------

def configure(st, ifindex):
    """As `xdplbadm` would: the Masq service VIP:80 -> RS1..3:8080 (rr) and
    the DR service VIP_DR:80 -> RS1:80, so services, destinations, rings and
    the real-server table (rs_table, rs_filter) are the planner's own; and
    tx_ports as `xdplb attach` fills it. Returns the Masq service
    (model.Service: its slot and destinations)."""
    ctl = Control(st)
    nat = (model.IPPROTO_TCP, VIP, VPORT)
    ctl.add_service(model.Service(*nat, sched="rr"))
    for rs in RSS[:3]:
        ctl.add_dest(nat, model.Destination(rs, RPORT, fwd=IP_VS_CONN_F_MASQ))
    dr = (model.IPPROTO_TCP, VIP_DR, VPORT)
    ctl.add_service(model.Service(*dr, sched="rr"))
    ctl.add_dest(dr, model.Destination(RSS[0], VPORT, fwd=IP_VS_CONN_F_DROUTE))
    for idx in ifindex.values():  # what `xdplb attach` does for each device
        st.tx_ports.put(idx, C.c_uint32(idx))
    return ctl.get_service(*nat, counts=False)


def configure6(st):
    """configure()'s services over IPv6: [VIP6]:80 -> [RS6 1..3]:8080 (Masq,
    rr) and [VIP6_DR]:80 -> [RS6 1]:80 (Route)."""
    ctl = Control(st)
    nat, dr = (model.IPPROTO_TCP, VIP6, VPORT), (model.IPPROTO_TCP, VIP6_DR, VPORT)
    ctl.add_service(model.Service(*nat, sched="rr"))
    for rs in RSS6:
        ctl.add_dest(nat, model.Destination(rs, RPORT, fwd=IP_VS_CONN_F_MASQ))
    ctl.add_service(model.Service(*dr, sched="rr"))
    ctl.add_dest(dr, model.Destination(RSS6[0], VPORT, fwd=IP_VS_CONN_F_DROUTE))


def rs_filtered(st, addr):
    """Is addr's bit set in rs_filter (its frames then look rs_table up first)?"""
    bit = config.rs_filter_bit(packed(addr))
    word = st.rs_filter.get(bit >> 6)
    return word is not None and bool(word.value >> (bit & 63) & 1)


bpfsys._lib.bpf_map_delete_batch.argtypes = [C.c_int, C.c_void_p, C.POINTER(C.c_uint32),
                                             C.c_void_p]
bpfsys._lib.bpf_map_delete_batch.restype = C.c_int


def empty_conns(st):
    """Both connection tables and the reply tuples source-NATed connections
    were lent (fnat_out: a plain hash, which would otherwise fill across
    runs) emptied in a few batch syscalls, where st.conn_table.clear() takes
    one syscall per key (seconds at 10^5)."""
    for m in (st.conns_assured, st.conns, st.fnat_out):
        for keys, _, n in list(m.raw_chunks()):
            done = C.c_uint32(n)
            if bpfsys._lib.bpf_map_delete_batch(m.fd, keys, C.byref(done), None) < 0:
                ksz = len(keys) // n
                for i in range(done.value, n):
                    bpfsys.delete(m.fd, (C.c_uint8 * ksz).from_buffer_copy(
                        keys[i * ksz:(i + 1) * ksz]))


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
    prepare() runs before the warm-up and before every run. live: with
    BPF_F_TEST_XDP_LIVE_FRAMES (the kernel then reports no verdict)."""
    name: str
    prog_fd: int
    frame: bytes
    ifindex: int
    repeat: int
    probe: object = None
    prepare: object = None
    live: bool = False


@dataclasses.dataclass
class Built:
    """One row of established.py ready to time: what proves it (expect:
    {counter: multiple of repeat}), how it is set up (method). control: the
    part whose time, run by run, is taken off this row's (and the floor's
    added): a harness's."""
    timed: Timed
    expect: dict
    method: str
    label: str
    control: str | None = None


def interleave(timed, runs, warmup=True):
    """Time every Timed runs times, taking turns, so that a burst of other
    work on the machine spreads over all of them. Returns {name: (ns per
    iteration of each run, counter deltas of each run, verdicts)}."""
    if warmup:
        for t in timed:
            if t.prepare:
                t.prepare()
            bpfsys.prog_test_run(t.prog_fd, t.frame, repeat=max(1, min(t.repeat, WARMUP_MAX)),
                                 ingress_ifindex=t.ifindex, live_frames=t.live)
    out = {t.name: ([], [], set()) for t in timed}
    for _ in range(runs):
        for t in timed:
            times, deltas, verdicts = out[t.name]
            if t.prepare:
                t.prepare()
            before = t.probe() if t.probe else {}
            verdict, _out, ns = bpfsys.prog_test_run(t.prog_fd, t.frame, repeat=t.repeat,
                                                     ingress_ifindex=t.ifindex,
                                                     live_frames=t.live)
            after = t.probe() if t.probe else {}
            times.append(ns)
            verdicts.add("live" if t.live else VERDICTS.get(verdict, str(verdict)))
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


def probe(st, bench_maps=None, svc=None, dests=(), events=()):
    """A probe() of xdplb's counters (fwd, to_stack and the COUNTERS named
    in events) and the harness's sequence; dest.* are summed over the
    destination slots dests."""
    def read():
        out = {"fwd": _counter(st, 2), "to_stack": _counter(st, 3)}
        out.update((e, _counter(st, COUNTERS.index(e))) for e in events)
        if svc is not None:
            s = _svc(st, svc)
            out["svc.conns"], out["svc.inpkts"] = s.conns, s.inpkts
        if dests:
            ds = [_dest(st, slot) for slot in dests]
            out["dest.inpkts"] = sum(d.inpkts for d in ds)
            out["dest.outpkts"] = sum(d.outpkts for d in ds)
        if bench_maps is not None:
            out["harness.seq"] = percpu_sum(bench_maps["nc_seq"])
        return out
    return read


# ---- established flows as fixed points -----------------------------------------------

def handshake_frames(dst, cport, dport=VPORT, real=None, local=None):
    """The frames of a connection client:cport -> dst:dport's handshake (the
    client of dst's family), as (frame, device): the client's SYN, the real
    server's SYN-ACK when real = (address, port) of a Masq or full-NAT real
    server (the methods whose replies cross the balancer; to local =
    (address, port) the connection was lent when source-NATed), the
    client's ACK."""
    client = client_of(dst)
    steps = [(tcp_frame(client, dst, cport, dport, TCP_SYN, CLIENT_MAC), "bc0")]
    if real is not None:
        mac = RS_MAC.get(real[0], "02:00:00:00:00:aa")
        to, to_port = local or (client, cport)
        steps.append((tcp_frame(real[0], to, real[1], to_port, TCP_SYN | TCP_ACK, mac), "br0"))
    return steps + [(tcp_frame(client, dst, cport, dport, TCP_ACK, CLIENT_MAC), "bc0")]


def conn_maps(st, dst):
    """(connection table, assured map) of dst's family."""
    return (st.conn_table6, st.conns6_assured) if is6(dst) else (st.conn_table, st.conns_assured)


def handshake(st, ifindex, dst, cport, dport=VPORT):
    """A connection client:cport -> dst:dport set up through the program
    (handshake_frames(): the scheduler picks the real server; a Masq reply
    is found through rs_table and caches its egress in the entry; the ACK
    makes it ESTABLISHED, which moves it to conns_assured, or conns6_assured
    for IPv6). Returns (key, the table's value: a Conn, or a Conn6)."""
    table, assured = conn_maps(st, dst)
    key = conn_key(client_of(dst), dst, cport, dport)
    syn, *rest = handshake_frames(dst, cport, dport)
    bpfsys.prog_test_run(st.prog_fd, syn[0], ingress_ifindex=ifindex[syn[1]])
    c = table.get(key)
    if c is None:
        raise BenchError(f"xdplb did not track the set-up SYN to {dst}:{dport}: is "
                         "bpf/xdplb.c the data path?")
    if entry(c).fwd in (IP_VS_CONN_F_MASQ, XDPLB_CONN_F_FULLNAT):
        real = real_of(c)
        local = local_of(c) if entry(c).lport else None
        rest = handshake_frames(dst, cport, dport, real, local)[1:]
    for frame, dev in rest:
        v, _, _ = bpfsys.prog_test_run(st.prog_fd, frame, ingress_ifindex=ifindex[dev])
        if dev == "br0" and v != XDP_REDIRECT:
            raise BenchError(f"the SYN-ACK of {real[0]}:{real[1]} was not forwarded as a "
                             f"reply (verdict {VERDICTS.get(v, v)}): rs_table?")
    c = assured.get(key)
    if c is None or entry(c).state != IP_VS_TCP_S_ESTABLISHED:
        raise BenchError(f"the connection to {dst}:{dport} did not become established")
    return key, c


def establish_nat(st, ifindex, cport=CPORT, vip=VIP):
    """A Masq connection client:cport -> vip:80 (handshake()), made a fixed
    point for the client's packets: the program rewrites the ACK to client
    -> rs:8080, so a copy of the connection's entry goes under that tuple
    too (as if the client had connected to a virtual service rs:8080 whose
    real server is rs:8080 itself), which rewrites it to itself. Returns
    (ACK frame, the connection's entry)."""
    _, c = handshake(st, ifindex, vip, cport)
    rs, rport = real_of(c)
    conn_maps(st, vip)[1].put(conn_key(client_of(vip), rs, cport, rport), c)
    return tcp_frame(client_of(vip), vip, cport, VPORT, TCP_ACK, CLIENT_MAC), c


def establish_reply(st, ifindex, cport=CPORT_REPLY, vip=VIP):
    """A real server's reply on a Masq connection client:cport -> vip:80
    (handshake()), made a fixed point of two steps, each a reply found
    through rs_table. The reply rs:8080 -> client is un-NATed to vip:80 ->
    client; for that frame to be a reply too, the control API adds a
    virtual service rs:8080 whose masquerading real server is vip:80 (the
    mirror service: rs_table then lists it under vip:80) and a second
    connection client:cport -> rs:8080 is set up through it, whose reply
    vip:80 -> client is un-NATed back to rs:8080 -> client. Returns (reply
    frame, the connection's entry, the mirror connection's entry)."""
    _, c = handshake(st, ifindex, vip, cport)
    rs, rport = real_of(c)
    ctl, mirror = Control(st), (model.IPPROTO_TCP, rs, rport)
    ctl.add_service(model.Service(*mirror, sched="rr"))
    ctl.add_dest(mirror, model.Destination(vip, VPORT, fwd=IP_VS_CONN_F_MASQ))
    _, m = handshake(st, ifindex, rs, cport, rport)
    return tcp_frame(rs, client_of(vip), rport, cport, TCP_ACK, RS_MAC[rs]), c, m


def establish_dr(st, ifindex, cport=CPORT, vip=VIP_DR):
    """A DR connection client:cport -> vip:80 (handshake()); DR only
    rewrites MACs, so its ACK is its own fixed point. Returns (ACK frame,
    the connection's entry)."""
    _, c = handshake(st, ifindex, vip, cport)
    return tcp_frame(client_of(vip), vip, cport, VPORT, TCP_ACK, CLIENT_MAC), c


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

ESTABLISHED_IN = {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0}


def rows_named(names):
    """The parts that names (of PARTS or ROW_GROUPS) stand for, in PARTS'
    order; BenchError for a name of neither."""
    unknown = set(names) - set(PARTS) - set(ROW_GROUPS)
    if unknown:
        raise BenchError(f"unknown row(s): {', '.join(sorted(unknown))} (rows: "
                         f"{', '.join(PARTS)}; groups: {', '.join(ROW_GROUPS)})")
    wanted = {p for n in names for p in ROW_GROUPS.get(n, (n,))}
    return [p for p in PARTS if p in wanted]


def run(parts=PARTS, repeat=1_000_000, runs=5, log=None):
    """Measure the given parts (rows_named()); returns {"rows": [...], "meta": {...}}."""
    from . import established, fnat, newconn
    parts = [p for p in PARTS if p in set(rows_named(parts)) | {"trivial"}]
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        st = None
        if set(parts) - set(REFERENCES):
            log("compiling bpf/xdplb.c into a private pin folder")
            st = stack.enter_context(private_state())
        log("compiling bpf/bench_trivial.c (the reference programs)")
        b, fds = compile_reference(st)
        stack.callback(b.cleanup)
        ifindex = stack.enter_context(netns(f"xdplb-bench-{os.getpid()}"))
        svc = configure(st, ifindex) if st is not None else None
        if set(IPV6_SERVICES) & set(parts):
            configure6(st)
        fsvc = fnat.configure(st) if set(fnat.PARTS) & set(parts) else None
        log("pkt: established flows (" + ", ".join(p for p in parts
                                                    if not p.startswith("newconn")) + ")")
        rows = established.rows(established.Lab(b, fds, st, ifindex), parts, repeat, runs)
        if {"newconn", "newconn-fnat"} & set(parts):
            rows += newconn.rows(b, fds, st, ifindex, svc.slot, repeat, runs, rows[0]["ns"],
                                 log, parts, fsvc and fsvc.slot)
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
