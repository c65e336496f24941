"""A redo journal for the control plane's configuration writes.

A command that changes the configuration (xdplb/config.py's operations:
services, destinations, schedules, counters zeroed, timeouts, -R) writes
several maps one syscall at a time; a process killed in the middle would
leave, say, a ring switched to destinations that are not there yet. So
every such command runs as a transaction (transaction() below):

1. under the state lock, its map writes go through a Transaction, a view of
   the state's maps that only records them (and reads them back:
   read-your-writes); the state's own maps are left as they are;
2. at commit the recorded writes are serialised to the journal,
   /run/xdplb/<state>.journal (mode 0600; written under a temporary name,
   then renamed: the journal exists complete or not at all), with a header
   naming the state (the boot id, and the kernel ids of the services map and
   of every map written: a recreated folder has new ones) and a CRC-32 of
   its body. It is not fsynced: it has to outlive its process, not the
   kernel (the page cache keeps it), and the state it describes lives in
   kernel memory and is gone after a reboot anyway, as is a journal of an
   earlier boot (its boot id differs);
3. the writes are applied in their order (consecutive puts to one map as one
   batch), and the journal is removed.

Whoever takes the lock next (every writer, the connection sweep, and every
Control.open, so listings too) first redoes a journal it finds: puts and
deletes of fixed keys and values are idempotent, so redoing a journal that
was partly or even wholly applied gives the same maps. A journal that does
not check out (no rename happened, wrong checksum, or written for an earlier
state whose folder has since been recreated) was never applied to this state
and is discarded. A journal is reported on stderr when it is completed or
discarded.

The data path also writes some maps a journal can hold: sched_pos (one
atomic add per new connection), dest_conns (live connection counts), the
per-CPU stats and the lblc/lblcr cache. Redoing writes to them is harmless:
a command only writes them for the slots it creates, removes or zeroes (and
dest_conns for a destination it edits), and the data path reaches a new
slot only once the command's services/dests entries are there, so a redo
that finds the command applied and traffic since can only
- put a new service's ring position back to 0: its ring starts over, so
  its first few picks are made again (what a kernel scheduler does after a
  restart);
- zero again the counters of a new, removed or -Z'd slot: the packets
  counted between the crash and the redo are lost, as if -Z came later;
- write again a new or edited destination's dest_conns with the counts the
  command saw: the next sweep (every listing, `xdplb daemon`) recomputes
  them from the connection table, as it does after LRU evictions;
- delete again lblc cache entries -C deleted: the cache fills again.
Everything else a redo writes (services, dests, rings, svc_dests, timeouts,
sysctl, alloc) only the control plane writes, so a second write of the same
bytes changes nothing. Control.sweep() itself is not journaled: it deletes expired
connection entries and reconciles counts, which the next sweep does again.

Fault points for tests: xdplb/fault.py ("write", "journal").
"""
import contextlib
import ctypes as C
import os
import struct
import sys
import zlib

from . import bpfsys, fault, maps
from . import state as statemod

MAGIC = b"XDPLBJ2\n"
PUT, ZERO, DEL = 1, 2, 3
# magic, boot id, id of the services map (names the state), writer pid, body
# length, CRC-32 of the body
_HEAD = struct.Struct("<8s16sIIQI")
# kind, flags, map name length, map id, entries, key size, value size
_OP = struct.Struct("<BBHIIII")
BATCH = 65536


class JournalError(Exception):
    """The journal is incomplete, corrupt or not for this state."""


def report(msg):
    """Where recovery says what it did: stderr, as the command's own messages."""
    try:
        sys.stderr.write(f"xdplb: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Op:
    __slots__ = ("kind", "name", "flags", "ksz", "vsz", "keys", "vals", "n")

    def __init__(self, kind, name, flags, ksz, vsz):
        self.kind, self.name, self.flags, self.ksz, self.vsz = kind, name, flags, ksz, vsz
        self.keys, self.vals, self.n = bytearray(), bytearray(), 0


class Txn:
    """The writes of one transaction, in order."""

    def __init__(self):
        self.ops = []
        self.names = set()  # maps written
        self._views = {}    # map name -> [overlay {key bytes: value bytes | None}, op, entry]

    def add(self, kind, m, keys, vals, n):
        if not n:
            return
        last = self.ops[-1] if self.ops else None
        if last is None or last.kind != kind or last.name != m.name:
            last = Op(kind, m.name, bpfsys.BPF_ANY, m.key_size, m.value_size)
            self.ops.append(last)
            self.names.add(m.name)
        last.keys += keys
        if kind == PUT:
            last.vals += vals
        last.n += n

    def overlay(self, name):
        """{key bytes: value bytes, or None if deleted} of the writes to one map,
        brought up to date lazily (most maps are never read back)."""
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = [{}, 0, 0]
        ov, i, j = view
        for k in range(i, len(self.ops)):
            op = self.ops[k]
            start = j if k == i else 0
            if op.name == name:
                ksz, vsz = op.ksz, op.vsz
                zero = bytes(vsz) if op.kind == ZERO else None
                for e in range(start, op.n):
                    kb = bytes(op.keys[e * ksz:(e + 1) * ksz])
                    if op.kind == PUT:
                        ov[kb] = bytes(op.vals[e * vsz:(e + 1) * vsz])
                    else:
                        ov[kb] = zero
        if self.ops:
            view[1], view[2] = len(self.ops) - 1, self.ops[-1].n
        return ov

    def touched(self, name):
        return name in self.names


class TxnMap:
    """One map of the state as a transaction sees it: writes are recorded (the
    lock excludes other writers and a redo must be able to write an entry
    again, so every put is BPF_ANY), reads see them."""

    def __init__(self, m, txn):
        self.map, self._txn = m, txn
        self.name, self.key_type, self.value_type = m.name, m.key_type, m.value_type
        self.key_size, self.value_size = m.key_size, m.value_size
        self.encode_key, self.encode_keys = m.encode_key, m.encode_keys
        self.encode_value = m.encode_value
        self.decode_key, self.decode_value = m.decode_key, m.decode_value

    @property
    def max_entries(self):
        return self.map.max_entries

    # writes

    def put(self, key, value, flags=bpfsys.BPF_ANY):
        self._txn.add(PUT, self.map, self.encode_key(key), self.encode_value(value), 1)

    def put_raw(self, keys, values, n, flags=bpfsys.BPF_ANY):
        self._txn.add(PUT, self.map, keys, values, n)

    def put_many(self, items, flags=bpfsys.BPF_ANY):
        items = list(items)
        encode = self.encode_value
        self.put_raw(self.encode_keys([k for k, _ in items]),
                     b"".join([encode(v) for _, v in items]), len(items))

    def put_zeros(self, keys):
        keys = list(keys)
        self._txn.add(ZERO, self.map, self.encode_keys(keys), None, len(keys))

    def zero(self, key):
        self.put_zeros([key])

    def zero_many(self, keys):
        self.put_zeros(keys)

    def delete(self, key):
        self._txn.add(DEL, self.map, self.encode_key(key), None, 1)
        return True

    def clear(self):
        for key in list(self.keys()):
            self.delete(key)

    # reads

    def get(self, key):
        if self._txn.touched(self.name):
            ov = self._txn.overlay(self.name)
            kb = self.encode_key(key)
            if kb in ov:
                vb = ov[kb]
                return None if vb is None else self.decode_value(vb)
        return self.map.get(key)

    def keys(self):
        if not self._txn.touched(self.name):
            yield from self.map.keys()
            return
        ov = self._txn.overlay(self.name)
        seen = set()
        for key in self.map.keys():
            kb = self.encode_key(key)
            seen.add(kb)
            if ov.get(kb, b"") is not None:
                yield key
        for kb, vb in ov.items():
            if kb not in seen and vb is not None:
                yield self.decode_key(kb)

    def items(self):
        for key in self.keys():
            value = self.get(key)
            if value is not None:
                yield key, value

    def raw_items(self, limit=None):
        ksz, vsz = self.key_size, self.value_size
        return [(kr[i * ksz:(i + 1) * ksz], vr[i * vsz:(i + 1) * vsz])
                for kr, vr, n in self.raw_chunks(limit) for i in range(n)]

    def raw_chunks(self, limit=None):
        if not self._txn.touched(self.name):
            yield from self.map.raw_chunks(limit)
            return
        ov = self._txn.overlay(self.name)
        merged = dict(self.map.raw_items(limit))
        for kb, vb in ov.items():
            if vb is None:
                merged.pop(kb, None)
            elif limit is None or int.from_bytes(kb, "little") < limit:
                merged[kb] = vb    # (limit is only used on arrays: u32 keys)
        if merged:
            yield b"".join(merged), b"".join(merged.values()), len(merged)


class Transaction:
    """The maps of a state inside one transaction (transaction() below): an
    attribute per map of maps.MAPS, each a TxnMap over the state's map. The
    state's own maps are left as they are."""

    def __init__(self, st):
        self.folder = st.folder
        self.txn = Txn()
        for name in maps.MAPS:
            setattr(self, name, TxnMap(getattr(st, name), self.txn))


# --- the journal file ---------------------------------------------------------------

def _boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return bytes.fromhex(f.read().strip().replace("-", ""))


def encode(st, ops):
    body = bytearray()
    ids = {}
    for op in ops:
        name = op.name.encode()
        if op.name not in ids:
            ids[op.name] = getattr(st, op.name).map_id
        body += _OP.pack(op.kind, op.flags, len(name), ids[op.name], op.n, op.ksz, op.vsz)
        body += name
        body += op.keys
        if op.kind == PUT:
            body += op.vals
    return _HEAD.pack(MAGIC, _boot_id(), st.services.map_id, os.getpid(), len(body),
                      zlib.crc32(body)) + body


def decode(st, data):
    """(writer pid, [Op]) of a journal for this state; JournalError otherwise."""
    if len(data) < _HEAD.size:
        raise JournalError("incomplete")
    magic, boot, svc_id, pid, blen, crc = _HEAD.unpack_from(data)
    body = data[_HEAD.size:]
    if magic != MAGIC or blen != len(body) or zlib.crc32(body) != crc:
        raise JournalError("incomplete or corrupt")
    if boot != _boot_id() or svc_id != st.services.map_id:
        raise JournalError("written for an earlier state")
    ops, off, ids = [], 0, {}
    while off < len(body):
        kind, flags, nlen, map_id, n, ksz, vsz = _OP.unpack_from(body, off)
        off += _OP.size
        name = bytes(body[off:off + nlen]).decode()
        off += nlen
        m = getattr(st, name, None) if name in maps.MAPS else None
        if m is not None and name not in ids:
            ids[name] = m.map_id
        if m is None or kind not in (PUT, ZERO, DEL) or ids[name] != map_id or \
                ksz != m.key_size or vsz != m.value_size:
            raise JournalError(f"written for an earlier state (map {name})")
        op = Op(kind, name, flags, ksz, vsz)
        op.n = n
        op.keys = body[off:off + n * ksz]
        off += n * ksz
        if kind == PUT:
            op.vals = body[off:off + n * vsz]
            off += n * vsz
        ops.append(op)
    if off != len(body):
        raise JournalError("corrupt")
    return pid, ops


def apply(st, ops):
    """Write the ops to the maps, in order; returns the write points passed
    (one per batch of puts or zeros, one per delete)."""
    calls = 0
    for op in ops:
        m = getattr(st, op.name)
        ksz, vsz = op.ksz, op.vsz
        keys = bytes(op.keys)
        if op.kind == DEL:
            for e in range(op.n):
                fault.point("write")
                m.delete(keys[e * ksz:(e + 1) * ksz])
                calls += 1
            continue
        vals = bytes(op.vals) if op.kind == PUT else None
        for i in range(0, op.n, BATCH):
            cnt = min(BATCH, op.n - i)
            fault.point("write")
            calls += 1
            m.put_raw(keys[i * ksz:(i + cnt) * ksz],
                      vals[i * vsz:(i + cnt) * vsz] if vals is not None else bytes(cnt * vsz),
                      cnt, op.flags)
    return calls


def commit(st, txn):
    """Journal, apply, forget (the caller holds the lock)."""
    if not txn.ops:
        return
    jpath = statemod.journal_path(st.folder)
    data = encode(st, txn.ops)
    tmp = f"{jpath}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    fault.point("journal")
    os.rename(tmp, jpath)
    # An error here (a map full, ENOMEM) leaves the journal: the next lock
    # holder tries once more, and drops it (saying so) if that fails too.
    apply(st, txn.ops)
    fault.point("write")
    os.unlink(jpath)


def recover(st):
    """Redo (or discard) what an interrupted writer left; the caller holds the
    lock. Returns 'completed', 'discarded', 'failed' or None."""
    jpath = statemod.journal_path(st.folder)
    for tmp in statemod.leftovers(jpath, ".tmp"):
        with contextlib.suppress(FileNotFoundError):   # never committed: nothing applied
            os.unlink(tmp)
    try:
        with open(jpath, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        pid, ops = decode(st, data)
    except (JournalError, struct.error, UnicodeDecodeError) as e:
        os.unlink(jpath)
        report(f"discarded the journal of an interrupted change ({e}): nothing of it "
               f"had been applied to this state")
        return "discarded"
    try:
        calls = apply(st, ops)
    except OSError as e:
        os.unlink(jpath)
        report(f"could not complete the change interrupted in process {pid} ({e}); its "
               f"journal is dropped: check the table (xdplbadm -Ln)")
        return "failed"
    os.unlink(jpath)
    report(f"completed a configuration change interrupted in process {pid} "
           f"({sum(op.n for op in ops)} map entries in {calls} writes redone)")
    return "completed"


def pending(st):
    """A journal (or the temporary file of one never committed) is there."""
    jpath = statemod.journal_path(st.folder)
    return os.path.exists(jpath) or bool(statemod.leftovers(jpath, ".tmp"))


@contextlib.contextmanager
def locked(st):
    """The state lock, after redoing an interrupted writer's journal."""
    with statemod.locked(st.folder):
        recover(st)
        yield


@contextlib.contextmanager
def transaction(st):
    """Lock, hand the block a Transaction whose writes are recorded, then
    journal and apply them (nothing is written if the block raises)."""
    with locked(st):
        tx = Transaction(st)
        yield tx
        commit(st, tx.txn)


def settle(st):
    """On opening a state: if a journal is there, take the lock (waiting for a
    live writer) and redo it. Without the lock (it cannot be created), say the
    change is pending: the next writer completes it (so does a state opened
    read-only)."""
    if not pending(st):
        return
    if getattr(st, "readonly", False):
        report("a configuration change was interrupted and is pending; the next "
               "xdplbadm command that writes completes it")
        return
    try:
        with locked(st):
            pass
    except OSError as e:
        report(f"a configuration change was interrupted and is pending ({e}); the next "
               f"xdplbadm command that writes completes it")
