"""xdplb.sched against docs/ipvs-behaviour.md §5.2/§5.3 and against a second,
independent model of the kernel that applies every change in place."""
import itertools
from math import gcd

import pytest

from xdplb import sched as S
from xdplb.structs import XDPLB_MH_TAB_SIZE


def build(sched, adds, edit_to=None):
    """ipvsadm -A -s sched, then -a in order; slots 1.. by add order.
    Returns (dests in kernel order, state, slot->name)."""
    names, dests = {}, []
    st = S.init_state(sched, [])
    for i, (nm, w) in enumerate(adds):
        names[i + 1] = nm
        dests = [(i + 1, w)] + dests
        st = S.on_add(sched, dests, st)
    if edit_to:
        sched = edit_to
        st = S.init_state(sched, dests)
    return dests, st, names


def seq(sched, adds, n, edit_to=None):
    dests, st, names = build(sched, adds, edit_to)
    ring = S.build_ring(edit_to or sched, dests, st)
    direct = S.picks(edit_to or sched, dests, st, n)
    via_ring = [ring.pick(k) for k in range(n)]
    assert via_ring == direct
    return " ".join(names[s] for s in direct)


# docs/ipvs-behaviour.md §5.3's table: (add order, expected picks)
WRR_ROWS = [
    ([("A", 3), ("B", 1), ("C", 1)], "C B A" + " A A C B A" * 3),
    ([("C", 1), ("B", 1), ("A", 3)], "A B C" + " A A A B C" * 3),
    ([("A", 1), ("B", 3)], "B A" + " B B B A" * 3),
    ([("B", 3), ("A", 1)], "A B" + " B B A B" * 3),
    ([("A", 4), ("B", 3), ("C", 2)], "C B A A B A C B A C B A" + " A B A C B A C B A" * 2),
    ([("A", 4), ("B", 2)], "B A" + " A B A" * 3),
]


@pytest.mark.parametrize("adds,expected", WRR_ROWS)
def test_wrr_reference_table(adds, expected):
    n = len(expected.split())
    assert seq("wrr", adds, n) == expected


def test_wrr_edit_to_wrr_starts_at_steady_state():
    # -E ... -s wrr on a populated service: init_svc, cw = mw
    assert seq("rr", [("A", 3), ("B", 1), ("C", 1)], 10, edit_to="wrr") == "A A C B A A A C B A"


def test_rr_reference():
    assert seq("rr", [("A", 1), ("B", 1), ("C", 1)], 7) == "C B A C B A C"
    assert seq("rr", [("A", 1), ("B", 0), ("C", 1)], 6) == "C A C A C A"


def test_no_destination_available():
    for sched in ("rr", "wrr"):
        dests, st, _ = build(sched, [("A", 0), ("B", 0)])
        ring = S.build_ring(sched, dests, st)
        assert len(ring) == 0
        assert S.picks(sched, dests, st, 3) == [None, None, None]
        assert S.state_after(sched, dests, st, 5) == st


def test_rings_are_short():
    dests, st, _ = build("rr", [(c, 1) for c in "ABCDE"])
    assert len(S.build_ring("rr", dests, st)) == 5
    dests, st, _ = build("wrr", [("A", 100), ("B", 50), ("C", 25)])
    r = S.build_ring("wrr", dests, st)
    assert len(r) - r.prefix == 7    # weights / gcd 25: 4 + 2 + 1


def test_ring_too_large():
    dests, st, _ = build("wrr", [("A", 65535), ("B", 65534)])
    with pytest.raises(S.RingTooLarge):
        S.build_ring("wrr", dests, st, room=1000)


# --- an independent model: the kernel's objects, changed in place -----------------

class Kernel:
    """ip_vs_rr.c / ip_vs_wrr.c on a Python list (index -1 = the list head)."""

    def __init__(self, sched):
        self.sched = sched
        self.lst = []            # [name, weight], head first
        self.cl = None           # None = head, else the [name, weight] object
        self.cw = 0
        self.mw = 0
        self.di = 1
        self.init()

    def _gcd_max(self):
        g = 0
        for _, w in self.lst:
            if w > 0:
                g = gcd(g, w) if g else w
        self.di = g or 1
        self.mw = max([w for _, w in self.lst] + [0]) - (self.di - 1)

    def init(self):
        self.cl = None
        if self.sched == "wrr":
            self._gcd_max()
            self.cw = self.mw

    def changed(self):
        if self.sched == "wrr":
            self.cl = None
            self._gcd_max()
            if self.cw > self.mw or not self.cw:
                self.cw = self.mw
            elif self.di > 1:
                self.cw = (self.cw // self.di) * self.di + 1

    def add(self, name, w):
        self.lst.insert(0, [name, w])
        self.changed()

    def edit(self, name, w):
        next(d for d in self.lst if d[0] == name)[1] = w
        self.changed()

    def delete(self, name):
        d = next(d for d in self.lst if d[0] == name)
        i = self.lst.index(d)
        self.lst.remove(d)
        if self.sched == "rr" and self.cl is d:
            self.cl = self.lst[i - 1] if i > 0 else None
        self.changed()

    def _after(self, obj):
        """Entries after obj up to the head (obj None = from the head)."""
        start = 0 if obj is None else self.lst.index(obj) + 1
        return self.lst[start:]

    def pick(self):
        if self.sched == "rr":
            for _ in range(2):
                for d in self._after(self.cl) + self.lst:
                    if d[1] > 0:
                        self.cl = d
                        return d[0]
                return None
        if self.mw == 0:
            return None
        cur = self.cl
        while True:
            for d in self._after(cur):
                if d[1] >= self.cw:
                    self.cl = d
                    return d[0]
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
            cur = None


class ControlPlane:
    """What control.py does: a ring from a start state, replayed on changes."""

    def __init__(self, sched):
        self.sched = sched
        self.lst = []            # (slot, weight)
        self.names = {}
        self.start = S.init_state(sched, [])
        self.ring = S.build_ring(sched, [], self.start)
        self.base = 0
        self.pos = 0

    def _slot(self, name):
        return next(s for s, n in self.names.items() if n == name)

    def _change(self, hook, after):
        state = S.state_after(self.sched, self.lst, self.start, self.pos - self.base) \
            if len(self.ring) else self.start
        state = hook(state)
        self.lst = after
        self.start, self.base = state, self.pos
        self.ring = S.build_ring(self.sched, self.lst, state)

    def add(self, name, w):
        slot = max(self.names, default=0) + 1
        self.names[slot] = name
        after = [(slot, w)] + self.lst
        self._change(lambda st: S.on_add(self.sched, after, st), after)

    def edit(self, name, w):
        slot = self._slot(name)
        after = [(s, w if s == slot else x) for s, x in self.lst]
        self._change(lambda st: S.on_edit(self.sched, after, st), after)

    def delete(self, name):
        slot = self._slot(name)
        before = self.lst
        after = [(s, x) for s, x in before if s != slot]
        self._change(lambda st: S.on_delete(self.sched, before, slot, st), after)

    def pick(self):
        if not len(self.ring):
            self.pos += 1
            return None
        n = self.pos - self.base
        self.pos += 1
        return self.names[self.ring.pick(n)]


SCRIPTS = [
    [("add", "A", 3), ("add", "B", 1), ("add", "C", 1), ("add", "D", 2)],
    [("add", "A", 3), ("add", "B", 1), ("add", "C", 1), ("edit", "A", 1), ("edit", "B", 5)],
    [("add", "A", 4), ("add", "B", 2), ("add", "C", 6), ("delete", "C", 0), ("add", "C", 2)],
    [("add", "A", 1), ("add", "B", 1), ("add", "C", 1), ("delete", "B", 0),
     ("delete", "C", 0), ("add", "D", 1)],
    [("add", "A", 2), ("add", "B", 0), ("edit", "B", 3), ("edit", "A", 0), ("edit", "B", 0),
     ("edit", "A", 7)],
]


@pytest.mark.parametrize("sched", ["rr", "wrr"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_replay_after_changes_matches_kernel(sched, script):
    """Changes after any number of picks: the ring continues exactly like the kernel."""
    for gaps in itertools.product((0, 1, 2, 5), repeat=2):
        k, c = Kernel(sched), ControlPlane(sched)
        for i, (op, name, w) in enumerate(script):
            for _ in range(gaps[i % 2] + i):
                assert c.pick() == k.pick()
            args = (name,) if op == "delete" else (name, w)
            getattr(k, op)(*args)
            getattr(c, op)(*args)
        got = [c.pick() for _ in range(30)]
        want = [k.pick() for _ in range(30)]
        assert got == want, (sched, script, gaps)


def test_rr_delete_of_pointed_dest_moves_back():
    # list C,B,A; after picks C,B the pointer is at B; deleting B moves it to C
    dests = [(3, 1), (2, 1), (1, 1)]
    st = S.state_after("rr", dests, S.init_state("rr", dests), 2)
    assert st.cl == 2
    st = S.on_delete("rr", dests, 2, st)
    assert st.cl == 3
    assert S.picks("rr", [(3, 1), (1, 1)], st, 3) == [1, 3, 1]


def test_scheduler_change_is_init_svc():
    dests = [(3, 1), (2, 1), (1, 3)]
    st = S.init_state("wrr", dests)
    assert st == S.SchedState(0, 3)
    assert S.init_state("rr", dests) == S.SchedState(0, 0)


# --- the hash schedulers' tables and hashes ---------------------------------------

def test_hsiphash_is_the_kernels():
    """lib/siphash_kunit.c, 64-bit: hsiphash of bytes 00 01 02 03 with key
    00..0f is 0x88d38328."""
    assert S.hsiphash_u32(0x03020100, 0x0706050403020100, 0x0f0e0d0c0b0a0908) == 0x88d38328


def test_sh_dh_tables_fill_like_the_kernel():
    assert S.sh_table([(7, 3), (8, 1), (9, 0)])[:10] == [7, 7, 7, 8, 9, 7, 7, 7, 8, 9]
    assert S.dh_table([(7, 3), (8, 1)])[:4] == [7, 8, 7, 8]
    assert S.hash_32(1, 8) == (0x61C88647 >> 24)


def mh_counts(weights):
    """{slot: buckets} of ip_vs_mh_reassign for destinations 1.. with these
    last weights (10.0.0.<slot>:80, in list order)."""
    table = S.mh_table([(i + 1, 0x0a000000 + i + 1, 80, w) for i, w in enumerate(weights)])
    assert len(table) in (0, XDPLB_MH_TAB_SIZE)
    return {s: table.count(s) for s in set(table)}


def test_mh_fills_every_bucket_by_turns_of_weight():
    """ip_vs_mh_populate: destinations take turns in list order, each placing
    weight/gcd buckets per turn, until the 4093 buckets are full."""
    assert mh_counts([1, 2]) == {1: 1365, 2: 2728}        # 1364 turns of 3, then one more
    assert mh_counts([2, 4]) == mh_counts([1, 2])          # weights count by their gcd
    assert mh_counts([3, 0, 3]) == {1: 2047, 3: 2046}      # weight 0: no bucket
    assert mh_counts([0, 0]) == {} and mh_counts([]) == {}


def test_mh_scales_large_weights_down():
    """Weights above 2^6 (IP_VS_MH_TAB_BITS) are shifted right until the
    largest fits in 6 bits; a small weight keeps one bucket per turn."""
    assert mh_counts([1, 2**20]) == {1: 125, 2: 3968}           # turns of 1 + 32
    assert mh_counts([1, 2147483647]) == {1: 64, 2: 4029}       # turns of 1 + 63


def test_mh_table_depends_on_addresses_not_slots():
    """Each destination's offset and skip come from its address and port: the
    same servers give the same buckets whatever slots they sit in."""
    a = S.mh_table([(1, 0x0a000001, 80, 1), (2, 0x0a000002, 80, 1)])
    b = S.mh_table([(7, 0x0a000001, 80, 1), (9, 0x0a000002, 80, 1)])
    assert [{1: 7, 2: 9}[s] for s in a] == b

