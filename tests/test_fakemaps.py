"""The fake map store of the unit tier (tests/unit/fakemaps.py) against the
real pinned maps: the same operations on both, every answer (values, True /
False, None, errno and message of every error) and the final bytes of every
map compared. This is what keeps the fake honest; it needs root and bcc.

The maps are the session's data-path state (datapath_state); each test puts
back what it changed, so the other data-path tests find the state as it was.
"""
import contextlib
import ctypes as C
import errno
import os
import random

import pytest

from unit.fakemaps import FakeState
from xdplb import bpfsys, maps
from xdplb.structs import COUNTERS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs, bcc)")

ANY, NOEXIST, EXIST, BAD_FLAGS = bpfsys.BPF_ANY, bpfsys.BPF_NOEXIST, bpfsys.BPF_EXIST, 3
# enum bpf_map_type
KINDS = {1: "hash", 2: "array", 6: "percpu_array", 9: "lru_hash", 14: "devmap"}


def _buf(raw):
    return C.create_string_buffer(raw, len(raw))


@contextlib.contextmanager
def restored(m):
    """Put map m back as it was (only the entries that differ are written)."""
    before = dict(m.raw_items())
    try:
        yield
    finally:
        after = dict(m.raw_items())
        for kb in after.keys() - before.keys():
            bpfsys.delete(m.fd, _buf(kb))
        for kb, vb in before.items():
            if after.get(kb) != vb:
                bpfsys.update(m.fd, _buf(kb), _buf(vb))
        assert dict(m.raw_items()) == before


@pytest.fixture
def net(datapath_net):
    """Inside the data-path netns: tx_ports (a DEVMAP) takes only its ifindexes."""
    with datapath_net["ns"].entered():
        yield datapath_net


@pytest.fixture
def fake(datapath_state):
    return FakeState(datapath_state.folder)


def copy(real, fm):
    """Fill the fake map fm with what the real map holds now."""
    items = real.raw_items()
    if fm.kind == "devmap":    # no batch updates
        for kb, vb in items:
            fm.put(fm.decode_key(kb), fm.decode_value(vb))
    else:
        fm.put_raw(b"".join(k for k, _ in items), b"".join(v for _, v in items), len(items))


@pytest.fixture
def pinned(datapath_state):
    """Opens a map of the state by its pin, a Map object of the test's own:
    what a test does to one (maps.Map stops batching after an EINVAL) stays
    out of datapath_state's."""
    opened = []

    def open_pinned(name, readonly=False):
        opened.append(maps.open_map(datapath_state.folder, name, readonly=readonly))
        return opened[-1]
    yield open_pinned
    for m in opened:
        m.close()


def _norm(x):
    """An answer as comparable bytes."""
    if isinstance(x, (C.Structure, C._SimpleCData, C.Array)):
        return bytes(x)
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    return x


def run(m, ops):
    """[answer of each op]: its value, or ("error", errno, text)."""
    out = []
    for op, *args in ops:
        try:
            if op == "keys":
                got = sorted(_norm(list(m.keys())), key=repr)
            elif op == "items":
                got = sorted(_norm(list(m.items())), key=repr)
            elif op == "raw_items":
                got = sorted(m.raw_items(*args))
            elif op == "chunks":
                got = [n for _, _, n in m.raw_chunks(*args)]
            else:
                got = _norm(getattr(m, op)(*args))
        except OSError as e:
            got = ("error", e.errno, str(e))
        out.append((op, got))
    return out


def _values(m, rng, n):
    """n values of m's value type from random bytes (per CPU for per-CPU maps)."""
    def one():
        return m.value_type.from_buffer_copy(rng.randbytes(C.sizeof(m.value_type)))
    if isinstance(m, maps.PerCpuMap):
        return [[one() for _ in range(m.ncpus)] for _ in range(n)]
    return [one() for _ in range(n)]


def hash_script(m, rng):
    k = [m.key_type.from_buffer_copy(rng.randbytes(C.sizeof(m.key_type))) for _ in range(6)]
    v = _values(m, rng, 6)
    return [
        ("put", k[0], v[0]), ("get", k[0]), ("put", k[0], v[1], NOEXIST),
        ("put", k[1], v[1], EXIST), ("put", k[1], v[1], NOEXIST), ("put", k[1], v[2], EXIST),
        ("get", k[1]), ("get", k[2]), ("delete", k[2]), ("delete", k[1]), ("get", k[1]),
        ("put", k[2], v[2], BAD_FLAGS),
        ("put_many", [(k[2], v[2]), (k[3], v[3])]),
        ("put_many", [(k[4], v[4]), (k[0], v[0]), (k[5], v[5])], NOEXIST),
        ("get", k[4]), ("get", k[5]),
        ("put_many", [(k[5], v[5])], BAD_FLAGS),   # maps.Map falls back to single updates
        ("put_many", [(k[5], v[5]), (k[4], v[0])], NOEXIST),
        ("keys",), ("items",), ("raw_items",), ("chunks",),
        ("clear",), ("raw_items",), ("put", k[3], v[3]), ("raw_items",),
    ]


def array_script(m, rng):
    top = m.max_entries
    v = _values(m, rng, 8)
    ops = [
        ("put", 1, v[1]), ("get", 1), ("get", top - 1), ("get", top), ("put", top, v[0]),
        ("put", 2, v[2], NOEXIST), ("put", 2, v[2], EXIST), ("put", 2, v[3], BAD_FLAGS),
        ("delete", 1), ("delete", top), ("put", top - 1, v[4]),
        ("put_many", [(3, v[3]), (4, v[4])]),
        ("put_many", [(5, v[5]), (top, v[0]), (6, v[6])]), ("get", 5), ("get", 6),
        ("put_zeros", [1, 3]), ("get", 1), ("get", 3), ("put_zeros", [7, top]),
        ("raw_items", 8), ("chunks", 9), ("clear",),
    ]
    if isinstance(m, maps.PerCpuMap):
        single = m.value_type.from_buffer_copy(rng.randbytes(C.sizeof(m.value_type)))
        ops += [("put", 4, single), ("get", 4), ("zero", 2), ("get", 2),
                ("zero_many", [4, 5]), ("get", 4), ("get", 5), ("sum", 6), ("sum", 0)]
    return ops


def counters_script(m, rng):
    """The global counters: rx is derived from the verdicts."""
    small = [C.c_uint64(rng.randrange(1 << 20)) for _ in range(m.ncpus)]
    return ([("put", i, small) for i in range(len(COUNTERS))]
            + [("sum", i) for i in range(len(COUNTERS))] + [("items",)])


def devmap_script(m, net):
    ifx = [C.c_uint32(net["cli_idx"]), C.c_uint32(net["srv_idx"])]
    top = m.max_entries
    return [
        ("get", net["cli_idx"]), ("get", 7), ("put", 7, ifx[0]), ("get", 7),
        ("put", 7, ifx[1], NOEXIST), ("put", 8, ifx[1], NOEXIST), ("put", 8, ifx[1], EXIST),
        ("get", 8), ("put", 8, ifx[0], BAD_FLAGS), ("put", top, ifx[0]),
        ("delete", 9), ("delete", 8), ("delete", top), ("get", 8),
        ("put", 7, C.c_uint32(0)), ("get", 7), ("put_many", [(10, ifx[0])]), ("get", 10),
        ("put_zeros", [10]), ("get", 10),
        ("raw_items",), ("items",), ("keys",),
    ]


def script(m, kind, rng, net):
    """The operations for map m, of this kind."""
    if isinstance(m, maps.CounterMap):
        return counters_script(m, rng)
    if kind in ("array", "percpu_array"):
        return array_script(m, rng)
    if kind == "devmap":
        return devmap_script(m, net)
    return hash_script(m, rng)


def test_kinds_and_sizes_are_the_pinned_maps(datapath_state, fake):
    for name in maps.MAPS:
        real, fm = getattr(datapath_state, name), getattr(fake, name)
        info = bpfsys.obj_info(real.fd, bpfsys.BpfMapInfo)
        assert (KINDS.get(info.type), info.max_entries, info.key_size, info.value_size) == \
            (fm.kind, fm.max_entries, C.sizeof(fm.key_type), C.sizeof(fm.value_type)), name


@pytest.mark.parametrize("name", list(maps.MAPS))
def test_same_answers_and_bytes(pinned, fake, net, name):
    real, fm = pinned(name), getattr(fake, name)
    copy(real, fm)
    ops = script(real, fm.kind, random.Random(name), net)
    with restored(real):
        want = run(real, ops)
        assert run(fm, ops) == want
        assert sorted(fm.raw_items()) == sorted(real.raw_items())
    # the scripts reach the refusals they are written for
    if name != "counters":
        assert any(got[0] == "error" for _, got in want if isinstance(got, tuple)), want


def _fill(m, rng, n):
    keys = {rng.randbytes(C.sizeof(m.key_type)) for _ in range(n + n // 8)}
    keys = [m.key_type.from_buffer_copy(kb) for kb in sorted(keys)[:n]]
    value = m.value_type()
    return [(k, value) for k in keys]


def test_a_full_hash_refuses_new_keys_only(pinned, fake):
    """services (a hash): E2BIG for a new key once full, replacing one still works."""
    real, fm = pinned("services"), fake.services
    rng = random.Random("full")
    with restored(real):
        real.clear()
        fm.clear()
        items = _fill(real, rng, real.max_entries + 1)
        new, items = items[-1], items[:-1]
        ops = [("put_many", items), ("put", *new), ("put", items[0][0], real.value_type(seq=7)),
               ("put_many", [(items[1][0], real.value_type(seq=8)), new]),
               ("get", items[1][0]), ("delete", items[2][0]), ("put", *new), ("get", new[0])]
        want = run(real, ops)
        assert [got[1] for _, got in want if isinstance(got, tuple)] == [7, 7]  # E2BIG twice
        assert run(fm, ops) == want
        assert sorted(fm.raw_items()) == sorted(real.raw_items())


def test_a_full_lru_hash_evicts(pinned, fake):
    """lblc (an LRU hash): a put into a full table succeeds and something is
    evicted (which entries, the kernel's LRU decides: only that is compared)."""
    rng = random.Random("lru")
    real = pinned("lblc")
    for m in (real, fake.lblc):
        with restored(m) if m is real else contextlib.nullcontext():
            m.clear()
            items = _fill(m, rng, m.max_entries + 1)
            m.put_many(items)
            left = {k for k, _ in m.raw_items()}
            assert len(left) <= m.max_entries
            assert bytes(items[-1][0]) in left
            m.clear()


def test_read_only_maps_refuse_every_write(pinned, datapath_state):
    """A map opened with BPF_F_RDONLY (State(readonly=True), the exporter's)
    and FakeState(readonly=True): EPERM for every write."""
    ro_fake = FakeState(datapath_state.folder, readonly=True)
    for name, ops in (("services", [("put", datapath_state.services.key_type(),
                                     datapath_state.services.value_type()),
                                    ("delete", datapath_state.services.key_type()),
                                    ("put_many", [(datapath_state.services.key_type(),
                                                   datapath_state.services.value_type())])]),
                      ("dests", [("put", 1, datapath_state.dests.value_type()),
                                 ("delete", 1), ("put_zeros", [1])]),
                      ("svc_stats", [("zero", 1), ("zero_many", [1, 2])]),
                      ("tx_ports", [("put", 1, C.c_uint32(1)), ("delete", 1)])):
        want = run(pinned(name, readonly=True), ops)
        assert all(got[:2] == ("error", errno.EPERM) for _, got in want), want
        assert run(getattr(ro_fake, name), ops) == want, name
