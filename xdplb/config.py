"""The configuration planner: what each ipvsadm operation writes.

One function per operation (add/edit/delete a service or a destination,
flush, zero, timeouts): it reads the tables (xdplb/tables.py: an in-memory
copy of the maps, read lazily), checks everything the kernel checks, in the
kernel's order, and returns the operation's writes as a Plan, or raises
model.XdplbError (ipvsadm's text and exit code) having changed nothing. The
caller applies the plan to the tables (Tables.apply), so the next operation
sees it, and writes the net result through a journal transaction
(Control: one plan per xdplbadm command, every line's for -R).

The contract of the maps (bpf/xdplb.h):

* services: SvcKey -> SvcEntry (slot = lowest free slot, seq = creation order);
* dests: slot -> DestEntry (slot 0 unused, flags == 0 means free, seq = order
  of insertion, never reused; a service's list, newest first as the kernel
  keeps it, starts at svc_dests' d[0] and follows DestEntry.next);
* sched_ring / sched_pos: the schedule as a ring of dest slots (xdplb/sched.py),
  written under the other generation bit and switched with ONE update of the
  service (Tables.write orders the writes);
* svc_dests: the first XDPLB_LIST_MAX of the list, for the list schedulers;
* alloc: the bookkeeping (last dest seq, slot bounds, ring entries in use).
"""
import ctypes as C
import socket

from . import model
from . import sched as S
from .model import (AF_INET, E_DEST_EXISTS, E_ENOMEM, E_NO_DEST, E_NO_SERVICE, E_SVC_EXISTS,
                    E_SVC_NOT_DEFINED, XdplbError)
from .structs import (IP_VS_CONN_F_DROUTE, XDPLB_DEST_F_AVAILABLE, XDPLB_LIST_MAX,
                      XDPLB_RING_GEN_BIT, XDPLB_SYSCTL_CONN_REUSE_MODE, XDPLB_TMO_UDP, Alloc,
                      DestEntry, SchedPos, SvcEntry)
from .tables import BREAK, Plan, a2b, copy

EMPTY = S.Ring((), 0)


def table_full(what, capacity):
    """A map of fixed size is full: ipvsadm's ENOMEM text, and which map."""
    return XdplbError(f"{E_ENOMEM}: xdplb's {what} table is full ({capacity} {what}, "
                      f"the size its maps were compiled with)")


def dest_port(svc_port, dest):
    """ipvsadm forces the real port to the virtual port for DR (and TUN)."""
    return svc_port if dest.fwd == IP_VS_CONN_F_DROUTE else dest.port


def _sched_fields(name):
    """SvcEntry fields of a scheduler: its id and sched_list()'s parameters."""
    a, b, c, f = S.LIST_PARAMS.get(name, (0, 0, 0, 0))
    return dict(sched=model.SCHED_IDS[name], list_a=a, list_b=b, list_c=c, list_flags=f)


def _dlist(ds):
    """[(slot, weight)]: what the schedulers see of [(slot, DestEntry)]."""
    return [(s, d.weight) for s, d in ds]


def _meta(ds):
    """{slot: (addr, port, last_weight)} host order, as mh's table wants them."""
    return {s: (int.from_bytes(bytes(d.addr), "big"), socket.ntohs(d.port), d.last_weight)
            for s, d in ds}


class Table:
    """sh/dh/mh's table, filled when it is written (a -R line only needs its
    length); as a Ring: entries, no prefix."""

    prefix = 0

    def __init__(self, name, dlist, meta, n):
        self.name, self.dlist, self.meta, self.n = name, dlist, meta, n
        self._entries = None

    def __len__(self):
        return self.n

    @property
    def entries(self):
        if self._entries is None:
            self._entries = tuple(S.table_for(self.name, self.dlist, self.meta))
        return self._entries


# --- the schedule ---------------------------------------------------------------------

def current_state(t, entry, dlist):
    """The kernel's scheduler state now: the live ring's picks since it was
    switched (sched_pos - ring_base), replayed from its starting state."""
    name = model.SCHED_NAMES[entry.sched]
    if S.kind(name) != "ring":
        return S.SchedState()
    start = S.SchedState(entry.sched_cl, entry.sched_cw)
    n = t.pos(entry.slot) - entry.ring_base
    if entry.ring_len == 0 or n <= 0:
        return start
    return S.state_after(name, dlist, start, n)


def plan_ring(t, name, dlist, state, meta=None):
    """What sched_ring holds for a service: rr/wrr's ring, sh/dh/mh's table
    (indexed by hash, no cycle), nothing for the list schedulers. It must fit
    beside every live ring, this service's own included (both generations
    exist while it switches)."""
    kind = S.kind(name)
    if kind == "list":
        if len(dlist) > XDPLB_LIST_MAX:
            raise XdplbError(
                f"xdplb: the {name} scheduler considers at most {XDPLB_LIST_MAX} "
                f"real servers per service; this service would have {len(dlist)}")
        return EMPTY
    room = t.max_ring - t.alloc().ring_used
    if kind == "table":
        n = S.table_len(name, dlist, meta)
        if n > room:
            raise XdplbError(
                f"xdplb: the {name} table of this service needs {n} "
                f"ring entries but only {max(room, 0)} of {t.max_ring} are free")
        return Table(name, dlist, meta, n)
    try:
        return S.build_ring(name, dlist, state, room)
    except S.RingTooLarge as e:
        raise XdplbError(
            f"xdplb: the {name} schedule of this service needs {e.needed} ring "
            f"entries but only {max(e.room, 0)} of {t.max_ring} are free; use smaller "
            f"weights or weights with a common divisor") from None


def _switch(t, plan, alloc, key, entry, name, ds, state, **fields):
    """Plan the service's new schedule from its list ds [(slot, DestEntry)]
    and state: the ring under the other generation, then the service entry
    switching to it (fields: other SvcEntry fields to change)."""
    dlist = _dlist(ds)
    ring = plan_ring(t, name, dlist, state, _meta(ds) if name == "mh" else None)
    new = copy(entry)
    new.ring_gen = entry.ring_gen ^ XDPLB_RING_GEN_BIT
    new.ring_base = t.pos(entry.slot)
    new.ring_len, new.ring_prefix = len(ring), ring.prefix
    new.sched_cl, new.sched_cw = state.cl, state.cw
    for f, v in {**_sched_fields(name), **fields}.items():
        setattr(new, f, v)
    alloc.ring_used += len(ring) - entry.ring_len
    plan.put("alloc", 0, alloc)
    plan.service(key, new, dlist, ring)


# --- services -------------------------------------------------------------------------

def add_service(t, svc):
    if svc.af == AF_INET and not svc.fwmark and t.service(svc.key) is not None:
        raise XdplbError(E_SVC_EXISTS)
    model.check_service(svc)
    slot = t.free_svc_slot()
    if slot is None:
        raise table_full("services", t.max_services)
    state = S.init_state(svc.sched, [])
    plan = Plan()
    plan.zero("svc_stats", slot)
    plan.put("sched_pos", slot, SchedPos(0))
    if t.svc_count() == 0:   # the kernel's sysctl default, conn_reuse_mode = 1
        plan.put("sysctl", XDPLB_SYSCTL_CONN_REUSE_MODE, C.c_uint32(1))
    plan.service(svc.key, SvcEntry(slot=slot, seq=t.next_svc_seq(), flags=svc.flags,
                                   timeout=svc.timeout, netmask=a2b(svc.netmask),
                                   sched_cl=state.cl, sched_cw=state.cw,
                                   **_sched_fields(svc.sched)), dlist=[])
    return plan


def edit_service(t, svc):
    if svc.af != AF_INET or svc.fwmark or t.service(svc.key) is None:
        model.check_service_kind(svc.af, svc.proto, svc.fwmark)
        raise XdplbError(E_NO_SERVICE)
    model.check_service(svc)
    entry = t.service(svc.key)
    fields = dict(flags=svc.flags, timeout=svc.timeout, netmask=a2b(svc.netmask))
    plan = Plan()
    if model.SCHED_IDS[svc.sched] == entry.sched:
        new = copy(entry)
        for f, v in fields.items():
            setattr(new, f, v)
        plan.service(svc.key, new)
        return plan
    ds = t.dests_of(entry.slot)
    state = S.init_state(svc.sched, _dlist(ds))
    _switch(t, plan, copy(t.alloc()), svc.key, entry, svc.sched, ds, state, **fields)
    return plan


def _free_dest(plan, alloc, slot):
    plan.put("dests", slot, DestEntry(), BREAK)
    plan.zero("dest_stats", slot, BREAK)
    plan.zero("dest_conns", slot, BREAK)
    alloc.dest_free = min(max(alloc.dest_free, 1), slot)


def delete_service(t, key):
    entry = t.service(key)
    if entry is None:
        raise XdplbError(E_NO_SERVICE)
    plan = Plan()
    alloc = copy(t.alloc())
    for slot, _ in t.dests_of(entry.slot):
        _free_dest(plan, alloc, slot)
    plan.zero("svc_stats", entry.slot, BREAK)
    plan.put("sched_pos", entry.slot, SchedPos(0), BREAK)
    alloc.ring_used -= entry.ring_len
    plan.put("alloc", 0, alloc)
    plan.service(key, None)
    return plan


def flush(t):
    """-C: every service, destination and ring entry (leftovers of a writer
    killed before the journal existed too) and the lblc cache; only the last
    destination seq handed out survives (seqs are never reused)."""
    plan = Plan()
    alloc = copy(t.alloc())
    by_svc = t.dests_by_service()
    live = {}
    for key, entry in t.services().items():
        for slot, _ in by_svc.pop(entry.slot, ()):
            _free_dest(plan, alloc, slot)
        plan.zero("svc_stats", entry.slot, BREAK)
        plan.put("sched_pos", entry.slot, SchedPos(0), BREAK)
        plan.service(key, None)
        live[entry.slot] = entry
    for ds in by_svc.values():      # destinations of no service
        for slot, _ in ds:
            plan.put("dests", slot, DestEntry(), BREAK)
            plan.zero("dest_stats", slot, BREAK)
    for kb in t.raw_keys("sched_ring"):
        slot, index = int.from_bytes(kb[:4], "little"), int.from_bytes(kb[4:8], "little")
        e = live.get(slot)
        if e is None or index & XDPLB_RING_GEN_BIT != e.ring_gen or \
                index & ~XDPLB_RING_GEN_BIT >= e.ring_len:   # (a live ring goes with its service)
            plan.delete("sched_ring", kb)
    for kb in t.raw_keys("lblc"):
        plan.delete("lblc", kb)
    plan.put("alloc", 0, Alloc(dest_seq=alloc.dest_seq))
    return plan


# --- destinations ---------------------------------------------------------------------

def _service_of(t, svc_k):
    entry = t.service(tuple(svc_k))
    if entry is None:
        raise XdplbError(E_SVC_NOT_DEFINED)
    return entry, t.dests_of(entry.slot)


def add_dest(t, svc_k, dest):
    """svc_k = (proto, addr, port) of the service; dest: a model.Destination."""
    entry, ds = _service_of(t, svc_k)
    model.check_dest(dest)
    port = dest_port(svc_k[2], dest)
    if t.find_dest(entry.slot, dest.addr, port) is not None:
        raise XdplbError(E_DEST_EXISTS)
    slot = t.free_dest_slot()
    if slot is None:
        raise table_full("destinations", t.max_dests - 1)
    alloc = copy(t.alloc())
    alloc.dest_seq += 1
    alloc.dest_top, alloc.dest_free = max(alloc.dest_top, slot), slot + 1
    new = DestEntry(a2b(dest.addr), socket.htons(port), dest.fwd, XDPLB_DEST_F_AVAILABLE,
                    entry.slot, alloc.dest_seq, dest.weight, dest.u_threshold,
                    dest.l_threshold, dest.weight, ds[0][0] if ds else 0)
    name = model.SCHED_NAMES[entry.sched]
    after = [(slot, new)] + ds
    state = S.on_add(name, _dlist(after), current_state(t, entry, _dlist(ds)))
    plan = Plan()
    plan.zero("dest_stats", slot)
    plan.zero("dest_conns", slot)
    plan.put("dests", slot, new)
    _switch(t, plan, alloc, tuple(svc_k), entry, name, after, state)
    if dest.fwd == IP_VS_CONN_F_DROUTE:
        plan.primed.append(dest.addr)
    return plan


def edit_dest(t, svc_k, dest):
    entry, ds = _service_of(t, svc_k)
    model.check_dest(dest)
    slot = t.find_dest(entry.slot, dest.addr, dest_port(svc_k[2], dest))
    if slot is None:
        raise XdplbError(E_NO_DEST)
    old = t.dest_entry(slot)
    new = copy(old)
    new.fwd, new.weight = dest.fwd, dest.weight
    if dest.weight > 0:  # mh's last_weight: the latest non-zero weight
        new.last_weight = dest.weight
    new.u_threshold, new.l_threshold = dest.u_threshold, dest.l_threshold
    name = model.SCHED_NAMES[entry.sched]
    after = [(s, new if s == slot else d) for s, d in ds]
    state = S.on_edit(name, _dlist(after), current_state(t, entry, _dlist(ds)))
    plan = Plan()
    plan.put("dests", slot, new)
    # Editing clears OVERLOAD when u_threshold goes to 0 or up.
    if not dest.u_threshold or dest.u_threshold > old.u_threshold:
        dc = t.current("dest_conns", slot)
        if dc is not None and dc.overload:
            dc = copy(dc)
            dc.overload = 0
            plan.put("dest_conns", slot, dc)
    _switch(t, plan, copy(t.alloc()), tuple(svc_k), entry, name, after, state)
    if dest.fwd == IP_VS_CONN_F_DROUTE:
        plan.primed.append(dest.addr)
    return plan


def delete_dest(t, svc_k, addr, port):
    entry, ds = _service_of(t, svc_k)
    slot = t.find_dest(entry.slot, addr, port)
    if slot is None:
        raise XdplbError(E_NO_DEST)
    name = model.SCHED_NAMES[entry.sched]
    before = _dlist(ds)
    state = S.on_delete(name, before, slot, current_state(t, entry, before))
    plan = Plan()
    alloc = copy(t.alloc())
    _free_dest(plan, alloc, slot)
    i = [s for s, _ in ds].index(slot)
    if i > 0:   # its predecessor in the list now links past it
        prev = copy(ds[i - 1][1])
        prev.next = ds[i][1].next
        plan.put("dests", ds[i - 1][0], prev)
    _switch(t, plan, alloc, tuple(svc_k), entry, name, ds[:i] + ds[i + 1:], state)
    return plan


# --- counters and timeouts -------------------------------------------------------------

def zero(t, svc_k=None):
    """-Z: every service and destination, or one service and its destinations."""
    plan = Plan()
    if svc_k is not None:
        entry = t.service(tuple(svc_k))
        if entry is None:
            raise XdplbError(E_NO_SERVICE)
        targets = {entry.slot: t.dests_of(entry.slot)}
    else:
        by_svc = t.dests_by_service()
        targets = {e.slot: by_svc.get(e.slot, ()) for e in t.services().values()}
    for svc_slot, ds in targets.items():
        plan.zero("svc_stats", svc_slot)
        for slot, _ in ds:
            plan.zero("dest_stats", slot)
    return plan


def set_timeouts(t, tcp, tcpfin, udp):
    """--set: TCP ESTABLISHED, TCP FIN_WAIT, UDP; 0 leaves one unchanged.
    Entries take a new value at their next state change or packet."""
    plan = Plan()
    for idx, v in ((1, tcp), (4, tcpfin), (XDPLB_TMO_UDP, udp)):
        if v:
            plan.put("timeouts", idx, C.c_uint32(v))
    return plan
