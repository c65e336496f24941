"""The fake map store answers as the kernel does (tests/test_fakemaps.py checks
the same against the real maps, as root); here, what tests may rely on."""
import ctypes as C
import errno

import pytest

from xdplb import bpfsys, maps, structs
from .fakemaps import FakeCounterMap, FakeMap, FakePerCpuMap, FakeState, map_declarations

NOEXIST, EXIST = bpfsys.BPF_NOEXIST, bpfsys.BPF_EXIST


def error(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno, str(e.value)


def svc_key(i):
    return structs.SvcKey(port=i)


def test_one_fake_per_map_sized_from_the_headers(fake_state):
    for name, (cls, key_type, value_type) in maps.MAPS.items():
        m = getattr(fake_state, name)
        assert isinstance(m, cls) and isinstance(m, FakeMap), name
        assert (m.name, m.key_type, m.value_type) == (name, key_type, value_type)
    assert fake_state.services.max_entries == structs.XDPLB_MAX_SERVICES
    assert fake_state.tx_ports.max_entries == structs.XDPLB_MAX_PORTS * 16
    assert (fake_state.dests.kind, fake_state.conns.kind, fake_state.svc_stats.kind) == \
        ("array", "lru_hash", "percpu_array")
    assert type(fake_state.counters) is FakeCounterMap
    assert isinstance(fake_state.conn_table, maps.ConnTable)
    small = FakeState(fake_state.folder, sizes={"services": 2}, ncpus=3)
    assert small.services.max_entries == 2 and small.svc_stats.ncpus == 3


def test_declarations_must_be_found(tmp_path):
    (tmp_path / "maps.h").write_text(
        'BPF_TABLE("hash", struct svc_key, struct service, services, XDPLB_NO_SUCH);\n')
    with pytest.raises(ValueError, match="'XDPLB_NO_SUCH' is neither a number"):
        map_declarations(str(tmp_path))
    (tmp_path / "maps.h").write_text(
        '#define SMALL 4\n'
        'BPF_TABLE("hash", struct svc_key, struct service, services, SMALL * 2);\n')
    with pytest.raises(LookupError, match="no declaration in .* of the maps .*'dests'"):
        map_declarations(str(tmp_path))


def test_hash(fake_state):
    m = FakeState(fake_state.folder, sizes={"services": 2}).services
    v = m.value_type(seq=5)
    m.put(svc_key(1), v)
    assert m.get(svc_key(1)).seq == 5 and m.get(svc_key(2)) is None
    assert error(m.put, svc_key(1), v, NOEXIST) == (
        errno.EEXIST, "[Errno 17] map update: File exists")
    assert error(m.put, svc_key(2), v, EXIST)[0] == errno.ENOENT
    assert error(m.put, svc_key(2), v, 3)[0] == errno.EINVAL
    m.put(svc_key(2), v, NOEXIST)
    assert error(m.put, svc_key(3), v) == (
        errno.E2BIG, "[Errno 7] map update: Argument list too long")
    m.put(svc_key(2), m.value_type(seq=6), EXIST)          # replacing in a full table works
    assert [k.port for k in m.keys()] == [1, 2]
    assert m.delete(svc_key(1)) is True and m.delete(svc_key(1)) is False
    assert [(k.port, v.seq) for k, v in m.items()] == [(2, 6)]
    m.clear()
    assert m.raw_items() == []


def test_lru_hash_evicts_the_oldest(fake_state):
    m = FakeState(fake_state.folder, sizes={"lblc": 2}).lblc
    for i in (1, 2, 3):
        m.put(structs.LblcKey(svc_slot=i), m.value_type(n=i))
    assert [k.svc_slot for k in m.keys()] == [2, 3]


def test_array(fake_state):
    m = FakeState(fake_state.folder, sizes={"timeouts": 4}).timeouts
    assert m.get(3).value == 0 and m.get(4) is None
    m.put(1, C.c_uint32(7))
    assert list(m.keys()) == [0, 1, 2, 3]
    assert [(k, v.value) for k, v in m.items()] == [(0, 0), (1, 7), (2, 0), (3, 0)]
    assert error(m.put, 4, C.c_uint32(1))[0] == errno.E2BIG
    assert error(m.put, 1, C.c_uint32(1), NOEXIST)[0] == errno.EEXIST
    m.put(1, C.c_uint32(8), EXIST)
    assert error(m.delete, 1) == (errno.EINVAL, "[Errno 22] map delete: Invalid argument")
    assert m.raw_items(2) == [(bytes(4), bytes(4)), (b"\1\0\0\0", b"\x08\0\0\0")]


def test_batches(fake_state):
    m = FakeState(fake_state.folder, sizes={"timeouts": 4}).timeouts
    assert error(m.put_many, [(0, C.c_uint32(1))], NOEXIST) == (
        errno.EINVAL, "[Errno 22] map batch update: Invalid argument")
    assert m.get(0).value == 0                               # nothing written
    assert error(m.put_many, [(2, C.c_uint32(2)), (4, C.c_uint32(4)), (3, C.c_uint32(3))]) == (
        errno.E2BIG, "[Errno 7] map batch update: Argument list too long")
    assert [m.get(i).value for i in (2, 3)] == [2, 0]        # written up to the refusal
    m.put_zeros([2])
    assert m.get(2).value == 0


def test_devmap(fake_state):
    m = fake_state.tx_ports
    assert m.get(7) is None and m.delete(7) is True
    m.put(7, C.c_uint32(3))
    assert error(m.put, 8, C.c_uint32(3), NOEXIST)[0] == errno.EEXIST
    assert [(k, v.value) for k, v in m.items()] == [(7, 3)]
    m.put(7, C.c_uint32(0))                                  # ifindex 0 empties the slot
    assert m.get(7) is None
    assert error(m.delete, m.max_entries)[0] == errno.EINVAL
    assert error(m.put_many, [(7, C.c_uint32(3))]) == (
        bpfsys.ENOTSUPP, "[Errno 524] map batch update: Unknown error 524")


def test_per_cpu(fake_state):
    st = FakeState(fake_state.folder, ncpus=2)
    m = st.svc_stats
    assert isinstance(m, FakePerCpuMap)
    m.put(1, [m.value_type(conns=1, inpkts=2), m.value_type(conns=10)])
    assert [v.conns for v in m.get(1)] == [1, 10]
    assert (m.sum(1).conns, m.sum(1).inpkts) == (11, 2)
    m.put(2, m.value_type(outbytes=5))                       # one value: every CPU
    assert [v.outbytes for v in m.get(2)] == [5, 5]
    m.zero(1)
    m.zero_many([2])
    assert m.sum(1).conns == 0 and m.sum(2).outbytes == 0
    c = st.counters
    c.put(structs.COUNTERS.index("fwd"), [C.c_uint64(3), C.c_uint64(4)])
    c.put(structs.COUNTERS.index("pass"), [C.c_uint64(1), C.c_uint64(0)])
    assert c.sum(maps.XDPLB_CNT_RX) == 8                     # rx: every verdict


def test_read_only(fake_state):
    ro = FakeState(fake_state.folder, readonly=True)
    assert ro.services.get(svc_key(1)) is None
    for call in ((ro.services.put, svc_key(1), ro.services.value_type()),
                 (ro.services.delete, svc_key(1)), (ro.dests.put_zeros, [1]),
                 (ro.svc_stats.zero, 1), (ro.tx_ports.delete, 1)):
        assert error(*call)[0] == errno.EPERM
