"""The kernel's schedulers in user space: rr/wrr replayed into rings, the
sh/dh/mh tables filled as the kernel fills them, and reference ports of the
list-walking schedulers (lc wlc sed nq fo ovf) used by the tests.

rr and wrr:

The data path does not run a scheduler: it walks a precomputed ring of
destination slots (see the comment on sched_pos in bpf/xdplb.h). This module
produces that ring so that the n-th new connection goes exactly where kernel
IPVS would send it, and replays the scheduler state after N picks so that a
configuration change starts from the state the kernel would be in.

Ports of net/netfilter/ipvs/ip_vs_rr.c and ip_vs_wrr.c (see
docs/ipvs-behaviour.md §5.1-5.3):

* destinations are given in kernel list order: most recently added first;
* state = (cl, cw): cl is the current list position as a destination slot
  (0 = the list head), cw is wrr's current weight (0 for rr);
* rr: no add/upd hooks; del_dest moves the pointer back to the previous
  entry when it pointed at the removed destination;
* wrr: init_svc sets cl = head, cw = mw; dest_changed (add, del and upd
  hooks) sets cl = head, recomputes di/mw and adjusts cw;
* a destination with weight 0 takes no new connections; an overloaded one
  (-x/-y thresholds, IP_VS_DEST_F_OVERLOAD) is skipped by the data path as it
  walks the ring, so the ring itself ignores overload.

A destination list is a sequence of (slot, weight) pairs.
"""
from collections import namedtuple
from math import gcd

from .structs import (XDPLB_LIST_F_IDLE, XDPLB_LIST_F_SKIP_OVER, XDPLB_LIST_F_SKIP_ZERO,
                      XDPLB_LIST_F_UNIT, XDPLB_MAX_RING, XDPLB_MH_TAB_SIZE, XDPLB_SH_TAB_SIZE)

RR, WRR = "rr", "wrr"
RING_SCHEDULERS = (RR, WRR)
LIST_SCHEDULERS = ("lc", "wlc", "sed", "nq", "fo", "ovf", "lblc", "lblcr")
TABLE_SCHEDULERS = ("sh", "dh", "mh")
SCHEDULERS = RING_SCHEDULERS + LIST_SCHEDULERS + TABLE_SCHEDULERS
HEAD = 0  # the list head, as a "slot"

# sched_list() in bpf/sched_list.h runs every list scheduler as one form:
# (list_a, list_b, list_c, list_flags) -> overhead = a*active + b*inactive + c.
LIST_PARAMS = {
    "lc": (256, 1, 0, XDPLB_LIST_F_SKIP_ZERO | XDPLB_LIST_F_UNIT),
    "wlc": (256, 1, 0, 0),
    "lblc": (256, 1, 0, 0),
    "lblcr": (256, 1, 0, 0),
    "sed": (1, 0, 1, 0),
    "nq": (1, 0, 1, XDPLB_LIST_F_SKIP_ZERO | XDPLB_LIST_F_IDLE),
    "fo": (0, 0, 1, 0),
    "ovf": (0, 0, 1, XDPLB_LIST_F_SKIP_ZERO | XDPLB_LIST_F_SKIP_OVER),
}


def kind(sched):
    """'ring', 'table' or 'list': how the data path runs this scheduler."""
    if sched in RING_SCHEDULERS:
        return "ring"
    if sched in TABLE_SCHEDULERS:
        return "table"
    return "list"


class RingTooLarge(Exception):
    """The schedule does not fit into the ring space that is left."""

    def __init__(self, needed, room):
        super().__init__(needed, room)
        self.needed, self.room = needed, room


# cl: the destination slot the scheduler points at (HEAD: the list head);
# cw: wrr's current weight (unused by rr)
SchedState = namedtuple("SchedState", "cl cw", defaults=(HEAD, 0))


class Ring:
    """Destination slots: prefix entries, then the repeating cycle."""

    __slots__ = ("entries", "prefix")

    def __init__(self, entries, prefix):
        self.entries, self.prefix = entries, prefix

    def __eq__(self, other):
        return isinstance(other, Ring) and (self.entries, self.prefix) == (other.entries,
                                                                           other.prefix)

    def __repr__(self):
        return f"Ring({self.entries!r}, {self.prefix})"

    def __len__(self):
        return len(self.entries)

    def pick(self, n):
        """Slot of the n-th pick (0-based), as the data path computes it."""
        if n < self.prefix:
            return self.entries[n]
        return self.entries[self.prefix + (n - self.prefix) % (len(self.entries) - self.prefix)]


def _check(sched):
    if sched not in RING_SCHEDULERS:
        raise ValueError(f"not a ring scheduler: {sched!r}")


def wrr_di_mw(dests):
    """(di, mw) of ip_vs_wrr_gcd_weight / ip_vs_wrr_max_weight."""
    g = 0
    mx = 0
    for _, w in dests:
        if w > 0:
            g = gcd(w, g) if g > 0 else w
        if w > mx:
            mx = w
    di = g if g else 1
    return di, mx - (di - 1)


def _index(dests, slot):
    """List index of a slot; -1 for the head (or a slot no longer listed)."""
    if slot == HEAD:
        return -1
    for i, (s, _) in enumerate(dests):
        if s == slot:
            return i
    return -1


def _slot(dests, idx):
    return HEAD if idx < 0 else dests[idx][0]


# --- the schedule functions, one pick each ------------------------------------

def _rr_schedule(dests, cl):
    """ip_vs_rr_schedule: returns (picked index or None, new cl index)."""
    n = len(dests)
    last = dest = cl
    passes = 0
    while True:
        for i in range(dest + 1, n):
            if dests[i][1] > 0:          # !OVERLOAD && weight > 0
                return i, i
            if i == last:
                return None, cl          # "no destination available", pointer kept
        passes += 1
        if not (passes < 2 and cl != -1):
            return None, cl
        dest = -1                        # wrapped over the head


def _wrr_schedule(dests, cl, cw, di, mw):
    """ip_vs_wrr_schedule: returns (picked index or None, new cl, new cw)."""
    n = len(dests)
    dest = cl
    if mw == 0:
        return None, dest, cw            # err_noavail: mark->cl = dest (= old cl)
    last = dest
    stop = None
    last_pass = restarted = False
    while True:
        for i in range(dest + 1, n):
            if dests[i][1] >= cw:        # !OVERLOAD && weight >= cw
                return i, i, cw
            if i == stop:
                return None, i, cw       # err_over
        cw -= di
        if cw <= 0:
            cw = mw
            if last_pass or last == -1:
                return None, -1, cw      # err_noavail with dest == head
            restarted = True
        last_pass = cw <= di
        if last_pass and restarted and last != -1:
            stop = last
        dest = -1


def _step(sched, dests, st, dm):
    """One pick from internal state st = (cl index, cw)."""
    if sched == RR:
        i, cl = _rr_schedule(dests, st[0])
        return i, (cl, 0)
    i, cl, cw = _wrr_schedule(dests, st[0], st[1], *dm)
    return i, (cl, cw)


def simulate(sched, dests, state, limit=None):
    """Picks from state until the state repeats.

    Returns (picks, states, prefix): picks are list indexes, states[i] is the
    internal state (cl index, cw) before pick i, len(states) == len(picks) + 1
    and states[-1] == states[prefix] (the sequence cycles from there). No
    picks at all means no destination is available.
    """
    _check(sched)
    dests = list(dests)
    dm = wrr_di_mw(dests)
    st = (_index(dests, state.cl), state.cw if sched == WRR else 0)
    seen = {}
    picks, states = [], []
    while st not in seen:
        if limit is not None and len(picks) > limit:
            raise RingTooLarge(len(picks), limit)
        seen[st] = len(states)
        states.append(st)
        i, nst = _step(sched, dests, st, dm)
        if i is None:
            return [], [states[0], states[0]], 0
        picks.append(i)
        st = nst
    states.append(st)
    return picks, states, seen[st]


def cycle_length(sched, dests):
    """Picks in one steady-state cycle (a lower bound of the ring length)."""
    pos = [w for _, w in dests if w > 0]
    if sched == RR:
        return len(pos)
    di, _ = wrr_di_mw(dests)
    return sum(w // di for w in pos)


def build_ring(sched, dests, state, room=XDPLB_MAX_RING):
    """The ring (prefix + cycle of slots) the data path walks from state.

    room bounds the number of entries; RingTooLarge if it would not fit.
    """
    picks, p = ring_shape(sched, dests, state, room)
    return Ring(tuple([dests[i][0] for i in picks]), p)


_SHAPES = {}   # (sched, weights, start index, cw) -> (need, picks or None, prefix, limit tried)
_SHAPES_MAX = 4096


def ring_shape(sched, dests, state, room=XDPLB_MAX_RING):
    """build_ring's ring as indexes into dests, and its prefix (RingTooLarge
    as build_ring). It depends only on the weights and the state's list
    position, so it is computed once per such shape: a -R of 10,000
    services with the same weights simulates the scheduler once."""
    key = (sched, tuple([w for _, w in dests]), _index(dests, state.cl),
           state.cw if sched == WRR else 0)
    limit = 2 * room + 2
    got = _SHAPES.get(key)
    if got is None or got[1] is None and limit > got[3]:
        got = _SHAPES[key] = _shape(sched, dests, state, limit)
    need, picks, p, _ = got
    if need > room:
        raise RingTooLarge(need, room)
    if picks is None or len(picks) - 1 > limit:   # as simulate() refuses it
        raise RingTooLarge(limit + 1, limit)
    if len(picks) > room:
        raise RingTooLarge(len(picks), room)
    return picks, p


def _shape(sched, dests, state, limit):
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    need = cycle_length(sched, dests)
    if need > (limit - 2) // 2:     # refused before simulating, whatever the picks
        return need, None, 0, limit
    try:
        picks, _, p = simulate(sched, dests, state, limit=limit)
    except RingTooLarge:
        return need, None, 0, limit
    # Shorten the prefix while its last entry equals the cycle's last one
    # (rotating the cycle keeps the pick sequence identical).
    while p > 0 and picks[p - 1] == picks[-1]:
        picks = picks[:p - 1] + [picks[-1]] + picks[p:-1]
        p -= 1
    return need, tuple(picks), p, limit


def state_after(sched, dests, state, n):
    """The scheduler state after n picks from state (failed picks change nothing)."""
    if sched not in RING_SCHEDULERS:
        return state
    dests = list(dests)
    if n <= 0:
        return state
    picks, states, p = simulate(sched, dests, state)
    if not picks:
        return state
    total = len(picks)
    k = n if n < total else p + (n - p) % (total - p)
    cl, cw = states[k]
    return SchedState(_slot(dests, cl), cw if sched == WRR else 0)


def picks(sched, dests, state, n):
    """The first n picked slots from state (None for an unavailable pick)."""
    dests = list(dests)
    dm = wrr_di_mw(dests)
    st = (_index(dests, state.cl), state.cw if sched == WRR else 0)
    out = []
    for _ in range(n):
        i, st = _step(sched, dests, st, dm)
        out.append(None if i is None else dests[i][0])
    return out


# --- hooks ----------------------------------------------------------------------

def init_state(sched, dests):
    """init_svc: binding the scheduler to the service (-A, or -E to another one)."""
    if sched not in RING_SCHEDULERS:
        return SchedState()
    _check(sched)
    if sched == RR:
        return SchedState(HEAD, 0)
    _, mw = wrr_di_mw(dests)
    return SchedState(HEAD, mw)


def _wrr_dest_changed(dests, state):
    di, mw = wrr_di_mw(dests)
    cw = state.cw
    if cw > mw or not cw:
        cw = mw
    elif di > 1:
        cw = (cw // di) * di + 1
    return SchedState(HEAD, cw)


def on_add(sched, dests_after, state):
    """A destination was added (it is first in dests_after)."""
    if sched not in RING_SCHEDULERS:
        return state
    return state if sched == RR else _wrr_dest_changed(dests_after, state)


def on_edit(sched, dests_after, state):
    """A destination was edited (weight or anything else)."""
    if sched not in RING_SCHEDULERS:
        return state
    return state if sched == RR else _wrr_dest_changed(dests_after, state)


def on_delete(sched, dests_before, slot, state):
    """The destination in slot is removed from dests_before."""
    if sched not in RING_SCHEDULERS:
        return state
    after = [d for d in dests_before if d[0] != slot]
    if sched == WRR:
        return _wrr_dest_changed(after, state)
    if state.cl == slot:
        i = _index(dests_before, slot)
        return SchedState(_slot(dests_before, i - 1), 0)
    return state


# --- hash schedulers: the kernel's tables and hashes ------------------------------

def hash_32(v, bits):
    """include/linux/hash.h hash_32 (GOLDEN_RATIO_32)."""
    return ((v * 0x61C88647) & 0xffffffff) >> (32 - bits)


def sh_hashkey(addr, port, offset=0):
    """ip_vs_sh_hashkey: addr and port host-order ints."""
    return (offset + hash_32((port + addr) & 0xffffffff, 8)) & (XDPLB_SH_TAB_SIZE - 1)


def dh_hashkey(addr):
    return hash_32(addr, 8)


_M64 = (1 << 64) - 1


def _rol(x, b):
    return ((x << b) | (x >> (64 - b))) & _M64


def hsiphash_u32(m, k0, k1):
    """lib/siphash.c hsiphash() of one u32 on 64-bit kernels (SipHash-1-3)."""
    v0 = 0x736f6d6570736575 ^ k0
    v1 = 0x646f72616e646f6d ^ k1
    v2 = 0x6c7967656e657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    b = (4 << 56) | m

    def sipround(v0, v1, v2, v3):
        v0 = (v0 + v1) & _M64; v1 = _rol(v1, 13); v1 ^= v0; v0 = _rol(v0, 32)  # noqa: E702
        v2 = (v2 + v3) & _M64; v3 = _rol(v3, 16); v3 ^= v2                      # noqa: E702
        v0 = (v0 + v3) & _M64; v3 = _rol(v3, 21); v3 ^= v0                      # noqa: E702
        v2 = (v2 + v1) & _M64; v1 = _rol(v1, 17); v1 ^= v2; v2 = _rol(v2, 32)  # noqa: E702
        return v0, v1, v2, v3

    v3 ^= b
    v0, v1, v2, v3 = sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xff
    for _ in range(3):
        v0, v1, v2, v3 = sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & 0xffffffff


MH_HASH1 = 2654435761
MH_HASH2 = 2654446892


def mh_hashkey(addr, port, key, offset=0):
    """ip_vs_mh_hashkey (host-order addr, port), not reduced mod M."""
    return hsiphash_u32((offset + port + addr) & 0xffffffff, key, key)


def sh_table(dests):
    """ip_vs_sh_reassign: dests [(slot, weight)] in list order -> 256 slots."""
    if not dests:
        return []
    out, i, count = [], 0, 0
    for _ in range(XDPLB_SH_TAB_SIZE):
        slot, w = dests[i]
        out.append(slot)
        count += 1
        if count >= w:
            i, count = (i + 1) % len(dests), 0
    return out


def dh_table(dests):
    """ip_vs_dh_reassign: one bucket per destination, round robin."""
    if not dests:
        return []
    return [dests[i % len(dests)][0] for i in range(XDPLB_SH_TAB_SIZE)]


def mh_table(dests):
    """ip_vs_mh_reassign: dests [(slot, addr, port, last_weight)] in list order
    (addr, port host-order ints) -> XDPLB_MH_TAB_SIZE slots, or [] when every
    last_weight is 0."""
    M = XDPLB_MH_TAB_SIZE
    g = 0
    for *_, lw in dests:
        if lw > 0:
            g = gcd(lw, g) if g > 0 else lw
    if g < 1:
        return []
    mw = max(lw for *_, lw in dests) // g
    shift = max(mw.bit_length() - 6, 0)    # fls(mw) - IP_VS_MH_TAB_BITS
    setup = []
    for slot, addr, port, lw in dests:
        offset = mh_hashkey(addr, port, MH_HASH1) % M
        skip = mh_hashkey(addr, port, MH_HASH2) % (M - 1) + 1
        turns = ((lw // g) >> shift) or (1 if lw else 0)
        setup.append([slot, offset, skip, turns])
    table = [0] * M
    used = bytearray(M)
    n = 0
    while True:
        for ds in setup:
            slot, _, skip, turns = ds
            for _ in range(turns):
                c = ds[1]
                while used[c]:
                    ds[1] += skip
                    if ds[1] >= M:
                        ds[1] -= M
                    c = ds[1]
                used[c] = 1
                table[c] = slot
                n += 1
                if n == M:
                    return table


def table_len(sched, dests, meta=None):
    """len(table_for(...)) without filling the table: 0 without a destination
    (mh: without one whose last weight is non-zero)."""
    if sched == "mh":
        return XDPLB_MH_TAB_SIZE if any(meta[s][2] for s, _ in dests) else 0
    return XDPLB_SH_TAB_SIZE if dests else 0


def table_for(sched, dests, meta=None):
    """The hash scheduler's table. dests [(slot, weight)]; meta {slot: (addr,
    port, last_weight)} (host-order) for mh."""
    if sched == "sh":
        return sh_table(dests)
    if sched == "dh":
        return dh_table(dests)
    return mh_table([(s, *meta[s]) for s, _ in dests])


# --- reference ports of the list schedulers (the tests compare the data path
# with them) -----------------------------------------------------------------------

def list_pick(sched, dests):
    """The kernel's pick for dests [(slot, weight, active, inactive, overload)]
    in list order; None when no destination is available."""
    def oh(d):
        return (d[2] << 8) + d[3]
    least = None
    if sched == "lc":
        for d in dests:
            if d[4] or d[1] == 0:
                continue
            if least is None or oh(d) < oh(least):
                least = d
    elif sched in ("wlc", "sed", "lblc", "lblcr"):
        f = oh if sched != "sed" else (lambda d: d[2] + 1)
        for i, d in enumerate(dests):
            if not d[4] and d[1] > 0:
                least = d
                break
        if least is None:
            return None
        for d in dests[i + 1:]:
            if d[4]:
                continue
            if f(least) * d[1] > f(d) * least[1]:
                least = d
    elif sched == "nq":
        for d in dests:
            if d[4] or not d[1]:
                continue
            if d[2] == 0:
                return d[0]
            if least is None or (least[2] + 1) * d[1] > (d[2] + 1) * least[1]:
                least = d
    elif sched == "fo":
        hw = 0
        for d in dests:
            if not d[4] and d[1] > hw:
                least, hw = d, d[1]
    elif sched == "ovf":
        for d in dests:
            if d[4] or d[2] > d[1] or d[1] == 0:
                continue
            if least is None or d[1] > least[1]:
                least = d
    else:
        raise ValueError(sched)
    return None if least is None else least[0]
