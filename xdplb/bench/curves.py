"""Part 1, continued: the scaling curves (ns/packet against 10 -> 100,000
services and 1,000 -> 1,000,000 tracked connections), with the same
PROG_TEST_RUN method and counter proofs as pkt.py.

The curves compile the data path with larger capacities (-DXDPLB_MAX_SERVICES,
-DXDPLB_MAX_CONNS), fill the tables with other services / connections and
measure the established NAT flow and a new connection at each size."""
import contextlib
import ctypes as C
import os
import socket
import statistics
import time

from .. import bpfsys
from ..structs import Conn, ConnKey, SvcEntry, SvcKey
from . import newconn, pkt
from .common import BenchError

_lib = bpfsys._lib
_lib.bpf_map_update_batch.argtypes = [C.c_int, C.c_void_p, C.c_void_p, C.POINTER(C.c_uint32),
                                      C.c_void_p]
_lib.bpf_map_update_batch.restype = C.c_int


def update_batch(fd, keys, values):
    """BPF_MAP_UPDATE_BATCH of ctypes arrays (falls back to single updates)."""
    n = C.c_uint32(len(keys))
    ret = _lib.bpf_map_update_batch(fd, C.cast(keys, C.c_void_p), C.cast(values, C.c_void_p),
                                    C.byref(n), None)
    if ret < 0:
        for k, v in zip(keys, values):
            bpfsys.update(fd, k, v)


@contextlib.contextmanager
def sized_state(tag, cflags):
    from ..loader import create_state
    from ..state import State, private_folder
    with private_folder(f"bench-{os.getpid()}-{tag}") as folder:
        create_state(folder, cflags)
        with State(folder) as st:
            yield st


def _newconn(h, st, slot, repeat, runs, hmed, floor):
    """ns of a new connection into a table with room (raw - harness + floor)."""
    def empty():  # an emptied table, and the live per-destination counts with it
        from ..control import Control
        pkt.empty_conns(st)
        Control(st).sweep()
    times, deltas, verdicts = pkt.interleave([h.timed(
        "new", st.prog_fd, repeat, pkt.probe(st, bench_maps=h.maps, svc=slot), empty)],
        runs)["new"]
    ok, proof = pkt.check(deltas, newconn.XDPLB_PROOF, repeat)
    return [t - hmed + floor for t in times], ok, proof, verdicts


def _est_row(st, ifindex, repeat, runs):
    """The established NAT flow of pkt.establish_nat: (times, ok, proof)."""
    frame, c = pkt.establish_nat(st, ifindex)
    times, deltas, _ = pkt.measure(st.prog_fd, frame, ifindex["bc0"], repeat, runs,
                                   pkt.probe(st, svc=c.svc_slot, dests=(c.dest_slot,)))
    ok, proof = pkt.check(deltas, pkt.ESTABLISHED_IN, repeat)
    return times, ok, proof


def _dummy_services(st, start, stop):
    n = stop - start
    if n <= 0:
        return
    keys = (SvcKey * n)()
    vals = (SvcEntry * n)()
    for j, i in enumerate(range(start, stop)):
        keys[j] = SvcKey(addr=(C.c_uint8 * 4)(20, (i >> 16) & 255, (i >> 8) & 255, i & 255),
                         port=socket.htons(80), proto=socket.IPPROTO_TCP)
        vals[j] = SvcEntry(slot=1000 + i, seq=1000 + i, sched=1, ring_len=0,
                           netmask=(C.c_uint8 * 4)(255, 255, 255, 255))
    update_batch(st.services.fd, keys, vals)


def _dummy_conns(st, start, stop, conn):
    """Established Masq connections start..stop-1 from clients 30.x.y.z:5000
    to VIP:80, one entry each, in conns_assured where the data path keeps
    them: copies of conn, an entry the program made (numpy-built raw arrays
    in the layout of structs.ConnKey / structs.Conn)."""
    import numpy as np
    n = stop - start
    if n <= 0:
        return
    ksz, vsz = C.sizeof(ConnKey), C.sizeof(Conn)
    tmpl_k = bytes(pkt.conn_key("0.0.0.0", pkt.VIP, 5000, pkt.VPORT))
    for lo in range(start, stop, 262144):
        hi = min(stop, lo + 262144)
        m = hi - lo
        cli = (np.arange(lo, hi, dtype=np.uint32) | np.uint32(30 << 24)).astype(">u4")
        keys = np.frombuffer(tmpl_k * m, dtype=np.uint8).reshape(m, ksz).copy()
        keys[:, 0:4] = cli.view(np.uint8).reshape(m, 4)     # saddr
        vals = np.frombuffer(bytes(conn) * m, dtype=np.uint8).reshape(m, vsz).copy()
        update_batch_raw(st.conns_assured.fd, keys, vals, m)


def update_batch_raw(fd, keys, vals, m):
    n = C.c_uint32(m)
    ret = _lib.bpf_map_update_batch(fd, keys.ctypes.data, vals.ctypes.data, C.byref(n), None)
    if ret < 0:
        raise BenchError(f"map batch update failed ({ret})")


def curve(kind, sizes, repeat, runs, log, floor=None):
    """kind 'services' or 'conns': rows of (size, established ns, new ns)."""
    big = max(sizes)
    if kind == "services":
        cflags = [f"-DXDPLB_MAX_SERVICES={1 << max(14, (big + 1000).bit_length())}"]
    else:
        size = 1 << max(18, (big + 1000).bit_length())
        cflags = [f"-DXDPLB_MAX_CONNS={size}", f"-DXDPLB_MAX_ASSURED={size}"]
    rows = []
    fresh = min(repeat, newconn.FRESH_MAX // 4)
    with contextlib.ExitStack() as stack:
        log(f"pkt: {kind} curve: compiling with {' '.join(cflags)}")
        b, fds = pkt.compile_reference()
        stack.callback(b.cleanup)
        st = stack.enter_context(sized_state(f"curve-{kind}", cflags))
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}{kind[0]}"))
        bc0 = ifindex["bc0"]
        svc = pkt.configure(st, ifindex)
        if kind == "conns":    # what the filler connections copy: one the program made
            _, filler = pkt.handshake(st, ifindex, pkt.VIP, pkt.CPORT_REPLY)
        est_frame0 = pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK,
                                   pkt.CLIENT_MAC)
        if floor is None:
            floor = statistics.median(pkt.measure(fds["bench_trivial"], est_frame0, bc0,
                                                  repeat, runs)[0])
        h = newconn.Harness(b, fds, bc0)
        hmed = statistics.median(pkt.interleave([h.timed("control", fds["bench_trivial"],
                                                         fresh)], runs)["control"][0])
        have = 0
        for n in sorted(sizes):
            t0 = time.monotonic()
            if kind == "services":
                _dummy_services(st, have, n - 2)    # + the Masq and DR services
            else:
                pkt.empty_conns(st)
                _dummy_conns(st, 0, n - 1, filler)
            have = n - 2 if kind == "services" else 0
            times, ok, proof = _est_row(st, ifindex, repeat, runs)
            row = {"kind": kind, "size": n, "est_ns": statistics.median(times),
                   "est_runs": times, "ok": ok, "proof": proof}
            if kind == "services":
                ntimes, nok, nproof, _ = _newconn(h, st, svc.slot, fresh, runs, hmed, floor)
                row.update(new_ns=statistics.median(ntimes), new_runs=ntimes,
                           ok=ok and nok, proof=f"{proof}; new: {nproof}")
            else:
                # One SYN per call into the full table (the harness would flush it).
                ctimes = []
                for i in range(min(2000, repeat)):
                    f = pkt.tcp_frame(f"13.0.{i >> 8 & 255}.{i & 255}", pkt.VIP, 0x9000,
                                      pkt.VPORT, pkt.TCP_SYN, pkt.CLIENT_MAC)
                    ctimes.append(bpfsys.prog_test_run(st.prog_fd, f,
                                                       ingress_ifindex=bc0).duration)
                row.update(new_call_ns=statistics.median(ctimes))
            log(f"pkt: {kind} {n:,}: established {row['est_ns']:.0f} ns"
                + (f", new {row['new_ns']:.0f} ns" if "new_ns" in row else "")
                + f" ({time.monotonic() - t0:.1f} s)")
            rows.append(row)
    base = rows[0]
    for r in rows:
        r["est_x_smallest"] = r["est_ns"] / base["est_ns"]
        if "new_ns" in r:
            r["new_x_smallest"] = r["new_ns"] / base["new_ns"]
    return rows
