"""The planner (xdplb/config.py, xdplb/tables.py) without root, bcc or a kernel.

The maps are the unit tier's fakes (fakemaps.FakeState), written directly
(no journal). Sequences of operations run line by line (a fresh Tables and
one write per line, as xdplbadm runs them) and merged (one Tables, one
write, as xdplbadm -R) must leave the same bytes and give the same
refusals; and while a merged write is applied, entry by entry, the data path
must never find a service whose live ring or list names a missing entry or
another service's destination."""
import ctypes as C

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdplb import config, maps, model
from xdplb.model import Destination, Service, XdplbError
from xdplb.structs import (IP_VS_CONN_F_MASQ, XDPLB_RING_GEN_BIT, XDPLB_RS_SVC_MAX, DestEntry,
                           RingKey, RsSvcs, SvcDests, SvcEntry, SvcKey)
from xdplb.tables import Tables

from .fakemaps import FakeState

SIZES = {"services": 4, "dests": 10, "sched_ring": 600}


def fake(check=False):
    """A FakeState of small tables; with check, the data path's view is
    checked after every single entry written."""
    state = FakeState("/nonexistent", sizes=SIZES)
    if check:
        for name in maps.MAPS:
            m = getattr(state, name)
            m._update = _then(m._update, lambda: data_path_view(state))
            m.delete = _then(m.delete, lambda: data_path_view(state))
    return state


def _then(write, check):
    def written(*args):
        done = write(*args)
        check()
        return done
    return written


def contents(state):
    """Every non-zero entry (an array's zeroed entry is no entry)."""
    return {name: {k: v for k, v in getattr(state, name)._entries.items() if any(v)}
            for name in maps.MAPS}


def data_path_view(state):
    """What the data path may find at this instant: every live service's ring
    entries and list name used destinations of that service, and each of its
    masquerading destinations is in rs_table and the filter (a reply of its
    connections finds them)."""
    dests = {int.from_bytes(k, "little"): DestEntry.from_buffer_copy(v)
             for k, v in state.dests._entries.items()}
    ring = state.sched_ring._entries
    for kb, vb in state.services._entries.items():
        svc = SvcEntry.from_buffer_copy(vb)
        for i in range(svc.ring_len):
            vb2 = ring.get(bytes(RingKey(svc.slot, svc.ring_gen | i)))
            assert vb2 is not None, ("half-switched ring", SvcKey.from_buffer_copy(kb), i)
            d = dests.get(int.from_bytes(vb2, "little"))
            assert d is not None and d.flags and d.svc_slot == svc.slot, "ring names a stranger"
        sd = state.svc_dests._entries.get(bytes(C.c_uint32(svc.slot)))
        lst = SvcDests.from_buffer_copy(sd) if sd else SvcDests()
        for e in lst.d[:lst.n]:
            d = dests.get(e.slot)
            assert d is not None and d.flags and d.svc_slot == svc.slot, "list names a stranger"
        picked = {int.from_bytes(ring[bytes(RingKey(svc.slot, svc.ring_gen | i))], "little")
                  for i in range(svc.ring_len)} | {e.slot for e in lst.d[:lst.n]}
        for slot in picked:
            d = dests[slot]
            if d.fwd == IP_VS_CONN_F_MASQ:
                assert kb in rs_services(state, svc_of(kb), d), "a reply could not find it"


def svc_of(kb):
    k = SvcKey.from_buffer_copy(kb)
    return (k.proto, ".".join(map(str, k.addr)), int.from_bytes(bytes(C.c_uint16(k.port)), "big"))


def rs_services(state, svc_k, d):
    """The service keys rs_table lists for destination d of service svc_k, if
    the filter has its address, else []."""
    bit = config.rs_filter_bit(bytes(d.addr))
    word = state.rs_filter._entries.get(bytes(C.c_uint32(bit >> 6)))
    if not word or not int.from_bytes(word, "little") >> (bit & 63) & 1:
        return []
    v = state.rs_table._entries.get(config.rs_key(svc_k, bytes(d.addr), d.port))
    v = RsSvcs.from_buffer_copy(v) if v else RsSvcs()
    return [bytes(v.svc[i]) for i in range(v.n)]


def rs_table_covers(state):
    """rs_table lists the services of each masquerading destination (and
    may still list services whose destination went: conns.sweep prunes
    those once no connection needs them)."""
    want = {}
    dests = [DestEntry.from_buffer_copy(v) for v in state.dests._entries.values()]
    for kb, vb in state.services._entries.items():
        svc = SvcEntry.from_buffer_copy(vb)
        for d in dests:
            if d.flags and d.svc_slot == svc.slot and d.fwd == IP_VS_CONN_F_MASQ:
                want.setdefault(config.rs_key(svc_of(kb), bytes(d.addr), d.port), set()).add(kb)
    got = {k: {bytes(v.svc[i]) for i in range(v.n)}
           for k, v in ((k, RsSvcs.from_buffer_copy(v))
                        for k, v in state.rs_table._entries.items())}
    assert all(want[k] <= got.get(k, set()) for k in want)


VIPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
RIPS = [f"10.1.0.{i}" for i in range(1, 7)]
SCHEDS = ["rr", "wrr", "lc", "sh", "mh", "dh"]


def key(v):
    return (6, VIPS[v], 80)


ops = st.one_of(
    st.tuples(st.just("A"), st.integers(0, 4), st.sampled_from(SCHEDS)),
    st.tuples(st.just("E"), st.integers(0, 4), st.sampled_from(SCHEDS)),
    st.tuples(st.just("D"), st.integers(0, 4)),
    st.tuples(st.just("a"), st.integers(0, 4), st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("a"), st.integers(0, 4), st.integers(0, 5), st.integers(0, 3),
              st.sampled_from([0, 3])),
    st.tuples(st.just("e"), st.integers(0, 4), st.integers(0, 5), st.integers(0, 3),
              st.sampled_from([0, 3])),
    st.tuples(st.just("d"), st.integers(0, 4), st.integers(0, 5)),
    st.tuples(st.just("C")),
    st.tuples(st.just("Z"), st.integers(0, 4)),
    st.tuples(st.just("set"), st.integers(0, 9)),
)


def operation(op):
    """(planner operation, args) of a generated op."""
    c = op[0]
    if c in "AE":
        f = config.add_service if c == "A" else config.edit_service
        return f, (Service(*key(op[1]), sched=op[2]),)
    if c == "D":
        return config.delete_service, (key(op[1]),)
    if c in "ae":
        f = config.add_dest if c == "a" else config.edit_dest
        fwd = op[4] if len(op) > 4 else IP_VS_CONN_F_MASQ   # Masq or Route
        return f, (key(op[1]), Destination(RIPS[op[2]], 80, fwd=fwd, weight=op[3]))
    if c == "d":
        return config.delete_dest, (key(op[1]), RIPS[op[2]], 80)
    if c == "C":
        return config.flush, ()
    if c == "Z":
        return config.zero, (key(op[1]),)
    return config.set_timeouts, (op[1], 0, op[1])


def one_by_one(state, lines):
    """Each line planned on tables of its own, and written (xdplbadm, line by line)."""
    out = []
    for op in lines:
        t = Tables(state)
        try:
            plan = op[0](t, *op[1])
        except XdplbError as e:
            out.append(e.message)
            continue
        t.apply(plan)
        t.write(state)
        out.append(None)
    return out


def merged(state, lines):
    """Every line planned on one copy, the net result written (xdplbadm -R)."""
    t = Tables(state)
    results, _ = config.run(t, lines)
    t.write(state)
    return [e and e.message for e in results], t


BASE = [operation(op) for op in (("A", 0, "wrr"), ("a", 0, 0, 3), ("a", 0, 1, 1),
                                 ("A", 1, "rr"), ("a", 1, 2, 1), ("a", 1, 3, 2),
                                 ("A", 2, "sh"), ("a", 2, 4, 1))]


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=14))
def test_merged_equals_line_by_line_and_never_half_switched(gen):
    lines = [operation(op) for op in gen]
    a = fake()
    one_by_one(a, BASE)
    want = one_by_one(a, lines)
    b = fake(check=True)
    one_by_one(b, BASE)
    got, _ = merged(b, lines)
    assert got == want
    assert contents(b) == contents(a)
    rs_table_covers(a)


def test_a_masquerading_real_server_serves_at_most_rs_svc_max_services():
    """rs_table holds XDPLB_RS_SVC_MAX services per real server addr:port: one
    more is refused, changing nothing; a Route destination is not limited."""
    state = FakeState("/nonexistent", sizes={**SIZES, "services": 40, "dests": 40})
    vips = [f"10.9.0.{i}" for i in range(1, XDPLB_RS_SVC_MAX + 2)]
    lines = [(config.add_service, (Service(6, v, 80, sched="rr"),)) for v in vips]
    lines += [(config.add_dest, ((6, v, 80), Destination("10.1.0.1", 8080, fwd=0, weight=1)))
              for v in vips]
    out = one_by_one(state, lines)
    assert out[:-1] == [None] * (len(lines) - 1)
    assert out[-1] == (f"{model.E_ENOMEM}: a masquerading real server (address and port) can "
                       f"serve at most {XDPLB_RS_SVC_MAX} virtual services in xdplb")
    rs_table_covers(state)
    routed = (config.add_dest, ((6, vips[-1], 80), Destination("10.1.0.1", 80, fwd=3, weight=1)))
    assert one_by_one(state, [routed]) == [None]
    rs_table_covers(state)


def test_slot_reuse_starts_a_segment_and_a_live_ring_detours():
    """The two ordering rules at work: -d then -a taking the freed slot is
    written in two segments; a live service switched twice goes through its
    other generation."""
    state = fake()
    one_by_one(state, BASE)
    rr = state.services.get(SvcKey((C.c_uint8 * 4)(10, 0, 0, 2), 20480, 6, 0))
    lines = [operation(op) for op in (("a", 1, 5, 1), ("e", 1, 5, 2),   # two switches
                                      ("d", 0, 1), ("a", 0, 4, 1))]     # slot 2 again
    _, t = merged(state, lines)
    assert len(t.segments) == 2
    after = state.services.get(SvcKey((C.c_uint8 * 4)(10, 0, 0, 2), 20480, 6, 0))
    assert after.ring_gen == rr.ring_gen and after.ring_len == 3
    assert all(RingKey.from_buffer_copy(k).index & XDPLB_RING_GEN_BIT == rr.ring_gen
               for k in state.sched_ring._entries
               if RingKey.from_buffer_copy(k).svc_slot == rr.slot)


def test_refusals_change_nothing_and_read_little():
    """A refused operation returns no plan; one -a reads its own service and
    its destinations, not the others."""
    state = fake()
    one_by_one(state, BASE)
    before = contents(state)
    for op, msg in ((("A", 0, "rr"), model.E_SVC_EXISTS), (("a", 4, 0, 1), model.E_SVC_NOT_DEFINED),
                    (("a", 0, 0, 1), model.E_DEST_EXISTS), (("e", 0, 5, 1), model.E_NO_DEST),
                    (("A", 3, "nosuch"), model.E_NO_SCHED)):
        assert one_by_one(state, [operation(op)]) == [msg]
    assert contents(state) == before
    t = Tables(state)
    t.apply(config.add_dest(t, key(1), Destination(RIPS[5], 80, fwd=0)))
    assert not t.all_svcs and not t.all_dests
    assert set(s for s, d in t.dest.items() if d is not None) == {3, 4, 6}


def test_full_tables_are_refused_with_the_table_named():
    state = fake()
    lines = [operation(("A", v, "rr")) for v in range(5)]
    got = one_by_one(state, lines)
    assert got[:4] == [None] * 4 and "services table is full (4 services" in got[4]
    lines = [operation(("a", v, d, 1)) for v in range(4) for d in range(6)][:10]
    got, _ = merged(state, lines)
    assert got.count(None) == 9
    assert "destinations table is full (9 destinations" in [g for g in got if g][0]


@pytest.mark.parametrize("sched,err", [("wrr", "schedule of this service needs"),
                                       ("mh", "table of this service needs 4093")])
def test_ring_room_is_refused(sched, err):
    state = fake()
    lines = [operation(("A", 0, sched)), operation(("a", 0, 0, 300)),
             operation(("a", 0, 1, 301))]
    got = one_by_one(state, lines)
    assert err in (got[1] or got[2])
