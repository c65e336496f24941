"""Make the live services equal to what keepalived.conf and the checkers say,
changing only the difference, through the planner (xdplb/config.py), the one
write path.

Ownership: the services the daemon made (or took over because the file
names them) are listed in /run/xdplb/<state>.keepalived.json with the id of
the state's program, so a restarted daemon knows them, and a record left by
a removed state (another program id) is not believed. The daemon deletes
an owned service the file no longer names and never touches any other.
"""
import contextlib
import json
import logging
import os

from .. import config, ipvsfmt, model
from .. import state as statemod
from ..model import Destination, Service
from ..tables import Tables

log = logging.getLogger("xdplb.daemon")

RULE = ipvsfmt.FMT_RULE | ipvsfmt.FMT_NUMERIC


def want(pool):
    """{service key: model.Service with its destinations} of the pool now."""
    out = {}
    for v in pool.vs:
        servers, weights = v.servers(), v.destinations()
        for svc in v.vs.services():
            for (addr, port), w in weights.items():
                rs = servers[(addr, port)]
                d = Destination(addr, port, fwd=rs.fwd, weight=w, u_threshold=rs.u_threshold,
                                l_threshold=rs.l_threshold)
                d.port = config.dest_port(svc.port, d)
                svc.dests.append(d)
            out[svc.key] = svc
    return out


def _same_service(a, b):
    return (a.sched, a.flags, a.timeout, a.netmask) == (b.sched, b.flags, b.timeout, b.netmask)


def _same_dest(a, b):
    return (a.fwd, a.weight, a.u_threshold, a.l_threshold) == \
        (b.fwd, b.weight, b.u_threshold, b.l_threshold)


def _rule(cmd, svc, dest=None):
    """The ipvsadm command line of a change (what -t prints)."""
    lines = ipvsfmt.service_entry(Service(svc.proto, svc.addr, svc.port, svc.sched, svc.flags,
                                          svc.timeout, svc.netmask,
                                          dests=[dest] if dest else []), RULE).splitlines()
    line = lines[-1] if dest else lines[0]
    if cmd in ("-D", "-d"):
        line = line.split(" -s ")[0] if cmd == "-D" else line.split(" -r ")[0] + \
            " -r " + line.split(" -r ")[1].split()[0]
    return cmd + line[2:]


def diff(live, wanted, owned):
    """[(operation, args, ipvsadm text)] turning live ({key: Service}) into
    wanted for the services in wanted or owned; others are not looked at."""
    changes = []
    for key in sorted(owned - wanted.keys()):
        if key in live:
            changes.append((config.delete_service, (key,), _rule("-D", live[key])))
    for key, svc in wanted.items():
        cur = live.get(key)
        if cur is None:
            changes.append((config.add_service, (svc,), _rule("-A", svc)))
            changes += [(config.add_dest, (key, d), _rule("-a", svc, d)) for d in svc.dests]
            continue
        have = {(d.addr, d.port): d for d in cur.dests}
        need = {(d.addr, d.port): d for d in svc.dests}
        changes += [(config.delete_dest, (key, *k), _rule("-d", svc, have[k]))
                    for k in have if k not in need]
        if not _same_service(cur, svc):
            changes.append((config.edit_service, (svc,), _rule("-E", svc)))
        for k, d in need.items():
            if k not in have:
                changes.append((config.add_dest, (key, d), _rule("-a", svc, d)))
            elif not _same_dest(have[k], d):
                changes.append((config.edit_dest, (key, d), _rule("-e", svc, d)))
    return changes


def dry_run(st, changes):
    """The refusals [(text, XdplbError)] the changes would meet, planned
    against the live maps (st) or an empty table (None), writing nothing."""
    results, _ = config.run(Tables(st) if st is not None else Tables(),
                            [(op, args) for op, args, _ in changes])
    return [(text, r) for (_, _, text), r in zip(changes, results) if r is not None]


# --- ownership -------------------------------------------------------------------------

def record_path(folder, what="keepalived"):
    """/run/xdplb/<state>.<what>.json, beside the state's lock and journal."""
    return statemod.lock_path(folder)[:-len(".lock")] + f".{what}.json"


def write_json(path, data):
    """Atomically, root-only whatever the umask."""
    statemod.private_dir(os.path.dirname(path))
    tmp = f"{path}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_owned(st):
    """The service keys the daemon owns in this state."""
    try:
        with open(record_path(st.folder)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return set()
    if rec.get("prog_id") != st.prog_id():
        return set()
    return {tuple(k) for k in rec.get("services", ())}


def write_owned(st, keys):
    write_json(record_path(st.folder), {"prog_id": st.prog_id(),
                                        "services": sorted(list(k) for k in keys)})


def live_services(ctl):
    return {s.key: s for s in ctl.services(counts=False)}


def apply(ctl, wanted):
    """Make the live state equal to wanted; returns the changes made. The
    ownership record is widened before the write (a kill in between leaves
    nothing unowned) and narrowed after it."""
    with ctl.locked():
        owned = read_owned(ctl.st)
        live = live_services(ctl)
        taken = [k for k in wanted if k in live and k not in owned]
        for k in taken:
            log.info("taking over service %s %s:%d, which the file names",
                     model.PROTO_NAMES[k[0]], k[1], k[2])
        changes = diff(live, wanted, owned)
        write_owned(ctl.st, owned | wanted.keys())
    refused = ctl.restore([(op, args) for op, args, _ in changes]) if changes else []
    for (_, _, text), r in zip(changes, refused):
        if r is None:
            log.info("%s", text)
        else:
            log.error("%s: refused: %s", text, r.message)
    write_owned(ctl.st, set(wanted))
    return changes
