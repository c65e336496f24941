"""The kernel's rr and wrr schedulers, replayed in user space.

The data path does not run a scheduler: it walks a precomputed ring of
destination slots (see the comment on sched_pos in bpf/xdplb.h). This module
produces that ring so that the n-th new connection goes exactly where kernel
IPVS would send it, and replays the scheduler state after N picks so that a
configuration change starts from the state the kernel would be in.

Ports of net/netfilter/ipvs/ip_vs_rr.c and ip_vs_wrr.c (see
ipvs-reference.md §3.0-3.2):

* destinations are given in kernel list order: most recently added first;
* state = (cl, cw): cl is the current list position as a destination slot
  (0 = the list head), cw is wrr's current weight (0 for rr);
* rr: no add/upd hooks; del_dest moves the pointer back to the previous
  entry when it pointed at the removed destination;
* wrr: init_svc sets cl = head, cw = mw; dest_changed (add, del and upd
  hooks) sets cl = head, recomputes di/mw and adjusts cw;
* a destination with weight 0 takes no new connections; IP_VS_DEST_F_OVERLOAD
  never happens here (thresholds are not supported yet).

A destination list is a sequence of (slot, weight) pairs.
"""
from dataclasses import dataclass
from math import gcd

from .structs import XDPLB_MAX_RING

RR, WRR = "rr", "wrr"
SCHEDULERS = (RR, WRR)
HEAD = 0  # the list head, as a "slot"


class RingTooLarge(Exception):
    """The schedule does not fit into the ring space that is left."""

    def __init__(self, needed, room):
        super().__init__(needed, room)
        self.needed, self.room = needed, room


@dataclass(frozen=True)
class SchedState:
    cl: int = HEAD   # destination slot the scheduler points at, HEAD = list head
    cw: int = 0      # wrr current weight (unused by rr)


@dataclass(frozen=True)
class Ring:
    entries: tuple   # destination slots: prefix entries, then the repeating cycle
    prefix: int

    def __len__(self):
        return len(self.entries)

    def pick(self, n):
        """Slot of the n-th pick (0-based), as the data path computes it."""
        if n < self.prefix:
            return self.entries[n]
        return self.entries[self.prefix + (n - self.prefix) % (len(self.entries) - self.prefix)]


def _check(sched):
    if sched not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {sched!r}")


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
    dests = list(dests)
    need = cycle_length(sched, dests)
    if need > room:
        raise RingTooLarge(need, room)
    picks, _, p = simulate(sched, dests, state, limit=2 * room + 2)
    entries = [dests[i][0] for i in picks]
    # Shorten the prefix while its last entry equals the cycle's last one
    # (rotating the cycle keeps the pick sequence identical).
    while p > 0 and entries[p - 1] == entries[-1]:
        entries = entries[:p - 1] + [entries[-1]] + entries[p:-1]
        p -= 1
    if len(entries) > room:
        raise RingTooLarge(len(entries), room)
    return Ring(tuple(entries), p)


def state_after(sched, dests, state, n):
    """The scheduler state after n picks from state (failed picks change nothing)."""
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
    _check(sched)
    return state if sched == RR else _wrr_dest_changed(dests_after, state)


def on_edit(sched, dests_after, state):
    """A destination was edited (weight or anything else)."""
    _check(sched)
    return state if sched == RR else _wrr_dest_changed(dests_after, state)


def on_delete(sched, dests_before, slot, state):
    """The destination in slot is removed from dests_before."""
    _check(sched)
    after = [d for d in dests_before if d[0] != slot]
    if sched == WRR:
        return _wrr_dest_changed(after, state)
    if state.cl == slot:
        i = _index(dests_before, slot)
        return SchedState(_slot(dests_before, i - 1), 0)
    return state
