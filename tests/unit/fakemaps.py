"""A fake of xdplb's pinned maps, for tests without root, bcc or a kernel.

FakeMap, FakePerCpuMap and FakeCounterMap subclass xdplb/maps.py's Map,
PerCpuMap and CounterMap and replace only what goes through a file
descriptor (lookups, updates, deletes, iteration, batches) with a dict of
key bytes -> value bytes. Everything the real classes compute from those
(items, clear, raw_items, sum, zero, per-CPU values...) is theirs, unchanged.

The kernel's answers are kept, as bpfsys raises them (OSError with the same
errno and text):
- hash, lru_hash: BPF_NOEXIST on a key present -> EEXIST, BPF_EXIST on a key
  absent -> ENOENT, a new key in a full hash -> E2BIG; a full lru_hash evicts
  its oldest entry instead (the kernel's LRU is approximate; only "it
  evicts" is promised); deleting an absent key answers False (ENOENT);
- array, percpu_array: every key 0..max_entries-1 exists (zero until
  written); a key past the end -> E2BIG, BPF_NOEXIST -> EEXIST, delete -> EINVAL;
- devmap (tx_ports): array keys whose slots are empty until written (value 0
  empties one again); BPF_NOEXIST -> EEXIST, delete of a slot in range is
  always True; no batch operations: put_many and put_zeros fail with
  ENOTSUPP (bpfsys.update_batch only falls back to single updates when the
  kernel reports no entry done, and for ENOTSUPP it reports nothing). The
  fake has no devices, so it takes any ifindex (the kernel: EINVAL for one
  that does not exist);
- flags other than BPF_ANY / BPF_NOEXIST / BPF_EXIST -> EINVAL; batches
  (put_many, put_zeros) take BPF_ANY only (EINVAL before writing anything);
  a read-only state's maps refuse every write with EPERM (BPF_F_RDONLY).
A value of the wrong size (a per-CPU list of fewer than ncpus values) is a
ValueError: the real maps would zero-fill or misalign it.

Kinds and sizes come from the map declarations in bpf/ (BPF_TABLE,
BPF_F_TABLE, BPF_DEVMAP), sized with xdplb/structs.py's constants, so a map
added to maps.MAPS and bpf/maps.h is picked up. tests/test_fakemaps.py (root
tier) runs the same operations on the real pinned maps and on these fakes
and compares every answer and every byte: that is what keeps this file honest.
"""
import array
import errno
import math
import os
import re

from xdplb import bpfsys, loader, maps, structs

BATCH_KINDS = ("hash", "lru_hash", "array", "percpu_array")   # with batch updates
ARRAY_KINDS = ("array", "percpu_array", "devmap")             # keys 0..max_entries-1
DENSE_KINDS = ("array", "percpu_array")                       # every key holds a value


def _fail(err, what):
    raise OSError(err, f"{what}: {os.strerror(err)}")


class FakeMap(maps.Map):
    """maps.Map over a dict; kind is the BPF map type ("hash", "array", ...)."""

    _ids = iter(range(1, 1 << 32))   # map ids, never reused (as the kernel's)

    def __init__(self, kind, max_entries, key_type, value_type, name, readonly=False):
        super().__init__(-1, key_type, value_type, name, max_entries)
        self.kind, self._max, self.readonly = kind, max_entries, readonly
        self._entries = {}   # key bytes -> value bytes (arrays: the written slots)
        self._id = next(self._ids)

    @property
    def map_id(self):
        return self._id

    # --- bytes <-> values (maps.Map's own encoding, sizes checked) ------------------

    def encode_value(self, value):
        raw = super().encode_value(value)
        if len(raw) != self.value_size:
            raise ValueError(f"{self.name}: a value of {len(raw)} bytes, not {self.value_size}")
        return raw

    def _index(self, kb):
        return int.from_bytes(kb, "little")

    # --- the kernel's answers -----------------------------------------------------------

    def _lookup(self, kb):
        if self.kind in DENSE_KINDS:
            if self._index(kb) >= self._max:
                return None
            return self._entries.get(kb, bytes(self.value_size))
        return self._entries.get(kb)

    def _update(self, kb, vb, flags, what):
        if self.readonly:
            _fail(errno.EPERM, what)
        if flags not in (bpfsys.BPF_ANY, bpfsys.BPF_NOEXIST, bpfsys.BPF_EXIST):
            _fail(errno.EINVAL, what)
        if self.kind in ARRAY_KINDS:
            if self._index(kb) >= self._max:
                _fail(errno.E2BIG, what)
            if flags == bpfsys.BPF_NOEXIST:
                _fail(errno.EEXIST, what)
            if self.kind == "devmap" and not any(vb):
                self._entries.pop(kb, None)
            else:
                self._entries[kb] = vb
            return
        present = kb in self._entries
        if present and flags == bpfsys.BPF_NOEXIST:
            _fail(errno.EEXIST, what)
        if not present and flags == bpfsys.BPF_EXIST:
            _fail(errno.ENOENT, what)
        if not present and len(self._entries) >= self._max:
            if self.kind != "lru_hash":
                _fail(errno.E2BIG, what)
            del self._entries[next(iter(self._entries))]
        self._entries.pop(kb, None)    # an update makes the entry the newest
        self._entries[kb] = vb

    # --- maps.Map's file-descriptor operations ------------------------------------

    def get(self, key):
        raw = self._lookup(self.encode_key(key))
        return None if raw is None else self.decode_value(raw)

    def put(self, key, value, flags=bpfsys.BPF_ANY):
        self._update(self.encode_key(key), self.encode_value(value), flags, "map update")

    def delete(self, key):
        kb = self.encode_key(key)
        if self.readonly:
            _fail(errno.EPERM, "map delete")
        if self.kind in DENSE_KINDS:
            _fail(errno.EINVAL, "map delete")
        if self.kind == "devmap":
            if self._index(kb) >= self._max:
                _fail(errno.EINVAL, "map delete")
            self._entries.pop(kb, None)
            return True
        return self._entries.pop(kb, None) is not None

    def put_raw(self, keys, values, n, flags=bpfsys.BPF_ANY):
        """bpf_map_update_batch of n packed keys and values, in order: the
        entries before a refused one stay written. The kernel takes no
        BPF_NOEXIST / BPF_EXIST in a batch (EINVAL, nothing written) and a
        devmap has no batch operations (ENOTSUPP, which bpfsys raises)."""
        if not n:
            return
        what = "map batch update"
        if self.readonly:
            _fail(errno.EPERM, what)
        if self.kind not in BATCH_KINDS:
            _fail(bpfsys.ENOTSUPP, what)
        if flags != bpfsys.BPF_ANY:
            _fail(errno.EINVAL, what)
        ksz, vsz = self.key_size, self.value_size
        for e in range(n):
            self._update(bytes(keys[e * ksz:(e + 1) * ksz]),
                         bytes(values[e * vsz:(e + 1) * vsz]), flags, what)

    def keys(self):
        if self.kind in ARRAY_KINDS:
            yield from range(self._max)
            return
        for kb in list(self._entries):
            yield self.decode_key(kb)

    def _raw_entries(self, limit):
        """(packed keys, packed values, n) of every entry, in iteration order."""
        if self.kind not in DENSE_KINDS:
            pairs = list(self._entries.items())
            if self.kind == "devmap":
                pairs.sort(key=lambda kv: self._index(kv[0]))
            pairs = pairs[:limit]
            return b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs), len(pairs)
        n = self._max if limit is None else min(limit, self._max)
        vals = bytearray(self.value_size * n)
        for kb, vb in self._entries.items():
            i = self._index(kb)
            if i < n:
                vals[i * self.value_size:(i + 1) * self.value_size] = vb
        return array.array("I", range(n)).tobytes(), bytes(vals), n

    def raw_chunks(self, limit=None):
        keys, vals, n = self._raw_entries(limit)
        ksz, vsz = self.key_size, self.value_size
        for i in range(0, n, self.BATCH):
            cnt = min(self.BATCH, n - i)
            yield keys[i * ksz:(i + cnt) * ksz], vals[i * vsz:(i + cnt) * vsz], cnt

    def close(self):
        """Nothing to close (the real one closes its fd)."""


class FakePerCpuMap(FakeMap, maps.PerCpuMap):
    """maps.PerCpuMap over a dict: one value per possible CPU (ncpus)."""

    def __init__(self, *args, ncpus=None, **kw):
        if ncpus is not None:
            self.ncpus = ncpus
        super().__init__(*args, **kw)


class FakeCounterMap(FakePerCpuMap, maps.CounterMap):
    """maps.CounterMap over a dict (rx is the sum of the verdicts)."""


FAKES = {maps.Map: FakeMap, maps.PerCpuMap: FakePerCpuMap, maps.CounterMap: FakeCounterMap}

_DECL = re.compile(r'BPF_(?:F_)?TABLE\(\s*"(\w+)"\s*,[^,]+,[^,]+,\s*(\w+)\s*,\s*([^,)]+)'
                   r'|BPF_DEVMAP\(\s*(\w+)\s*,\s*([^)]+)\)')
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\d+)\s*$", re.M)


def _size(expr, defines):
    """The value of a size such as XDPLB_MAX_PORTS * 16: a product of
    numbers and constants of xdplb/structs.py or #defines of bpf/."""
    def value(term):
        term = term.strip()
        v = int(term) if term.isdigit() else getattr(structs, term, defines.get(term))
        if not isinstance(v, int):
            raise ValueError(f"map size {expr!r}: {term!r} is neither a number nor a "
                             f"constant of xdplb/structs.py or a #define of bpf/")
        return v
    return math.prod(value(term) for term in expr.split("*"))


def map_declarations(bpf_dir=loader.BPF_DIR):
    """{name: (kind, max_entries)} of every map of maps.MAPS, from its
    declaration in bpf_dir's sources."""
    texts = []
    for root, _, files in os.walk(bpf_dir):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                with open(os.path.join(root, f)) as fh:
                    texts.append(fh.read())
    text = "\n".join(texts)
    defines = {k: int(v) for k, v in _DEFINE.findall(text)}
    found = {}
    for kind, name, size, dev_name, dev_size in _DECL.findall(text):
        if dev_name:
            kind, name, size = "devmap", dev_name, dev_size
        if name in maps.MAPS:
            found[name] = (kind, _size(size, defines))
    missing = set(maps.MAPS) - set(found)
    if missing:
        raise LookupError(f"no declaration in {bpf_dir} of the maps {sorted(missing)}")
    return found


class FakeState:
    """What Control, the journal and the sweep use of state.State: one fake
    per map of maps.MAPS (same attribute names), conn_table(6), folder,
    readonly, prog_fd (-1: there is no program) and close().

    sizes overrides max_entries by map name, as a state compiled with -D
    overrides differs from bpf/xdplb.h's defaults; ncpus is the number of
    possible CPUs of the per-CPU maps (this machine's by default)."""

    def __init__(self, folder, readonly=False, sizes=None, ncpus=None):
        self.folder, self.readonly, self.prog_fd = folder, readonly, -1
        decls = map_declarations()
        sizes = sizes or {}
        for name, (cls, key_type, value_type) in maps.MAPS.items():
            kind, max_entries = decls[name]
            fake = FAKES[cls]
            kw = {"ncpus": ncpus} if issubclass(fake, FakePerCpuMap) else {}
            setattr(self, name, fake(kind, sizes.get(name, max_entries), key_type, value_type,
                                     name, readonly=readonly, **kw))
        self.conn_table = maps.ConnTable(self.conns, self.conns_assured)
        self.conn_table6 = maps.ConnTable(self.conns6, self.conns6_assured)

    def close(self):
        """Nothing to close (State.close closes the fds)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

