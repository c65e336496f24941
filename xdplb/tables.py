"""An in-memory copy of the configuration maps, and the net writes that change it.

The planner (xdplb/config.py) reads the tables through a Tables object and
returns each operation's writes as a Plan; Tables.apply(plan) changes the
copy and adds the plan to the delta: the net writes of every plan applied so
far (one command, or every line of -R), which Tables.write(tx) hands to a
transaction (xdplb/journal.py). The copy is read lazily: one `xdplbadm -a`
reads its service, that service's destinations (the list svc_dests starts
and DestEntry.next links), the alloc bookkeeping and a free slot or two, and
nothing else. Tables(None) is an empty copy of its own, without maps.

The delta is written in the order the data path can follow at every step,
"make before break", per segment:

1. MAKE: what no live entry refers to yet, or what the data path reads field
   by field: new and edited destinations, counters zeroed, ring entries under
   a service's other generation, svc_dests, the settings and bookkeeping;
2. SWITCH: the services entries, one update per service: the data path moves
   to the new schedule (the other ring generation) at once;
3. BREAK: what nothing refers to any more: the old generation's ring entries,
   freed destination slots, a removed service's slot.

A key written in BREAK and then in MAKE by a later plan (-R: a slot freed by
-d and taken by a later -a) would be made before the break it depends on, so
a new segment starts there. A service whose schedule ends under the ring
generation it started in (switched an even number of times) is first
switched to the other one, so its live ring entries are never rewritten in
place. Merged or line by line, the maps end the same, byte for byte.
"""
import array
import ctypes as C

from .keys import b2a, dest_addr, family, key_tuple, svc_key, svc_map
from .structs import (XDPLB_AF_INET, XDPLB_AF_INET6, XDPLB_LIST_MAX, XDPLB_MAX_DESTS,
                      XDPLB_MAX_RING, XDPLB_MAX_SERVICES, XDPLB_MAX_SERVICES6, XDPLB_RING_GEN_BIT,
                      Alloc, DestEntry, SvcDests, SvcEntry, SvcKey, SvcKey6)

MAKE, SWITCH, BREAK = 0, 1, 2
PUT, ZERO, DEL, RAW = 0, 1, 2, 3   # RAW: packed keys and u32 values (ring entries)
# The order maps are written in within a phase: destinations before the rings
# and lists that name them.
MAP_ORDER = ("alloc", "sysctl", "timeouts", "dest_stats", "dest_conns", "rs_filter", "rs_table",
             "rs_table6", "laddrs", "dests", "svc_stats",
             "sched_pos", "svc_dests", "sched_ring", "services", "services6", "lblc")
RS_TABLES = ("rs_table", "rs_table6")

assert array.array("I").itemsize == 4   # ring keys and values are packed as u32


def copy(entry):
    return type(entry).from_buffer_copy(entry)


def svc_dests_value(dlist):
    """svc_dests' value for a destination list [(slot, weight)] in kernel order:
    the first XDPLB_LIST_MAX (the list schedulers refuse more), zero-terminated.
    (Built as the u32 words of struct svc_dests: n, pad, then slot/weight
    pairs; ctypes' nested fields cost 10 us a list.)"""
    words = array.array("I", bytes(C.sizeof(SvcDests)))
    head = dlist[:XDPLB_LIST_MAX]
    words[0] = len(head)
    words[2:2 + 2 * len(head)] = array.array("I", [x for sw in head for x in sw])
    return SvcDests.from_buffer_copy(words)


def ring_keys(slot, gen, n):
    """Packed RingKey bytes of entries 0..n-1 of a generation."""
    keys = array.array("I", bytes(8 * n))
    keys[0::2] = array.array("I", [slot]) * n
    keys[1::2] = array.array("I", range(gen, gen + n))
    return keys.tobytes()


class Plan:
    """The writes of one operation: plain map writes (phase, map, key, kind,
    value) and service changes (key, entry or None, new destination list or
    None, new schedule or None: svc_dests and the ring follow from them)."""

    __slots__ = ("writes", "svcs", "primed")

    def __init__(self):
        self.writes, self.svcs, self.primed = [], [], []

    def put(self, name, key, value, phase=MAKE):
        self.writes.append((phase, name, key, PUT, value))

    def zero(self, name, key, phase=MAKE):
        self.writes.append((phase, name, key, ZERO, None))

    def delete(self, name, key, phase=BREAK):
        self.writes.append((phase, name, key, DEL, None))

    def service(self, key, entry, dlist=None, ring=None):
        self.svcs.append((key, entry, dlist, ring))


def _ring_made(orig, entry, ring):
    """Ring entries a service's change writes in its segment's MAKE phase, and
    in the second round of a detour (the live generation again)."""
    if ring is None or entry is None:
        return 0, 0
    n = entry.ring_len
    again = orig is not None and orig.slot == entry.slot and orig.ring_gen == entry.ring_gen \
        and orig.ring_len and n
    return n, n if again else 0


class _SvcChange:
    __slots__ = ("orig", "entry", "dlist", "ring")

    def __init__(self, orig):
        self.orig, self.entry, self.dlist, self.ring = orig, orig, None, None

    def made(self):
        return _ring_made(self.orig, self.entry, self.ring)


class _Segment:
    def __init__(self):
        self.writes = {name: {} for name in MAP_ORDER}   # map -> {key: (phase, kind, value)}
        self.kinds = {name: set() for name in MAP_ORDER}  # map -> {phase * 4 + kind} it has
        self.broken = set()  # (map, key) written in BREAK
        self.shared = set()  # rs_table keys written in MAKE
        self.svcs = {}       # service key -> _SvcChange
        # sched_ring: live entries at the start, entries its MAKE writes (every new
        # ring), entries a detour's second round writes (while the first's live)
        self.ring0, self.made, self.again = None, 0, 0


class Tables:
    """The configuration tables as the operations planned so far leave them."""

    def __init__(self, maps=None):
        self.maps = maps
        if maps is None:
            self.max_services, self.max_dests = XDPLB_MAX_SERVICES, XDPLB_MAX_DESTS
            self.max_services6, self.max_ring = XDPLB_MAX_SERVICES6, XDPLB_MAX_RING
        else:   # the pinned maps' own sizes: a state compiled with -D overrides differs
            self.max_services = maps.services.max_entries
            self.max_services6 = maps.services6.max_entries
            self.max_dests = maps.dests.max_entries
            self.max_ring = maps.sched_ring.max_entries
        # Both families' services: their slots (svc_stats, sched_pos, svc_dests,
        # ...) and creation order are one space.
        self.svc = {}             # service key -> SvcEntry, None when absent
        self.all_svcs = False     # every service is in self.svc
        self._used_slots = self._next_slot = self._top_seq = None   # (with all_svcs)
        self._count = {XDPLB_AF_INET: 0, XDPLB_AF_INET6: 0}
        self.dest = {}            # slot -> DestEntry, None when free
        self.all_dests = False
        self.lists = {}           # service slot -> [(dest slot, weight)], newest first
        self._at = {}             # (service slot, addr bytes, port) -> dest slot
        self._pos = {}            # service slot -> sched_pos
        self._alloc = None
        self.segments = [_Segment()]

    # --- reads ----------------------------------------------------------------------

    def _get(self, name, key):
        return None if self.maps is None else getattr(self.maps, name).get(key)

    def current(self, name, key):
        """An entry as the delta leaves it (None when deleted or zeroed), else
        as the map has it."""
        for seg in reversed(self.segments):
            got = seg.writes[name].get(key)
            if got is not None:
                return got[2] if got[1] == PUT else None
        return self._get(name, key)

    def alloc(self):
        if self._alloc is None:
            self._alloc = self._get("alloc", 0) or Alloc()
        return self._alloc

    def pos(self, slot):
        """sched_pos of a service slot: new connections scheduled so far."""
        pos = self._pos.get(slot)
        if pos is None:
            p = self._get("sched_pos", slot)
            pos = self._pos[slot] = p.pos if p is not None else 0
        return pos

    def service(self, key):
        """The SvcEntry of a (proto, addr, port) key, or None."""
        try:
            return self.svc[key]
        except KeyError:
            pass
        if self.all_svcs:
            return None
        entry = self.svc[key] = self._get(svc_map(key), svc_key(*key))
        return entry

    def _load_services(self):
        if self.all_svcs:
            return
        for name, mirror in (("services", SvcKey), ("services6", SvcKey6)):
            if self.maps is None:
                break
            m = getattr(self.maps, name)
            ksz, vsz = m.key_size, m.value_size
            for kraw, vraw, n in m.raw_chunks():
                for i in range(n):
                    key = key_tuple(mirror.from_buffer_copy(kraw, i * ksz))
                    if key not in self.svc:
                        self.svc[key] = SvcEntry.from_buffer_copy(vraw, i * vsz)
        self.all_svcs = True
        live = {k: e for k, e in self.svc.items() if e is not None}
        self._used_slots = {e.slot for e in live.values()}
        for af in self._count:
            self._count[af] = sum(family(k[1]) == af for k in live)
        self._top_seq = max((e.seq for e in live.values()), default=0)
        self._next_slot = 0

    def services(self):
        """{key: SvcEntry} of every service."""
        self._load_services()
        return {k: e for k, e in self.svc.items() if e is not None}

    def svc_count(self, af):
        """How many services of a family there are (each family's map has
        its own size)."""
        self._load_services()
        return self._count[af]

    def free_svc_slot(self):
        """The lowest free service slot, or None."""
        self._load_services()
        s = self._next_slot
        while s in self._used_slots:
            s += 1
        self._next_slot = s
        return s if s < self.max_services else None

    def next_svc_seq(self):
        """The creation order of the next service (one above the highest)."""
        self._load_services()
        if self._top_seq is None:
            self._top_seq = max((e.seq for e in self.svc.values() if e is not None), default=0)
        return self._top_seq + 1

    def dest_entry(self, slot):
        """The DestEntry in a dests slot, or None when the slot is free."""
        try:
            return self.dest[slot]
        except KeyError:
            pass
        d = None if self.all_dests else self._get("dests", slot)
        d = self.dest[slot] = d if d is not None and d.flags else None
        return d

    def dlist(self, svc_slot):
        """[(slot, weight)] of a service's destinations, kernel order (newest
        first): its list, from svc_dests' d[0] along DestEntry.next."""
        dlist = self.lists.get(svc_slot)
        if dlist is None:
            dlist = []
            sd = self._get("svc_dests", svc_slot)
            slot = sd.d[0].slot if sd is not None and sd.n else 0
            while slot and len(dlist) < self.max_dests:
                d = self.dest_entry(slot)
                if d is None:
                    break
                dlist.append((slot, d.weight))
                self._at[(svc_slot, dest_addr(d), d.port)] = slot
                slot = d.next
            self.lists[svc_slot] = dlist
        return dlist

    def laddrs(self, svc_slot):
        """[(address text, ifindex)] of a service's local addresses, as added."""
        v = self.current("laddrs", svc_slot)
        return [] if v is None else [(b2a(bytes(a.addr)[:16 if a.af == XDPLB_AF_INET6 else 4]),
                                      a.ifindex) for a in v.a[:min(v.n, len(v.a))]]

    def dests_of(self, svc_slot):
        """[(slot, DestEntry)] of a service's destinations, kernel order."""
        dest = self.dest
        return [(s, dest[s]) for s, _ in self.dlist(svc_slot)]

    def find_dest(self, svc_slot, addr, port):
        """The slot of a service's destination (address bytes: 4 or 16;
        network-order port), or None (after dlist(svc_slot))."""
        return self._at.get((svc_slot, addr, port))

    def every_dest(self):
        """{slot: DestEntry} of every used dests slot. Slots are only ever
        allocated up to alloc.dest_top, so only those are read."""
        if not self.all_dests:
            top = self.alloc().dest_top
            if self.maps is not None and top:
                m = self.maps.dests
                ksz, vsz, off = m.key_size, m.value_size, DestEntry.flags.offset
                for kraw, vraw, n in m.raw_chunks(top + 1):
                    for i in range(n):
                        slot = int.from_bytes(kraw[i * ksz:(i + 1) * ksz], "little")
                        if slot not in self.dest and vraw[i * vsz + off]:
                            self.dest[slot] = DestEntry.from_buffer_copy(vraw, i * vsz)
            self.all_dests = True
        return {s: d for s, d in self.dest.items() if d is not None}

    def dests_by_service(self):
        """{service slot: [(slot, DestEntry)] newest first} of every destination."""
        out = {}
        for slot, d in sorted(self.every_dest().items(), key=lambda sd: -sd[1].seq):
            out.setdefault(d.svc_slot, []).append((slot, d))
        return out

    def free_dest_slot(self, a=None):
        """The lowest free dests slot (never 0: it means "none"), or None; a:
        the alloc bookkeeping to start from (the planned one by default)."""
        a = a or self.alloc()
        s = max(a.dest_free, 1)
        while s < self.max_dests:
            if s > a.dest_top or self.dest_entry(s) is None:
                return s
            s += 1
        return None

    def raw_keys(self, name):
        """The key bytes of every entry of a hash map (sched_ring, lblc)."""
        return [] if self.maps is None else [k for k, _ in getattr(self.maps, name).raw_items()]

    # --- plans ----------------------------------------------------------------------

    def apply(self, plan):
        """Make the copy what the plan leaves, and add its writes to the delta:
        to the current segment, or to a new one when its MAKE writes would
        undo a BREAK of this one, when it takes a service out of an rs_table
        entry this one adds a service to (replies of both must find them
        until the switch), or when its rings would not fit beside this
        one's (the old and new generations of every service it switches are
        in sched_ring at once)."""
        seg = self.segments[-1]
        rings = self._rings(seg, plan)
        if seg.broken and any(w[0] == MAKE and (w[1], w[2]) in seg.broken for w in plan.writes) \
                or seg.shared and any(w[0] == BREAK and w[2] in seg.shared for w in plan.writes
                                      if w[1] in RS_TABLES) \
                or seg.svcs and rings[2] > self.max_ring:
            seg = _Segment()
            self.segments.append(seg)
            rings = self._rings(seg, plan)
        seg.ring0, seg.made, seg.again = rings[0], rings[1], rings[3]
        writes, kinds = seg.writes, seg.kinds
        for phase, name, key, kind, value in plan.writes:
            writes[name][key] = (phase, kind, value)
            kinds[name].add(phase * 4 + kind)
            if phase == BREAK:
                seg.broken.add((name, key))
            elif name in RS_TABLES:
                seg.shared.add(key)
            if name == "dests":
                self._set_dest(key, value if kind == PUT else None)
            elif name == "alloc":
                self._alloc = value
            elif name == "sched_pos":
                self._pos[key] = value.pos
        for key, entry, dlist, ring in plan.svcs:
            change = seg.svcs.get(key)
            if change is None:
                change = seg.svcs[key] = _SvcChange(self.service(key))
            self._set_service(key, change.entry, entry)
            change.entry = entry
            if entry is not None and dlist is not None:
                change.dlist = self.lists[entry.slot] = dlist
            if ring is not None:
                change.ring = ring

    def _rings(self, seg, plan):
        """(ring0, made, peak, again) of seg with the plan in it: the most
        sched_ring entries its write holds at once is the larger of the MAKE
        phase (every live ring and every new one) and a detour's second round
        (every final ring, and the detoured ones twice)."""
        ring0 = self.alloc().ring_used if seg.ring0 is None else seg.ring0
        made, again = seg.made, seg.again
        if not plan.svcs:
            return ring0, made, 0, again
        for key, entry, _, ring in plan.svcs:
            change = seg.svcs.get(key)
            old = change.made() if change is not None else (0, 0)
            orig = change.orig if change is not None else self.service(key)
            new = _ring_made(orig, entry, ring if ring is not None or change is None
                             else change.ring)
            made, again = made + new[0] - old[0], again + new[1] - old[1]
        used = next((w[4].ring_used for w in plan.writes if w[1] == "alloc"),
                    self.alloc().ring_used)
        return ring0, made, max(ring0 + made, used + again), again

    def _set_dest(self, slot, d):
        old = self.dest.get(slot)
        if old is not None:
            self._at.pop((old.svc_slot, dest_addr(old), old.port), None)
        if d is not None and not d.flags:
            d = None
        self.dest[slot] = d
        if d is not None:
            self._at[(d.svc_slot, dest_addr(d), d.port)] = slot

    def _set_service(self, key, old, new):
        self.svc[key] = new
        if old is not None and (new is None or new.slot != old.slot):
            self.lists.pop(old.slot, None)
        if new is not None and old is None:
            self.lists.setdefault(new.slot, [])
        if not self.all_svcs or old is not None and new is not None and old.slot == new.slot:
            return
        if old is not None:
            self._count[family(key[1])] -= 1
            self._used_slots.discard(old.slot)
            self._next_slot = min(self._next_slot, old.slot)
            if old.seq == self._top_seq:
                self._top_seq = None    # recomputed when asked
        if new is not None:
            self._count[family(key[1])] += 1
            self._used_slots.add(new.slot)
            if self._top_seq is not None:
                self._top_seq = max(self._top_seq, new.seq)

    # --- the delta ------------------------------------------------------------------

    def write(self, tx):
        """Hand the delta to tx (a journal.Transaction, or anything with the
        maps' write interface), segment by segment, phase by phase."""
        for seg in self.segments:
            out = ({}, {}, {})      # phase -> map -> kind -> [(key, value)]
            for name, writes in seg.writes.items():
                codes = seg.kinds[name]
                for code in codes:
                    phase, kind = divmod(code, 4)
                    out[phase].setdefault(name, {})[kind] = (
                        [(k, w[2]) for k, w in writes.items()] if len(codes) == 1 else
                        [(k, w[2]) for k, w in writes.items() if w[0] == phase and w[1] == kind])
            detours = {}
            for key, change in seg.svcs.items():
                _svc_writes(key, change, out, detours)
            _emit(tx, out)
            if detours:
                out = ({}, {}, {})
                for key, change in detours.items():
                    _svc_writes(key, change, out, None)
                _emit(tx, out)


def _add(out, phase, name, kind, key, value=None):
    out[phase].setdefault(name, {}).setdefault(kind, []).append((key, value))


def _svc_writes(key, ch, out, detours):
    """The writes of one service's change within a segment."""
    orig, entry, ring = ch.orig, ch.entry, ch.ring
    skey, smap = bytes(svc_key(*key)), svc_map(key)
    if entry is None:
        if orig is not None:
            _add(out, SWITCH, smap, DEL, skey)
            _ring_delete(out, orig)
            _add(out, BREAK, "svc_dests", ZERO, orig.slot)
        return
    if ring is not None and orig is not None and detours is not None and \
            orig.slot == entry.slot and orig.ring_gen == entry.ring_gen and \
            orig.ring_len and len(ring):
        # the live generation again: by way of the other one
        temp = copy(entry)
        temp.ring_gen ^= XDPLB_RING_GEN_BIT
        final = _SvcChange(temp)
        final.entry, final.ring = entry, ring
        detours[key] = final
        entry = temp
    if ch.dlist is not None:
        _add(out, MAKE, "svc_dests", PUT, entry.slot, svc_dests_value(ch.dlist))
    if ring is not None:
        if len(ring):
            _add(out, MAKE, "sched_ring", RAW, ring_keys(entry.slot, entry.ring_gen, len(ring)),
                 array.array("I", ring.entries).tobytes())
        if orig is not None:
            _ring_delete(out, orig)
    _add(out, SWITCH, smap, PUT, skey, entry)
    if orig is not None and orig.slot != entry.slot:
        _add(out, BREAK, "svc_dests", ZERO, orig.slot)


def _ring_delete(out, entry):
    if entry.ring_len:
        keys = ring_keys(entry.slot, entry.ring_gen, entry.ring_len)
        for i in range(0, len(keys), 8):
            _add(out, BREAK, "sched_ring", DEL, keys[i:i + 8])


def _emit(tx, out):
    for writes in out:
        for name in MAP_ORDER:
            todo = writes.get(name)
            if not todo:
                continue
            m = getattr(tx, name)
            if todo.get(PUT):
                m.put_many(todo[PUT])
            for keys, values in todo.get(RAW, ()):
                m.put_raw(keys, values, len(keys) // m.key_size)
            if todo.get(ZERO):
                m.put_zeros([k for k, _ in todo[ZERO]])
            for key, _ in todo.get(DEL, ()):
                m.delete(key)
