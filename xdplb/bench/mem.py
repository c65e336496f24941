"""Part 5: kernel memory, from the maps' own accounting (/proc/self/fdinfo of
each map: memlock = the kernel's map_mem_usage(), what bpftool shows as
memlock; max_entries), on the real data path compiled with the default
capacities. All of xdplb's maps are preallocated, so this is what the kernel
holds whether or not the entries are in use.

Per tracked connection, for each forwarding method: the memory of the
connection maps divided by the connections they can hold. Which maps hold a
connection and how many entries it takes is measured, not assumed: one
connection of each method goes through the program (SYN, the real server's
SYN-ACK for Masq, ACK) in a private netns, and the hash maps whose entry
counts grew on the way are its maps; the most entries it held at once is its
cost in entries. The real-server table a Masq reply is found through
(rs_table, and the fixed rs_filter array) is written when a masquerading
destination is added: per real server, not per connection, so it is not
among a connection's maps.
"""
import contextlib
import ctypes as C
import os
import time

from .. import bpfsys, model
from ..control import Control
from ..maps import MAPS
from ..structs import IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL
from . import newconn, pkt

TARGET_PER_CONN = 128
# bpf_map_type values of the hash maps (HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH)
HASH_TYPES = {1, 5, 9, 10}
METHODS = (("Masq", IP_VS_CONN_F_MASQ), ("Route", IP_VS_CONN_F_DROUTE),
           ("Tunnel", IP_VS_CONN_F_TUNNEL))


def fdinfo(fd):
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _map_table(st):
    maps = {}
    for name in MAPS:
        m = getattr(st, name)
        info = fdinfo(m.fd)
        mi = bpfsys.obj_info(m.fd, bpfsys.BpfMapInfo)
        size = int(info.get("max_entries", mi.max_entries))
        maps[name] = {"bytes": int(info.get("memlock", 0)), "max_entries": size,
                      "key": mi.key_size, "value": mi.value_size, "type": mi.type,
                      "per_entry": int(info.get("memlock", 0)) / max(1, size)}
    return maps


def _counts(st, maps):
    return {name: newconn.entries(getattr(st, name)) for name, v in maps.items()
            if v["type"] in HASH_TYPES}


def _one_connection(st, ifindex, maps, fwd, k):
    """Entries per map while one connection of method fwd is set up through
    the program: {map: most entries it held at once over its count before}."""
    vip, cport = f"10.0.3.{k}", pkt.CPORT + 100 + k
    rport = pkt.RPORT if fwd == IP_VS_CONN_F_MASQ else pkt.VPORT
    ctl = Control(st)
    key = (model.IPPROTO_TCP, vip, pkt.VPORT)
    ctl.add_service(model.Service(*key, sched="rr"))
    ctl.add_dest(key, model.Destination(pkt.RSS[0], rport, fwd=fwd))
    steps = pkt.handshake_frames(vip, cport, pkt.VPORT, (pkt.RSS[0], rport)
                                 if fwd == IP_VS_CONN_F_MASQ else None)
    before = _counts(st, maps)
    held, most = {}, 0
    for frame, dev in steps:
        bpfsys.prog_test_run(st.prog_fd, frame, ingress_ifindex=ifindex[dev])
        grew = {m: n - before[m] for m, n in _counts(st, maps).items() if n > before[m]}
        most = max(most, sum(grew.values()))
        for m, n in grew.items():
            held[m] = max(held.get(m, 0), n)
    return held, most


def _per_connection(st, ifindex, maps):
    for idx in ifindex.values():
        st.tx_ports.put(idx, C.c_uint32(idx))
    rows = []
    for k, (method, fwd) in enumerate(METHODS, 1):
        try:
            held, entries = _one_connection(st, ifindex, maps, fwd, k)
        except model.XdplbError as e:
            rows.append({"method": method, "skip": e.message})
            continue
        if not entries:
            rows.append({"method": method, "skip": "no map grew: the connection was not tracked"})
            continue
        size = sum(maps[m]["max_entries"] for m in held)
        kbytes = sum(maps[m]["bytes"] for m in held)
        per = kbytes / (size / entries)   # the maps' fixed overhead: a fraction of a byte
        rows.append({"method": method, "maps": sorted(held), "entries": entries,
                     "bytes": kbytes, "connections": size // entries, "per_conn": per,
                     "target": TARGET_PER_CONN, "met": round(per) <= TARGET_PER_CONN})
    return rows


def run(log=None):
    log = log or (lambda m: None)
    t0 = time.monotonic()
    log("mem: compiling bpf/xdplb.c into a private pin folder")
    with contextlib.ExitStack() as stack:
        st = stack.enter_context(pkt.private_state())
        maps = _map_table(st)
        ifindex = stack.enter_context(pkt.netns(f"xdplb-bench-{os.getpid()}m"))
        conns = _per_connection(st, ifindex, maps)
    pe = {k: v["per_entry"] for k, v in maps.items()}
    per_svc = pe["services"] + pe["sched_pos"] + pe["svc_stats"]
    per_dest = pe["dests"] + pe["dest_stats"] + pe["sched_ring"]  # + one ring slot (rr)
    derived = [
        ("service (services + sched_pos + svc_stats)", per_svc, None),
        ("destination (dests + dest_stats + one rr ring slot)", per_dest, None),
        ("service with 10 destinations", per_svc + 10 * per_dest, None),
        ("masquerading real server address:port (one rs_table entry, whatever its "
         "connections)", pe["rs_table"], None),
    ]
    total = sum(v["bytes"] for v in maps.values())
    return {"maps": maps, "conns": conns, "derived": derived, "total": total,
            "cpus": bpfsys.possible_cpus(), "seconds": time.monotonic() - t0}
