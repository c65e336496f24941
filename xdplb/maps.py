"""Typed access to xdplb's pinned BPF maps.

Each map is opened by its pin in the state folder (xdplb/state.py) and read
and written with the ctypes mirrors of bpf/xdplb.h (xdplb/structs.py).
Opening a pin checks the kernel's key and value sizes against the mirrors:
a state pinned by another layout is refused, never misread.

Keys and values cross the syscall boundary as bytes: encode_key/encode_value
and decode_key/decode_value are the one conversion, used by the journal too.
"""
import array
import ctypes as C
import os

from . import bpfsys
from .structs import (COUNTERS, VERDICTS, Alloc, Conn, Conn6, ConnKey, ConnKey6, DestConns,
                      DestEntry, FragKey, FragRec, IpVsStats, LaddrSet, LblcEnt, LblcKey, RingKey,
                      RsKey, RsKey6, RsSvcs, RsSvcs6, SchedPos, SvcDests, SvcEntry, SvcKey,
                      SvcKey6, TunSrc6)

XDPLB_CNT_RX = COUNTERS.index("rx")


class LayoutError(Exception):
    """A pin's key or value size is not the one its mirror has."""


class Map:
    """A pinned map with ctypes keys and values. Array keys are plain ints."""

    BATCH = 8192          # entries per lookup batch
    PUT_BATCH = 65536     # entries per update batch
    _batch_ok = True

    def __init__(self, fd, key_type, value_type, name, max_entries=None):
        self.fd, self.key_type, self.value_type, self.name = fd, key_type, value_type, name
        self.key_size = C.sizeof(key_type)
        self.value_size = self._value_size()
        self._max_entries = max_entries

    def _value_size(self):
        return C.sizeof(self.value_type)

    @property
    def max_entries(self):
        """The size the map was created with."""
        if self._max_entries is None:
            self._max_entries = bpfsys.obj_info(self.fd, bpfsys.BpfMapInfo).max_entries
        return self._max_entries

    # --- encoding: the one conversion between Python values and map bytes --------

    def encode_key(self, key):
        """Bytes of a key: an int (array index), a ctypes key, or bytes as they are."""
        if isinstance(key, int):
            return bytes(self.key_type(key))
        return key if isinstance(key, bytes) else bytes(key)

    def encode_keys(self, keys):
        """Bytes of many keys, packed (array indexes in one go)."""
        if self.key_type is C.c_uint32 and all(isinstance(k, int) for k in keys):
            return array.array("I", keys).tobytes()
        return b"".join(self.encode_key(k) for k in keys)

    def encode_value(self, value):
        return value if isinstance(value, bytes) else bytes(value)

    def decode_key(self, raw):
        key = self.key_type.from_buffer_copy(raw)
        return key.value if isinstance(key, C._SimpleCData) else key

    def decode_value(self, raw):
        return self.value_type.from_buffer_copy(raw)

    def _key(self, key):
        if isinstance(key, int):
            return self.key_type(key)
        return (C.c_char * len(key)).from_buffer_copy(key) if isinstance(key, bytes) else key

    @property
    def map_id(self):
        """The kernel's id of the map (a recreated state has new ones)."""
        return bpfsys.obj_info(self.fd, bpfsys.BpfMapInfo).id

    # --- one entry --------------------------------------------------------------------

    def get(self, key):
        value = self.value_type()
        return value if bpfsys.lookup(self.fd, self._key(key), value) else None

    def put(self, key, value, flags=bpfsys.BPF_ANY):
        bpfsys.update(self.fd, self._key(key), value, flags)

    def delete(self, key):
        return bpfsys.delete(self.fd, self._key(key))

    def zero(self, key):
        self.put(key, self.value_type())

    # --- many entries -------------------------------------------------------------------

    def put_raw(self, keys, values, n, flags=bpfsys.BPF_ANY):
        """Write n packed keys and values (bytes) with bpf_map_update_batch (a few
        syscalls for 10^5 entries); one update at a time where the map type
        has no batch operations."""
        ksz, vsz = self.key_size, self.value_size
        for i in range(0, n, self.PUT_BATCH):
            cnt = min(self.PUT_BATCH, n - i)
            kchunk = keys[i * ksz:(i + cnt) * ksz]
            vchunk = values[i * vsz:(i + cnt) * vsz]
            done = 0
            if self._batch_ok:
                try:
                    done = bpfsys.update_batch(self.fd, kchunk, vchunk, cnt, flags)
                except NotImplementedError:
                    self._batch_ok = False
            for e in range(done, cnt):
                bpfsys.update(self.fd, (C.c_char * ksz).from_buffer_copy(kchunk, e * ksz),
                              (C.c_char * vsz).from_buffer_copy(vchunk, e * vsz), flags)

    def put_many(self, items, flags=bpfsys.BPF_ANY):
        items = list(items)
        encode = self.encode_value
        self.put_raw(self.encode_keys([k for k, _ in items]),
                     b"".join([encode(v) for _, v in items]), len(items), flags)

    def put_zeros(self, keys):
        """Zero the entries of many keys in a few syscalls."""
        keys = list(keys)
        self.put_raw(self.encode_keys(keys), bytes(self.value_size * len(keys)), len(keys))

    def zero_many(self, keys):
        self.put_zeros(keys)

    def keys(self):
        key, nxt = None, self.key_type()
        while bpfsys.next_key(self.fd, key, nxt):
            key = self.key_type.from_buffer_copy(nxt)
            yield key.value if isinstance(key, C._SimpleCData) else key
            nxt = self.key_type()

    def items(self):
        for key in self.keys():
            value = self.get(key)
            if value is not None:
                yield key, value

    def clear(self):
        for key in list(self.keys()):
            self.delete(key)

    def _raw_value(self, key):
        value = self.get(key)
        return None if value is None else bytes(value)

    def raw_chunks(self, limit=None):
        """Yield (keys, values, n) byte chunks of every entry (the first `limit`
        of an array) in a few syscalls: listing 10^5 entries one lookup at a
        time would take seconds."""
        ksz, vsz = self.key_size, self.value_size
        keys = C.create_string_buffer(ksz * self.BATCH)
        vals = C.create_string_buffer(vsz * self.BATCH)
        cursor, nxt = None, C.create_string_buffer(max(ksz, 8))
        left = limit
        try:
            while left is None or left > 0:
                want = self.BATCH if left is None else min(self.BATCH, left)
                n, more = bpfsys.lookup_batch(self.fd, cursor, nxt, keys, vals, want)
                if n:
                    yield keys.raw[:n * ksz], vals.raw[:n * vsz], n
                if not more:
                    return
                if left is not None:
                    left -= n
                cursor = cursor or C.create_string_buffer(max(ksz, 8))
                C.memmove(cursor, nxt, max(ksz, 8))
        except NotImplementedError:
            pairs = [(self.encode_key(k), self._raw_value(k)) for k in self.keys()]
            pairs = [(k, v) for k, v in pairs if v is not None]
            if pairs:
                yield (b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs),
                       len(pairs))

    def raw_items(self, limit=None):
        """[(key bytes, value bytes)] of every entry (see raw_chunks)."""
        ksz, vsz = self.key_size, self.value_size
        return [(kr[i * ksz:(i + 1) * ksz], vr[i * vsz:(i + 1) * vsz])
                for kr, vr, n in self.raw_chunks(limit) for i in range(n)]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PerCpuMap(Map):
    """A per-CPU array: get() returns one value per possible CPU; a value
    written is a list per CPU, or one value for every CPU."""

    ncpus = bpfsys.possible_cpus()

    def _stride(self):
        return (C.sizeof(self.value_type) + 7) & ~7

    def _value_size(self):
        return self._stride() * self.ncpus

    def encode_value(self, values):
        if isinstance(values, bytes):
            return values
        stride = self._stride()
        if not isinstance(values, (list, tuple)):
            return bytes(values).ljust(stride, b"\0") * self.ncpus
        return b"".join(bytes(v).ljust(stride, b"\0") for v in values)

    def decode_value(self, raw):
        stride = self._stride()
        return [self.value_type.from_buffer_copy(raw, i * stride) for i in range(self.ncpus)]

    def _raw_value(self, key):
        buf = C.create_string_buffer(self.value_size)
        return buf.raw if bpfsys.lookup(self.fd, self._key(key), buf) else None

    def get(self, key):
        raw = self._raw_value(key)
        return None if raw is None else self.decode_value(raw)

    def put(self, key, values, flags=bpfsys.BPF_ANY):
        raw = self.encode_value(values)
        bpfsys.update(self.fd, self._key(key), C.create_string_buffer(raw, len(raw)), flags)

    def sum(self, key):
        """Add up the per-CPU values of a structure of integer fields."""
        values = self.get(key) or []
        if issubclass(self.value_type, C._SimpleCData):
            return sum(v.value for v in values)
        total = self.value_type()
        for v in values:
            for field, _ in self.value_type._fields_:
                setattr(total, field, getattr(total, field) + getattr(v, field))
        return total


class CounterMap(PerCpuMap):
    """The global counters: the data path leaves XDPLB_CNT_RX at 0 (every
    frame ends in exactly one verdict counter), so its sum is derived."""

    def sum(self, key):
        if key == XDPLB_CNT_RX:
            return sum(super(CounterMap, self).sum(COUNTERS.index(v)) for v in VERDICTS)
        return super().sum(key)


class ConnTable:
    """The connection table as one: conns (LRU: new connections, templates)
    and conns_assured (established connections, never evicted; see
    bpf/xdplb.h). A key lives in one of them; for an instant during a move
    it is in both, and the assured entry is the one the data path uses."""

    def __init__(self, lru, assured):
        self.lru, self.assured = lru, assured

    def get(self, key):
        value = self.assured.get(key)
        return value if value is not None else self.lru.get(key)

    def is_assured(self, key):
        return self.assured.get(key) is not None

    def put(self, key, value):
        """Rewrite key where it lives; a new key goes to the LRU, as the data
        path inserts it."""
        (self.assured if self.is_assured(key) else self.lru).put(key, value)

    def delete(self, key):
        found = self.assured.delete(key)
        return self.lru.delete(key) or found

    def raw_items(self):
        """[(key bytes, value bytes)] of every connection, assured first."""
        items = self.assured.raw_items()
        seen = {k for k, _ in items}
        return items + [(k, v) for k, v in self.lru.raw_items() if k not in seen]

    def keys(self):
        return [self.lru.key_type.from_buffer_copy(k) for k, _ in self.raw_items()]

    def clear(self):
        self.assured.clear()
        self.lru.clear()


# name -> (map class, key type, value type); the names are those in bpf/maps.h.
MAPS = {
    "services": (Map, SvcKey, SvcEntry),
    "dests": (Map, C.c_uint32, DestEntry),
    "sched_ring": (Map, RingKey, C.c_uint32),
    "sched_pos": (Map, C.c_uint32, SchedPos),
    "conns": (Map, ConnKey, Conn),
    "conns_assured": (Map, ConnKey, Conn),
    "svc_stats": (PerCpuMap, C.c_uint32, IpVsStats),
    "dest_stats": (PerCpuMap, C.c_uint32, IpVsStats),
    "counters": (CounterMap, C.c_uint32, C.c_uint64),
    "tx_ports": (Map, C.c_uint32, C.c_uint32),
    "dest_conns": (Map, C.c_uint32, DestConns),
    "svc_dests": (Map, C.c_uint32, SvcDests),
    "timeouts": (Map, C.c_uint32, C.c_uint32),
    "tun_src": (Map, C.c_uint32, C.c_uint32),
    "sysctl": (Map, C.c_uint32, C.c_uint32),
    "alloc": (Map, C.c_uint32, Alloc),
    "layout": (Map, C.c_uint32, C.c_uint32),
    "lblc": (Map, LblcKey, LblcEnt),
    "rs_table": (Map, RsKey, RsSvcs),
    "rs_filter": (Map, C.c_uint32, C.c_uint64),
    "frags": (Map, FragKey, FragRec),
    "services6": (Map, SvcKey6, SvcEntry),
    "conns6": (Map, ConnKey6, Conn6),
    "conns6_assured": (Map, ConnKey6, Conn6),
    "rs_table6": (Map, RsKey6, RsSvcs6),
    "tun_src6": (Map, C.c_uint32, TunSrc6),
    "laddrs": (Map, C.c_uint32, LaddrSet),
    "fnat_out": (Map, ConnKey, ConnKey),
    "fnat_out6": (Map, ConnKey6, ConnKey6),
}


def open_map(folder, name, readonly=False):
    """The pinned map `name` of a state folder, its key and value sizes checked
    against the mirrors (LayoutError); readonly opens it with BPF_F_RDONLY, so
    the kernel refuses any write through it."""
    cls, key_type, value_type = MAPS[name]
    fd = bpfsys.obj_get(os.path.join(folder, name), readonly=readonly)
    try:
        info = bpfsys.obj_info(fd, bpfsys.BpfMapInfo)
        want = (C.sizeof(key_type), C.sizeof(value_type))
        if (info.key_size, info.value_size) != want:
            raise LayoutError(f"map {name} has {info.key_size}-byte keys and {info.value_size}-"
                              f"byte values where this xdplb has {want[0]} and {want[1]}")
    except BaseException:
        os.close(fd)
        raise
    return cls(fd, key_type, value_type, name, info.max_entries)
