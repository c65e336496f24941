"""Command atomicity (issue 6, part 2): writers in several processes lose
nothing, and refusals at xdplb's capacity limits change nothing.

The state is private and pinned from the real maps.h with a pass-through
program (test_adm.create_stub_state)."""
import ctypes as C
import os
import socket
import subprocess
import sys
import threading

import pytest

from test_adm import CMD, UNSHARE, create_stub_state
from xdplb import model
from xdplb import sched as S
from xdplb import state as statemod
from xdplb import config
from xdplb.control import Control
from xdplb.structs import (XDPLB_LIST_MAX, XDPLB_MAX_DESTS, XDPLB_MAX_RING, XDPLB_MAX_SERVICES,
                           XDPLB_RING_GEN_BIT, DestEntry, RingKey, SvcEntry, SvcKey)
from xdplb.keys import svc_key
from xdplb.tables import Tables

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NSVC = 20          # 10.20.0.1 .. 10.20.0.20, port 80: odd ones rr, even ones wrr


@pytest.fixture
def folder(monkeypatch):
    """A fresh private state in XDPLB_PIN_DIR; everything removed afterwards."""
    with statemod.private_folder(f"test-{os.getpid()}-conc") as f:
        monkeypatch.setenv("XDPLB_PIN_DIR", f)
        create_stub_state(f)
        yield f


def _env():
    return dict(os.environ, PYTHONPATH=ROOT)


def _services(ctl):
    for i in range(NSVC):
        ctl.add_service(model.Service(proto=6, addr=f"10.20.0.{i + 1}", port=80,
                                      sched="rr" if i % 2 == 0 else "wrr"))


def _dest_args(proc, j):
    """-a arguments of the j-th add of worker proc (addresses unique per worker)."""
    return ["-a", "-t", f"10.20.0.{j % NSVC + 1}:80", "-r",
            f"10.{30 + proc}.{j // 250}.{j % 250 + 1}:80", "-m", "-w", str(j % 3 + 1)]


WORKER = r"""
import sys
from xdplb import adm
proc, n = int(sys.argv[1]), int(sys.argv[2])
NSVC = %d
bad = 0
for j in range(n):
    argv = ["xdplbadm", "-a", "-t", f"10.20.0.{j %% NSVC + 1}:80", "-r",
            f"10.{30 + proc}.{j // 250}.{j %% 250 + 1}:80", "-m", "-w", str(j %% 3 + 1)]
    if adm.run(argv) != 0:
        bad += 1
print(bad)
""" % NSVC


def _expected(procs, n):
    """{service addr: {(dest addr, weight)}} after every worker's adds."""
    want = {}
    for p in procs:
        for j in range(n):
            a = _dest_args(p, j)
            want.setdefault(a[2].split(":")[0], set()).add((a[4].split(":")[0], int(a[7])))
    return want


def _check_tables(ctl, want):
    """Every destination there exactly once, slots and seqs unique, every ring
    exactly the one the schedule gives for its service (and nothing else in
    sched_ring), svc_dests and listing consistent."""
    svcs = ctl.services(counts=False)
    assert len(svcs) == NSVC
    got = {s.addr: {(d.addr, d.weight) for d in s.dests} for s in svcs}
    assert got == want
    slots = [d.slot for s in svcs for d in s.dests]
    seqs = [d.seq for s in svcs for d in s.dests]
    assert len(slots) == len(set(slots)) == sum(len(v) for v in want.values())
    assert len(seqs) == len(set(seqs))
    assert 0 not in slots
    ring = {}
    for kb, vb in ctl.st.sched_ring.raw_items():
        k = RingKey.from_buffer_copy(kb)
        ring[(k.svc_slot, k.index)] = int.from_bytes(vb, "little")
    total = 0
    for s in svcs:
        c = ctl.st.services.get(svc_key(6, s.addr, 80))
        # kernel list order (newest first): what the schedulers walk
        assert [d.seq for d in s.dests] == sorted((d.seq for d in s.dests), reverse=True)
        dlist = [(d.slot, d.weight) for d in s.dests]
        expect = S.build_ring(s.sched, dlist, S.SchedState(c.sched_cl, c.sched_cw))
        entries = tuple(ring[(c.slot, c.ring_gen | i)] for i in range(c.ring_len))
        assert (entries, c.ring_prefix) == (expect.entries, expect.prefix), s.addr
        total += c.ring_len
        # the other generation is empty
        assert (c.slot, (c.ring_gen ^ XDPLB_RING_GEN_BIT)) not in ring
        sd = ctl.st.svc_dests.get(c.slot)
        assert sd.n == min(len(dlist), XDPLB_LIST_MAX)
        assert [(sd.d[i].slot, sd.d[i].weight) for i in range(sd.n)] == dlist[:sd.n]
    assert len(ring) == total


def _replayed_snapshot(ctl):
    """The maps of a fresh state given the same adds one after the other in
    the order the concurrent run applied them (destination seq order)."""
    lines = [(config.add_service, (model.Service(proto=6, addr=f"10.20.0.{i + 1}", port=80,
                                                 sched="rr" if i % 2 == 0 else "wrr"),))
             for i in range(NSVC)]
    dests = sorted((d.seq, s.addr, d) for s in ctl.services(counts=False) for d in s.dests)
    with statemod.private_folder(f"test-{os.getpid()}-replay") as f:
        create_stub_state(f)
        with Control.open(folder=f) as rc:
            # -R gives the maps of its lines run one by one (test_restore.py)
            lines += [(config.add_dest, ((6, addr, 80), model.Destination(
                d.addr, d.port, fwd=d.fwd, weight=d.weight))) for _, addr, d in dests]
            results = rc.restore(lines)
            assert results == [None] * len(lines)
            return rc.snapshot()


def test_two_processes_1000_adds_each(folder):
    """2 x 1,000 `-a` in two processes at once, each through adm.run (the
    CLI's code minus interpreter start-up): all 2,000 there, the same maps as
    the same adds one after another."""
    n = 1000
    with Control.open() as ctl:
        _services(ctl)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(p), str(n)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert (p.returncode, out.strip(), err) == (0, "0", "")
    with Control.open() as ctl:
        _check_tables(ctl, _expected((0, 1), n))
        # the two workers really interleaved (seq order alternates between them)
        order = [d.addr.split(".")[1] for _, d in sorted(
            (d.seq, d) for s in ctl.services(counts=False) for d in s.dests)]
        assert sum(a != b for a, b in zip(order, order[1:])) > 10
        assert ctl.snapshot() == _replayed_snapshot(ctl)
        saved = ctl.save(numeric=True).splitlines()
    assert sum(line.startswith("-a ") for line in saved) == 2 * n
    assert not os.path.exists(statemod.journal_path(folder))


def test_two_xdplbadm_loops(folder):
    """The same with real `xdplbadm` processes: 2 x 30, concurrently."""
    n = 30
    with Control.open() as ctl:
        _services(ctl)
    failures = []

    def loop(p):
        for j in range(n):
            r = subprocess.run(UNSHARE + CMD + _dest_args(p, j), capture_output=True,
                               text=True, env=dict(os.environ))
            if r.returncode or r.stderr:
                failures.append((p, j, r.returncode, r.stderr))

    threads = [threading.Thread(target=loop, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with Control.open() as ctl:
        _check_tables(ctl, _expected((0, 1), n))
        assert ctl.snapshot() == _replayed_snapshot(ctl)


# --- refusals at the capacity limits change nothing ---------------------------------

def _adm(*args, stdin=None):
    p = subprocess.run(UNSHARE + CMD + list(args), input=stdin, capture_output=True,
                       text=True, env=dict(os.environ))
    return p.returncode, p.stderr


def _fake_service(ctl, addr, ring_len):
    """A service entry that only takes ring room (no ring entries; the
    bookkeeping counts them)."""
    k = svc_key(6, addr, 9)
    t = Tables(ctl.st)
    ctl.st.services.put(k, SvcEntry(slot=t.free_svc_slot(), seq=10**6, ring_len=ring_len,
                                    sched=model.SCHED_IDS["wlc"]))
    _bookkeeping(ctl, ring_used=t.alloc().ring_used + ring_len)
    return k


def _bookkeeping(ctl, **fields):
    alloc = ctl.st.alloc.get(0)
    for f, v in fields.items():
        setattr(alloc, f, v)
    ctl.st.alloc.put(0, alloc)


SVC_FULL = ("Memory allocation problem: xdplb's services table is full "
            f"({XDPLB_MAX_SERVICES} services, the size its maps were compiled with)\n")
DEST_FULL = ("Memory allocation problem: xdplb's destinations table is full "
             f"({XDPLB_MAX_DESTS - 1} destinations, the size its maps were compiled with)\n")


def test_capacity_refusals_change_nothing(folder):
    """xdplb's own limits (list schedulers' 64 servers, ring room, the sh/mh
    tables, the service and destination tables full) are refused before any
    write: every map byte-for-byte as before, alone and in the middle of -R."""
    def add(svc, addr, **kw):
        return config.add_dest, ((6, svc, 80), model.Destination(addr, 80, **kw))

    with Control.open() as ctl:
        ctl.add_service(model.Service(proto=6, addr="10.40.0.1", port=80, sched="lc"))
        ctl.add_service(model.Service(proto=6, addr="10.40.0.2", port=80, sched="wrr"))
        ctl.add_service(model.Service(proto=6, addr="10.40.0.3", port=80, sched="rr"))
        ctl.restore([add("10.40.0.1", f"10.41.0.{i + 1}") for i in range(XDPLB_LIST_MAX)] +
                    [add("10.40.0.2", "10.42.0.1", weight=3), add("10.40.0.2", "10.42.0.3")] +
                    [add("10.40.0.3", f"10.43.0.{i + 1}") for i in range(XDPLB_LIST_MAX + 1)])
        before = ctl.snapshot()
    lim = f"at most {XDPLB_LIST_MAX} real servers per service"
    cases = [
        (["-a", "-t", "10.40.0.1:80", "-r", "10.41.1.1", "-m"], lim),
        (["-E", "-t", "10.40.0.3:80", "-s", "wlc"], lim),
        (["-E", "-t", "10.40.0.3:80", "-s", "sed"], lim),
    ]
    for args, msg in cases:
        rc, err = _adm(*args)
        assert rc == 255 and msg in err, (args, err)
        with Control.open() as ctl:
            assert ctl.snapshot() == before, args
    rc, err = _adm("-R", stdin="-a -t 10.40.0.1:80 -r 10.41.1.1 -m\n"
                   "-a -t 10.40.0.1:80 -r 10.41.1.2 -m\n")
    assert rc == 255 and err.count(lim) == 2
    with Control.open() as ctl:
        assert ctl.snapshot() == before

    # ring room: a fake service holds all of the ring but a few entries
    with Control.open() as ctl:
        used = sum(c.ring_len for c in Tables(ctl.st).services().values())
        fake = _fake_service(ctl, "10.49.0.1", ring_len=XDPLB_MAX_RING - used - 3)
        before = ctl.snapshot()
    for args in (["-a", "-t", "10.40.0.2:80", "-r", "10.42.0.2", "-m", "-w", "2"],
                 ["-e", "-t", "10.40.0.2:80", "-r", "10.42.0.1", "-m", "-w", "7"],
                 ["-E", "-t", "10.40.0.1:80", "-s", "sh"],
                 ["-E", "-t", "10.40.0.1:80", "-s", "mh"],
                 ["-E", "-t", "10.40.0.3:80", "-s", "wrr"]):
        rc, err = _adm(*args)
        assert rc == 255 and "ring entries but only" in err, (args, err)
        with Control.open() as ctl:
            assert ctl.snapshot() == before, args
    rc, err = _adm("-R", stdin="-A -t 10.40.0.9:80 -s mh\n-a -t 10.40.0.9:80 -r 10.49.1.1 -m\n"
                   "-a -t 10.40.0.2:80 -r 10.42.0.2 -m -w 2\n-A -t 10.40.0.10:80 -s rr\n")
    # the new services go in; the table and ring that do not fit are refused
    assert rc == 0 and err.count("ring entries but only") == 2, err
    with Control.open() as ctl:
        assert ctl.services((6, "10.40.0.9", 80), counts=False)[0].dests == []
        ctl.delete_service(6, "10.40.0.9", 80)
        ctl.delete_service(6, "10.40.0.10", 80)
        ctl.st.services.delete(fake)
        _bookkeeping(ctl, ring_used=used)

    # a full service table, then a full destination table
    with Control.open() as ctl:
        used = {c.slot for c in Tables(ctl.st).services().values()}
        free = [i for i in range(XDPLB_MAX_SERVICES) if i not in used]
        keys = [SvcKey((C.c_uint8 * 4)(10, 50 + i // 65536, (i >> 8) & 255, i & 255),
                       socket.htons(9), 6, 0) for i in range(len(free))]
        ctl.st.services.put_many((k, SvcEntry(slot=s, seq=10**6 + s, sched=1))
                                 for k, s in zip(keys, free))
        before = ctl.snapshot()
    rc, err = _adm("-A", "-t", "10.40.0.11:80", "-s", "rr")
    assert (rc, err) == (255, SVC_FULL)
    rc, err = _adm("-R", stdin="-A -t 10.40.0.11:80 -s rr\n-a -t 10.40.0.11:80 -r 10.1.1.1\n")
    assert (rc, err) == (255, SVC_FULL + "Service not defined\n")
    with Control.open() as ctl:
        assert ctl.snapshot() == before
        for k in keys:
            ctl.st.services.delete(k)
        top = ctl.st.alloc.get(0).dest_top
        dused = set(Tables(ctl.st).every_dest())
        dfree = [i for i in range(1, XDPLB_MAX_DESTS) if i not in dused]
        # destinations of a service slot nobody has (never listed)
        ctl.st.dests.put_many((i, DestEntry(flags=1, svc_slot=XDPLB_MAX_SERVICES - 1, seq=0))
                              for i in dfree)
        _bookkeeping(ctl, dest_top=XDPLB_MAX_DESTS - 1)
        before = ctl.snapshot()
    rc, err = _adm("-a", "-t", "10.40.0.2:80", "-r", "10.42.0.9", "-m")
    assert (rc, err) == (255, DEST_FULL)
    rc, err = _adm("-R", stdin="-a -t 10.40.0.2:80 -r 10.42.0.9 -m\n")
    assert (rc, err) == (255, DEST_FULL)
    with Control.open() as ctl:
        assert ctl.snapshot() == before
        ctl.st.dests.put_many((i, DestEntry()) for i in dfree)
        _bookkeeping(ctl, dest_top=top)


def test_refused_listing_changes_nothing(folder):
    """`-L -t VIP:PORT` of a service that is not there is refused (exit 1)
    before the connection sweep every listing runs: a dead entry stays."""
    from xdplb.conns import now_ns
    from xdplb.structs import Conn, ConnKey

    def ip(a):
        return (C.c_uint8 * 4)(*socket.inet_aton(a))

    with Control.open() as ctl:
        ctl.add_service(model.Service(proto=6, addr="10.40.0.1", port=80, sched="rr"))
        ctl.add_dest((6, "10.40.0.1", 80), model.Destination("10.41.0.1", 80))
        svc = ctl.get_service(6, "10.40.0.1", 80, counts=False)
        k = ConnKey(ip("192.168.10.5"), ip("10.40.0.1"), socket.htons(1000), socket.htons(80), 6)
        # an entry whose destination is gone: the sweep deletes it
        ctl.st.conns.put(k, Conn(ip("10.41.0.1"), socket.htons(80), 0, 0, 77, svc.slot,
                                 state=1, last_seen=now_ns()))
        before = ctl.snapshot()
    assert _adm("-L", "-n", "-t", "10.40.0.9:80") == (1, "No such service\n")
    with Control.open() as ctl:
        assert ctl.snapshot() == before
    assert _adm("-L", "-n", "-t", "10.40.0.1:80")[0] == 0     # this one sweeps
    with Control.open() as ctl:
        assert ctl.st.conns.get(k) is None
