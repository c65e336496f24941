"""IPVS's rate estimator (the kernel's ip_vs_est.c), run by `xdplb daemon`,
and the totals that outlive a service (the kernel's tot_stats).

The kernel estimates, every 2 seconds, for every service and destination,
the rate of each counter: an exponentially weighted moving average over
about the last 8 seconds, in fixed point. xdplb does the same arithmetic,
bit for bit, in the daemon:

    sample = (counter - last) << 9     conns, inpkts, outpkts: x 2^10, / 2 s
    sample = (counter - last) << 4     inbytes, outbytes:      x 2^5,  / 2 s
    last   = counter
    avg   += ((s64)sample - (s64)avg) >> 2            (weight 1/4, arithmetic shift)

    shown  = (avg + 0x1FF) >> 10      conns/s, packets/s
    shown  = (avg + 0xF) >> 5         bytes/s

(all u64, wrapping; the shown value adds just under a half before
truncating). `ipvsadm -Z` resets an estimator (ip_vs_zero_estimator): last
becomes the current counter and the average 0, so rates read 0 until the
next period. A new service or destination starts with last = 0 and average
0, as the kernel's freshly allocated estimator does: its counters start at
0 too, so its first period's traffic is its first sample.

Where it lives. The estimates have to be read by other processes
(`xdplbadm -L --rate`, the exporter) and bpffs holds no regular files, so
they are a file beside the state's lock and journal, /run/xdplb/<state>.est
(0600), replaced atomically (written under a temporary name, then renamed)
under the state lock by every writer: the daemon each period, and a
configuration change that zeroes counters (Control.restore: -Z, deleted
services and destinations). Its header names the state as the journal's
does (the boot id and the services map's kernel id), so a recreated state
never reads an older state's file, and says when the daemon last ran an
estimation: estimates older than STALE_NS are not shown (the daemon is not
running), and `--rate` falls back to sampling the counters.

Totals (node_exporter's node_ipvs_*_total: every packet IPVS ever counted in
this netns). The kernel counts each packet three times: in its destination,
its service and the per-netns total, which deleting a service leaves alone.
xdplb counts per service and destination only, so a total is the sum of the
live services' counters plus `retired`: what services had counted when a
change zeroed them (a deleted service, -Z of one service), added by that
change under the state lock right after its commit. -Z of everything zeroes
the totals too (ip_vs_zero_all). A change killed between its commit and
that addition loses it; the daemon then adds what it last saw of a service
whose counters went away (at most one period old).
"""
import os
import struct
import time
import zlib

from . import journal
from . import state as statemod
from .model import Stats
from .tables import Tables

PERIOD_NS = 2_000_000_000
STALE_NS = 3 * PERIOD_NS      # no estimation for this long: the daemon is not running
FIELDS = Stats._fields        # conns inpkts outpkts inbytes outbytes
SAMPLE_SHIFT = (9, 9, 9, 4, 4)
SHOW = ((0x1FF, 10), (0x1FF, 10), (0x1FF, 10), (0xF, 5), (0xF, 5))
U64 = (1 << 64) - 1
SVC, DEST = 0, 1

MAGIC = b"XDPLBE1\n"
# magic, boot id, services map id, estimations run, monotonic ns of the last,
# records, CRC-32 of what follows (retired totals, then the records)
_HEAD = struct.Struct("<8s16sIQQII")
_TOTALS = struct.Struct("<5Q")
# kind, slot, seq of the service or destination, last counters, averages
_REC = struct.Struct("<BxxxII5Q5Q")


# --- the kernel's arithmetic ------------------------------------------------------------

def _s64(x):
    x &= U64
    return x - (1 << 64) if x >> 63 else x


def estimate(avg, last, now):
    """One period of estimation_timer / ip_vs_chain_estimation for one stats
    object: the new averages from the old ones, the counters at the previous
    period (last) and now."""
    out = []
    for a, lst, n, shift in zip(avg, last, now, SAMPLE_SHIFT):
        sample = ((n - lst) & U64) << shift & U64
        out.append((a + (_s64(_s64(sample) - _s64(a)) >> 2)) & U64)
    return tuple(out)


def shown(avg):
    """ip_vs_read_estimator: the rates ipvsadm shows (per second) of averages."""
    return Stats(*(((a + add) & U64) >> shift for a, (add, shift) in zip(avg, SHOW)))


# --- the file -----------------------------------------------------------------------------

class Estimates:
    """The estimator state of one xdplb state: retired totals and, per service
    and destination ((kind, slot) -> (seq, last, avg)), its estimator."""

    def __init__(self, ticks=0, tick_ns=0, retired=Stats(), records=None):
        self.ticks, self.tick_ns = ticks, tick_ns
        self.retired = Stats(*retired)
        self.records = {} if records is None else records

    def fresh(self, now_ns=None):
        """The daemon ran an estimation lately (its estimates are current)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        return self.ticks > 0 and now_ns - self.tick_ns <= STALE_NS

    def rate(self, kind, slot, seq):
        """The shown rates of a service or destination (0 before its first period)."""
        rec = self.records.get((kind, slot))
        return shown(rec[2]) if rec is not None and rec[0] == seq else Stats()


def path(st):
    return statemod.estimates_path(st.folder)


def _boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return bytes.fromhex(f.read().strip().replace("-", ""))


def encode(st, est):
    body = bytearray(_TOTALS.pack(*est.retired))
    for (kind, slot), (seq, last, avg) in sorted(est.records.items()):
        body += _REC.pack(kind, slot, seq, *last, *avg)
    return _HEAD.pack(MAGIC, _boot_id(), st.services.map_id, est.ticks, est.tick_ns,
                      len(est.records), zlib.crc32(body)) + body


def decode(st, data):
    """The Estimates of a file's bytes, or None if they are not this state's."""
    if len(data) < _HEAD.size + _TOTALS.size:
        return None
    magic, boot, svc_id, ticks, tick_ns, n, crc = _HEAD.unpack_from(data)
    body = memoryview(data)[_HEAD.size:]
    if magic != MAGIC or len(body) != _TOTALS.size + n * _REC.size or \
            zlib.crc32(body) != crc or boot != _boot_id() or svc_id != st.services.map_id:
        return None
    records = {}
    for kind, slot, seq, *vals in _REC.iter_unpack(body[_TOTALS.size:]):
        records[(kind, slot)] = (seq, tuple(vals[:5]), tuple(vals[5:]))
    return Estimates(ticks, tick_ns, _TOTALS.unpack_from(body), records)


def load(st):
    """The state's Estimates (empty if it has none yet, or only another state's)."""
    try:
        with open(path(st), "rb") as f:
            return decode(st, f.read()) or Estimates()
    except FileNotFoundError:
        return Estimates()


def save(st, est):
    """Replace the file atomically (the caller holds the state lock)."""
    p = path(st)
    tmp = f"{p}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(encode(st, est))
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, p)


# --- one period ------------------------------------------------------------------------

def counters(m, slot):
    """The Stats of a slot of svc_stats or dest_stats (its CPUs added up)."""
    s = m.sum(slot)
    return Stats(*(getattr(s, f) for f in FIELDS))


def _objects(st):
    """{(kind, slot): (seq, counters)} of every service and destination now."""
    t = Tables(st)
    out = {}
    for e in t.services().values():
        out[(SVC, e.slot)] = (e.seq, counters(st.svc_stats, e.slot))
    for slot, d in t.every_dest().items():
        out[(DEST, slot)] = (d.seq, counters(st.dest_stats, slot))
    return out


def tick(st, now_ns=None):
    """One estimation period over every service and destination of the state
    (the caller holds the state lock). The first period of a daemon whose
    predecessor's estimates are stale starts every estimator from the current
    counters (what they counted before is not this period's)."""
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    old = load(st)
    resume = old.fresh(now_ns)
    records = {}
    for key, (seq, counters) in _objects(st).items():
        rec = old.records.get(key)
        if not resume:                            # what was counted before is no period's
            last, avg = counters, (0,) * 5
        elif rec is None:                         # new (or -Z'd) since the last period
            last, avg = (0,) * 5, (0,) * 5
        elif rec[0] == seq and not _went_back(counters, rec[1]):
            last, avg = rec[1], rec[2]
        else:                                     # zeroed by a change not recorded here
            last, avg = counters, (0,) * 5
        records[key] = (seq, counters, estimate(avg, last, counters))
    save(st, Estimates(old.ticks + 1, now_ns, _lost_totals(old, records), records))


def _went_back(counters, last):
    return any(c < lst for c, lst in zip(counters, last))


def _lost_totals(old, records):
    """The retired totals, plus what a change killed before recording it lost:
    the last seen counters of a service that is gone or was zeroed."""
    retired = old.retired
    for key, (seq, last, _) in old.records.items():
        now = records.get(key)
        if key[0] == SVC and (now is None or now[0] != seq or _went_back(now[1], last)):
            retired = _add(retired, last)
    return retired


class Daemon:
    """The daemon's estimation schedule: a period every PERIOD_NS (a late one
    is run once, not caught up), each under the state lock. It keeps to the
    schedule the file shows: a daemon restarted within a period runs its
    first one when it is due, and of two daemons of one state only one runs
    each period (the other finds it just run)."""

    def __init__(self, st, clock=time.monotonic_ns):
        self.st, self.clock = st, clock
        now, last = clock(), load(st)
        self.due = last.tick_ns + PERIOD_NS if last.fresh(now) else now

    def run(self):
        """Estimate if a period is due; returns the seconds until the next."""
        now = self.clock()
        if now >= self.due:
            with journal.locked(self.st):
                last = load(self.st)
                if last.fresh(now) and now - last.tick_ns < PERIOD_NS // 2:
                    self.due = last.tick_ns + PERIOD_NS    # someone else's period
                else:
                    tick(self.st, now)
                    self.due += PERIOD_NS
                    if self.due <= now:                   # late: start again from now
                        self.due = now + PERIOD_NS
        return (self.due - self.clock()) / 1e9


# --- what a configuration change does to them ----------------------------------------

def _zeroed(txn, name):
    """The slots of a stats map a transaction zeroes."""
    if not txn.touched(name):
        return []
    return [int.from_bytes(k, "little") for k, v in txn.overlay(name).items()
            if v is not None and not any(v)]


class Change:
    """The estimates and totals of a configuration change's counters: built
    from its transaction before the commit (it reads what the services it
    zeroes have counted), recorded after it, under the same lock hold."""

    def __init__(self, st, txn, zero_all):
        self.st, self.zero_all = st, zero_all
        self.svcs, self.dests = _zeroed(txn, "svc_stats"), _zeroed(txn, "dest_stats")
        self.counted = Stats()
        for slot in self.svcs:
            self.counted = _add(self.counted, counters(st.svc_stats, slot))

    def record(self):
        """-Z resets the estimators of what it zeroed (ip_vs_zero_estimator),
        and a deleted object's estimator goes: both drop their records, which
        read as 0 and start again from the zeroed counters. What a zeroed
        service had counted joins the retired totals; -Z of everything zeroes
        those too."""
        est = load(self.st)
        dropped = [est.records.pop(key) for key in
                   [(SVC, s) for s in self.svcs] + [(DEST, s) for s in self.dests]
                   if key in est.records]
        retired = Stats() if self.zero_all else _add(est.retired, self.counted)
        if dropped or retired != est.retired:
            est.retired = retired
            save(self.st, est)


def _add(a, b):
    return Stats(*(x + y for x, y in zip(a, b)))
