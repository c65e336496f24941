"""Part 5: kernel memory per tracked connection and per service, from the
maps' own accounting (/proc/<pid>/fdinfo of each map: memlock = the kernel's
map_mem_usage(), max_entries), on the real data path compiled with the
default capacities. All of xdplb's maps are preallocated, so this is what the
kernel holds whether or not the entries are in use."""
import time

from .. import bpfsys
from ..maps import MAPS

TARGET_PER_CONN = 128


def fdinfo(fd):
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def run(log=None):
    from .pkt import private_state
    log = log or (lambda m: None)
    t0 = time.monotonic()
    log("mem: compiling bpf/xdplb.c into a private pin folder")
    maps = {}
    with private_state() as st:
        for name in MAPS:
            info = fdinfo(getattr(st, name).fd)
            mi = bpfsys.obj_info(getattr(st, name).fd, bpfsys.BpfMapInfo)
            maps[name] = {"bytes": int(info.get("memlock", 0)),
                          "max_entries": int(info.get("max_entries", mi.max_entries)),
                          "key": mi.key_size, "value": mi.value_size,
                          "per_entry": int(info.get("memlock", 0)) /
                          max(1, int(info.get("max_entries", mi.max_entries)))}
    pe = {k: v["per_entry"] for k, v in maps.items()}
    conn_entry = pe["conns"]
    per_svc = pe["services"] + pe["sched_pos"] + pe["svc_stats"]
    per_dest = pe["dests"] + pe["dest_stats"] + pe["sched_ring"]  # + one ring slot (rr)
    derived = [
        ("tracked connection, DR (one conns entry)", conn_entry, TARGET_PER_CONN),
        ("tracked connection, Masq (IN + OUT entries)", 2 * conn_entry, TARGET_PER_CONN),
        ("service (services + sched_pos + svc_stats)", per_svc, None),
        ("destination (dests + dest_stats + one rr ring slot)", per_dest, None),
        ("service with 10 destinations", per_svc + 10 * per_dest, None),
    ]
    total = sum(v["bytes"] for v in maps.values())
    return {"maps": maps, "derived": derived, "total": total, "cpus": bpfsys.possible_cpus(),
            "seconds": time.monotonic() - t0}
