"""Typed access to xdplb's pinned BPF maps.

Each map is opened by its pin in the state folder (xdplb/state.py) and read
and written with the ctypes mirrors of bpf/xdplb.h (xdplb/structs.py).
"""
import ctypes as C
import os

from . import bpfsys
from .structs import (COUNTERS, VERDICTS, Conn, ConnKey, Dest, DestConns, IpVsStats,
                      LblcEnt, LblcKey, RingKey, SchedPos, Service, SvcDests, SvcKey)

XDPLB_CNT_RX = COUNTERS.index("rx")


class Map:
    """A pinned map with ctypes keys and values. Array keys are plain ints."""

    def __init__(self, fd, key_type, value_type, name):
        self.fd, self.key_type, self.value_type, self.name = fd, key_type, value_type, name

    def _key(self, key):
        return self.key_type(key) if isinstance(key, int) else key

    @property
    def max_entries(self):
        """The size the map was created with."""
        return bpfsys.obj_info(self.fd, bpfsys.BpfMapInfo).max_entries

    def get(self, key):
        value = self.value_type()
        return value if bpfsys.lookup(self.fd, self._key(key), value) else None

    def put(self, key, value, flags=bpfsys.BPF_ANY):
        bpfsys.update(self.fd, self._key(key), value, flags)

    def delete(self, key):
        return bpfsys.delete(self.fd, self._key(key))

    def _value_bytes(self, value):
        return bytes(value)

    def put_many(self, items, flags=bpfsys.BPF_ANY):
        """Write many (key, value) pairs with bpf_map_update_batch (a few
        syscalls for 10^5 entries); one update at a time where the map type
        has no batch operations."""
        items = list(items)
        if not items:
            return
        if not self._batch_ok:
            for k, v in items:
                self.put(k, v, flags)
            return
        for i in range(0, len(items), self.PUT_BATCH):
            chunk = items[i:i + self.PUT_BATCH]
            keys = b"".join(bytes(self._key(k)) for k, _ in chunk)
            vals = b"".join(self._value_bytes(v) for _, v in chunk)
            try:
                done = bpfsys.update_batch(self.fd, keys, vals, len(chunk), flags)
            except NotImplementedError:
                self._batch_ok = False
                for k, v in items[i:]:
                    self.put(k, v, flags)
                return
            if done != len(chunk):
                for k, v in chunk[done:]:
                    self.put(k, v, flags)

    _batch_ok = True
    PUT_BATCH = 65536

    def put_zeros(self, keys):
        """Zero the entries of many u32 keys (array maps) in a few syscalls."""
        import array
        keys = list(keys)
        if not self._batch_ok or not keys:
            for k in keys:
                self.put(k, self.value_type() if not isinstance(self, PerCpuMap) else
                         self.value_type())
            return
        vsz = self._value_size()
        for i in range(0, len(keys), self.PUT_BATCH):
            chunk = keys[i:i + self.PUT_BATCH]
            try:
                done = bpfsys.update_batch(self.fd, array.array("I", chunk).tobytes(),
                                           bytes(vsz * len(chunk)), len(chunk))
            except NotImplementedError:
                self._batch_ok = False
                return self.put_zeros(keys[i:])
            for k in chunk[done:]:
                self.put(k, self.value_type())

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

    BATCH = 8192

    def _value_size(self):
        return C.sizeof(self.value_type)

    def _raw_value(self, key):
        value = self.get(key)
        return None if value is None else bytes(value)

    def raw_chunks(self, limit=None):
        """Yield (keys, values, n) byte chunks of every entry (the first `limit`
        of an array) in a few syscalls: listing 10^5 entries one lookup at a
        time would take seconds."""
        ksz, vsz = C.sizeof(self.key_type), self._value_size()
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
            pairs = [(bytes(self._key(k)), self._raw_value(k)) for k in self.keys()]
            pairs = [(k, v) for k, v in pairs if v is not None]
            if pairs:
                yield (b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs),
                       len(pairs))

    def raw_items(self, limit=None):
        """[(key bytes, value bytes)] of every entry (see raw_chunks)."""
        ksz, vsz = C.sizeof(self.key_type), self._value_size()
        return [(kr[i * ksz:(i + 1) * ksz], vr[i * vsz:(i + 1) * vsz])
                for kr, vr, n in self.raw_chunks(limit) for i in range(n)]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PerCpuMap(Map):
    """A per-CPU array: get() returns one value per possible CPU."""

    ncpus = bpfsys.possible_cpus()

    def _stride(self):
        return (C.sizeof(self.value_type) + 7) & ~7

    def _value_size(self):
        return self._stride() * self.ncpus

    def _raw_value(self, key):
        buf = C.create_string_buffer(self._value_size())
        return buf.raw if bpfsys.lookup(self.fd, self._key(key), buf) else None

    def get(self, key):
        buf = C.create_string_buffer(self._stride() * self.ncpus)
        if not bpfsys.lookup(self.fd, self._key(key), buf):
            return None
        return [self.value_type.from_buffer_copy(buf, i * self._stride())
                for i in range(self.ncpus)]

    def put(self, key, values, flags=bpfsys.BPF_ANY):
        """Store values (a list per CPU, or one value written to every CPU)."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.ncpus
        buf = C.create_string_buffer(self._stride() * self.ncpus)
        for i, v in enumerate(values):
            C.memmove(C.addressof(buf) + i * self._stride(), C.addressof(v), C.sizeof(v))
        bpfsys.update(self.fd, self._key(key), buf, flags)

    def _value_bytes(self, values):
        stride = self._stride()
        if not isinstance(values, (list, tuple)):
            return bytes(values).ljust(stride, b"\0") * self.ncpus
        return b"".join(bytes(v).ljust(stride, b"\0") for v in values)

    def zero_many(self, keys):
        self.put_zeros(keys)

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

    def zero(self, key):
        self.put(key, self.value_type())


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
    "services": (Map, SvcKey, Service),
    "dests": (Map, C.c_uint32, Dest),
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
    "lblc": (Map, LblcKey, LblcEnt),
}


def open_map(folder, name, readonly=False):
    """The pinned map `name` of a state folder; readonly opens it with
    BPF_F_RDONLY, so the kernel refuses any write through it."""
    cls, key_type, value_type = MAPS[name]
    return cls(bpfsys.obj_get(os.path.join(folder, name), readonly=readonly),
               key_type, value_type, name)
