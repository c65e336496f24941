"""Part 1, continued: new connection per scheduler, and the scaling curves
(ns/packet against 10 -> 100,000 services and 1,000 -> 1,000,000 tracked
connections), with the same PROG_TEST_RUN method and counter proofs as pkt.py.

The scheduler rows are table-driven: one row per scheduler xdplb.model knows
(model.SCHED_IDS), each service configured through the control API
(xdplb/control.py) exactly as `xdplbadm -A -s NAME` would.
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
from ..structs import IP_VS_TCP_S_ESTABLISHED, Conn, ConnKey, SvcEntry, SvcKey
from . import pkt
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


def _harness(b, fds, st, vip):
    tmpl = pkt.tcp_frame("11.0.0.0", vip, 0x8000, pkt.VPORT, pkt.TCP_SYN, pkt.CLIENT_MAC)
    tm = b[b"nc_tmpl"]
    leaf = tm.Leaf()
    C.memmove(C.addressof(leaf), tmpl, pkt.FRAME_LEN)
    tm[C.c_int(0)] = leaf
    b[b"nc_target"][C.c_int(0)] = C.c_int(st.prog_fd)
    return tmpl


def _newconn(b, fds, st, vip, slot, bc0, repeat, runs, hmed, floor):
    """ns of a new connection into a table with room (raw - harness + floor)."""
    tmpl = _harness(b, fds, st, vip)
    probe = pkt._probe(st, bench_maps={"nc_seq": b[b"nc_seq"]}, svc=slot)
    def prepare():  # an emptied table, and the live per-destination counts with it
        from ..control import Control
        st.conn_table.clear()
        Control(st).sweep()
    times, deltas, verdicts = pkt.measure(fds["bench_newconn"], tmpl, bc0, repeat, runs, probe,
                                          prepare=prepare)
    ok, proof = pkt._check(deltas, {"svc.conns": 1, "fwd": 1, "to_stack": 0}, repeat)
    return [t - hmed + floor for t in times], ok, proof, verdicts


def _established(st, bc0, br0):
    """Set up the fixed-point established NAT flow (as pkt.run does); returns
    (frame, probe, re-put function)."""
    v, _, _ = bpfsys.prog_test_run(st.prog_fd, pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT,
                                                             pkt.VPORT, pkt.TCP_SYN,
                                                             pkt.CLIENT_MAC),
                                   ingress_ifindex=bc0)
    in_key = pkt.conn_key(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT)
    c = st.conn_table.get(in_key)
    if c is None:
        raise BenchError(f"xdplb did not forward the set-up SYN ({pkt.VERDICTS.get(v, v)})")
    rs = socket.inet_ntoa(bytes(c.addr))
    c.state = IP_VS_TCP_S_ESTABLISHED
    keys = [in_key, pkt.conn_key(pkt.CLIENT, rs, pkt.CPORT, pkt.RPORT)]

    def reput():
        for k in keys:
            pkt.put_assured(st, k, c)
    reput()
    frame = pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK, pkt.CLIENT_MAC)
    return frame, pkt._probe(st, svc=pkt.SVC_NAT, dest=c.dest_slot), reput


def _est_row(st, frame, probe, bc0, repeat, runs):
    times, deltas, verdicts = pkt.measure(st.prog_fd, frame, bc0, repeat, runs, probe)
    ok, proof = pkt._check(deltas, {"dest.inpkts": 1, "fwd": 1, "svc.conns": 0,
                                    "to_stack": 0}, repeat)
    return times, ok, proof


def schedulers(repeat, runs, log):
    """One new-connection row per scheduler in xdplb.model."""
    from .. import model
    from ..control import Control
    from ..model import Destination, Service as MService
    rows = []
    fresh = min(repeat, pkt.FRESH_MAX)
    with contextlib.ExitStack() as stack:
        b, fds = pkt.compile_reference()
        stack.callback(b.cleanup)
        st = stack.enter_context(pkt.private_state())
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}s"))
        bc0 = ifindex["bc0"]
        for idx in ifindex.values():
            st.tx_ports.put(idx, C.c_uint32(idx))
        floor = statistics.median(pkt.measure(fds["bench_trivial"], pkt.tcp_frame(
            pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK, pkt.CLIENT_MAC), bc0,
            repeat, runs)[0])
        tmpl = pkt.tcp_frame("11.0.0.0", pkt.VIP, 0x8000, pkt.VPORT, pkt.TCP_SYN, pkt.CLIENT_MAC)
        tm = b[b"nc_tmpl"]
        leaf = tm.Leaf()
        C.memmove(C.addressof(leaf), tmpl, pkt.FRAME_LEN)
        tm[C.c_int(0)] = leaf
        b[b"nc_target"][C.c_int(0)] = C.c_int(fds["bench_trivial"])
        hmed = statistics.median(pkt.measure(fds["bench_newconn"], tmpl, bc0, fresh, runs)[0])
        ctl = Control(st)
        for k, name in enumerate(model.SCHED_IDS, 1):
            vip = f"10.0.2.{k}"
            log(f"pkt: new connection, scheduler {name}")
            try:
                ctl.add_service(MService(model.IPPROTO_TCP, vip, pkt.VPORT, sched=name))
                for w, rs in enumerate(pkt.RSS, 1):
                    if name == "ovf":  # ovf overflows once every dest has active > weight
                        w = 65536 - w
                    ctl.add_dest((model.IPPROTO_TCP, vip, pkt.VPORT),
                                 Destination(rs, pkt.RPORT, fwd=0, weight=w))
                slot = ctl.get_service(model.IPPROTO_TCP, vip, pkt.VPORT).slot
            except model.XdplbError as e:
                rows.append({"part": f"sched-{name}", "label": f"new connection, -s {name}",
                             "skip": e.message})
                continue
            times, ok, proof, verdicts = _newconn(b, fds, st, vip, slot, bc0, fresh, runs,
                                                  hmed, floor)
            rows.append({"part": f"sched-{name}", "sched": name,
                         "label": f"xdplb new connection, -s {name} (SYN, Masq, 3 dests "
                                  "weights 1/2/3, table with room)",
                         "ns": statistics.median(times), "runs_ns": times, "ok": ok,
                         "proof": proof, "verdict": "/".join(sorted(verdicts)),
                         "x_floor": statistics.median(times) / floor})
    return rows, floor


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


def _dummy_conns(st, start, stop):
    """Established Masq connections start..stop-1, IN and OUT entries each,
    in conns_assured where the data path keeps them (numpy-built raw arrays
    in the layout of structs.ConnKey / structs.Conn)."""
    import numpy as np
    n = stop - start
    if n <= 0:
        return
    ksz, vsz = C.sizeof(ConnKey), C.sizeof(Conn)
    tmpl_k = [bytes(ConnKey(daddr=(C.c_uint8 * 4)(10, 0, 0, 100), sport=socket.htons(5000),
                            dport=socket.htons(80), proto=6)),
              bytes(ConnKey(saddr=(C.c_uint8 * 4)(172, 80, 0, 2), sport=socket.htons(8080),
                            dport=socket.htons(5000), proto=6))]
    tmpl_v = [bytes(Conn(addr=(C.c_uint8 * 4)(172, 80, 0, 2), port=socket.htons(8080), dir=0,
                         dest_slot=1, svc_slot=1, state=1)),
              bytes(Conn(addr=(C.c_uint8 * 4)(10, 0, 0, 100), port=socket.htons(80), dir=1,
                         dest_slot=1, svc_slot=1, state=1))]
    for lo in range(start, stop, 262144):
        hi = min(stop, lo + 262144)
        m = hi - lo
        cli = (np.arange(lo, hi, dtype=np.uint32) | np.uint32(30 << 24)).astype(">u4")
        cli = cli.view(np.uint8).reshape(m, 4)
        for d in (0, 1):
            keys = np.frombuffer(tmpl_k[d] * m, dtype=np.uint8).reshape(m, ksz).copy()
            keys[:, 0:4 if d == 0 else 8][:, -4:] = cli   # IN: saddr; OUT: daddr
            vals = np.frombuffer(tmpl_v[d] * m, dtype=np.uint8).reshape(m, vsz).copy()
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
        size = 1 << max(18, (2 * big + 1000).bit_length())
        cflags = [f"-DXDPLB_MAX_CONNS={size}", f"-DXDPLB_MAX_ASSURED={size}"]
    rows = []
    fresh = min(repeat, pkt.FRESH_MAX // 4)
    with contextlib.ExitStack() as stack:
        log(f"pkt: {kind} curve: compiling with {' '.join(cflags)}")
        b, fds = pkt.compile_reference()
        stack.callback(b.cleanup)
        st = stack.enter_context(sized_state(f"curve-{kind}", cflags))
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}{kind[0]}"))
        bc0, br0 = ifindex["bc0"], ifindex["br0"]
        pkt.configure(st, ifindex)
        est_frame0 = pkt.tcp_frame(pkt.CLIENT, pkt.VIP, pkt.CPORT, pkt.VPORT, pkt.TCP_ACK,
                                   pkt.CLIENT_MAC)
        if floor is None:
            floor = statistics.median(pkt.measure(fds["bench_trivial"], est_frame0, bc0,
                                                  repeat, runs)[0])
        tmpl = _harness(b, fds, st, pkt.VIP)
        b[b"nc_target"][C.c_int(0)] = C.c_int(fds["bench_trivial"])
        hmed = statistics.median(pkt.measure(fds["bench_newconn"], tmpl, bc0, fresh, runs)[0])
        have = 0
        for n in sorted(sizes):
            t0 = time.monotonic()
            if kind == "services":
                _dummy_services(st, have, n - 2)    # + the Masq and DR services
            else:
                st.conn_table.clear()
                _dummy_conns(st, 0, n - 1)
            have = n - 2 if kind == "services" else 0
            frame, probe, reput = _established(st, bc0, br0)
            reput()
            times, ok, proof = _est_row(st, frame, probe, bc0, repeat, runs)
            row = {"kind": kind, "size": n, "est_ns": statistics.median(times),
                   "est_runs": times, "ok": ok, "proof": proof}
            if kind == "services":
                ntimes, nok, nproof, _ = _newconn(b, fds, st, pkt.VIP, pkt.SVC_NAT, bc0, fresh,
                                                  runs, hmed, floor)
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
