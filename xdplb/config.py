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

* services / services6: SvcKey / SvcKey6 -> SvcEntry, one per family (slot
  = lowest slot free in both, seq = creation order across both);
* dests: slot -> DestEntry, both families (an IPv6 one: af, addr6, and its
  fold in addr; slot 0 unused, flags == 0 means free, seq = order
  of insertion, never reused; a service's list, newest first as the kernel
  keeps it, starts at svc_dests' d[0] and follows DestEntry.next);
* sched_ring / sched_pos: the schedule as a ring of dest slots (xdplb/sched.py),
  written under the other generation bit and switched with ONE update of the
  service (Tables.write orders the writes);
* svc_dests: the first XDPLB_LIST_MAX of the list, for the list schedulers;
* alloc: the bookkeeping (last dest seq, slot bounds, ring entries in use);
* rs_table(6) / rs_filter: IPVS's real-server table, for masquerading
  destinations: each real server addr:port (port 0 for a port-zero
  service's or a port-zero destination) -> the services it serves, newest
  first, which a reply needs to find its connection; the filter's bit of
  the address is set with it. A service leaves an entry only once neither
  a masquerading destination nor a live connection needs it (the sweep:
  conns.prune_real_servers), so the replies of a removed destination's
  connections are still un-NATed, as IPVS's are; the sweep then clears
  filter bits no entry has.
"""
import ctypes as C
import socket

from . import model
from . import sched as S
from .model import (AF_INET6, E_DEST_EXISTS, E_ENOMEM, E_NO_DEST, E_NO_SERVICE, E_SVC_EXISTS,
                    E_SVC_NOT_DEFINED, XdplbError)
from .keys import (a2b, dest_addr, fold, key_tuple, netmask_field, rs_filter_bit, rs_key, rs_map,
                   rs_value, svc_key, svc_key_of)
from .localaddr import add_laddr, check_fullnat, delete_laddr, drop_laddrs  # noqa: F401
from .structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL,
                      XDPLB_CONN_F_FULLNAT, XDPLB_DEST_F_AVAILABLE, XDPLB_LIST_MAX,
                      XDPLB_RING_GEN_BIT, XDPLB_RS_SVC_MAX, XDPLB_TMO_UDP, Alloc, DestEntry,
                      SchedPos, SvcEntry, packer)
from .tables import BREAK, Plan, copy

_dest_entry = packer(DestEntry)   # (-R makes 10^5 of them)

def table_full(what, capacity):
    """A map of fixed size is full: ipvsadm's ENOMEM text, and which map."""
    return XdplbError(f"{E_ENOMEM}: xdplb's {what} table is full ({capacity} {what}, "
                      f"the size its maps were compiled with)")


def dest_port(svc_port, dest):
    """ipvsadm forces the real port to the virtual port for DR and TUN."""
    return svc_port if dest.fwd in (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_TUNNEL) else dest.port


def _tun_fields(dest):
    """DestEntry's tun_port (network order), tun_type and tun_flags of a
    destination: zeros unless it tunnels."""
    if dest.fwd != IP_VS_CONN_F_TUNNEL:
        return 0, 0, 0
    return socket.htons(dest.tun_port), dest.tun_type, dest.tun_flags


def _primed(dest):
    """Route, Tunnel and full-NAT send a packet the stack cannot forward (to
    the VIP; from one of our own addresses) while the real server's MAC is
    unknown: the control plane has the kernel resolve it when the server is
    added."""
    return dest.fwd in (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_TUNNEL, XDPLB_CONN_F_FULLNAT)


def _dest_id(addr, port):
    """A destination's own address bytes (4, or 16 for IPv6) and network-order
    port: what identifies it in its service (keys.dest_addr)."""
    return bytes(a2b(addr)), socket.htons(port)


def _addr_fields(addr):
    """DestEntry's addr, addr6 and af of a destination's address bytes: an
    IPv6 one keeps its fold where IPv4's address is (bpf/xdplb.h)."""
    if len(addr) == 16:
        return fold(addr), addr, AF_INET6
    return addr, bytes(16), model.AF_INET


def _sched_fields(name):
    """SvcEntry fields of a scheduler: its id and sched_list()'s parameters."""
    a, b, c, f = S.LIST_PARAMS.get(name, (0, 0, 0, 0))
    return dict(sched=model.SCHED_IDS[name], list_a=a, list_b=b, list_c=c, list_flags=f)


def _dlist(ds):
    """[(slot, weight)]: what the schedulers see of [(slot, DestEntry)]."""
    return [(s, d.weight) for s, d in ds]


def _mh_addr(svc_af, addr):
    """The address mh hashes (host order) of a server's address bytes:
    ip_vs_mh_hashkey reads it in the service's family, so an IPv6 service
    hashes the fold (an IPv4 tunnel server's is its address) and an IPv4
    service an IPv6 tunnel server's first word."""
    if len(addr) == 16:
        addr = fold(addr) if svc_af == AF_INET6 else addr[:4]
    return int.from_bytes(addr, "big")


def _meta(name, ds, svc_af):
    """What mh's table needs of [(slot, DestEntry)] of a service of family
    svc_af: {slot: (addr, port, last_weight)} host order (the other
    schedulers need nothing)."""
    if name != "mh":
        return None
    return {s: (_mh_addr(svc_af, dest_addr(d)), socket.ntohs(d.port), d.last_weight)
            for s, d in ds}


# --- the schedule ---------------------------------------------------------------------

class Schedule:
    """What sched_ring holds for a service: rr/wrr's ring (a prefix, then the
    cycle), sh/dh/mh's table (indexed by hash), nothing for the list
    schedulers. Its length is known when it is planned (the room check needs
    it); its entries are computed when written: once per service and write,
    however many lines of -R changed it."""

    __slots__ = ("name", "dlist", "meta", "picks", "prefix", "n")

    def __init__(self, name, dlist, meta=None, picks=None, prefix=0, n=0):
        self.name, self.dlist, self.meta = name, dlist, meta
        self.picks, self.prefix, self.n = picks, prefix, n

    def __len__(self):
        return self.n

    @property
    def entries(self):
        """The destination slots, in ring order."""
        if self.picks is not None:
            return [self.dlist[i][0] for i in self.picks]
        return S.table_for(self.name, self.dlist, self.meta) if self.n else []


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


def plan_schedule(t, used, name, dlist, state, meta=None):
    """The Schedule of a service's list dlist [(slot, weight)] from state. It
    must fit beside the live rings (used entries), this service's own
    included: both generations exist while it switches."""
    kind = S.kind(name)
    if kind == "list":
        if len(dlist) > XDPLB_LIST_MAX:
            raise XdplbError(
                f"xdplb: the {name} scheduler considers at most {XDPLB_LIST_MAX} "
                f"real servers per service; this service would have {len(dlist)}")
        return Schedule(name, dlist)
    room = t.max_ring - used
    if kind == "table":
        n = S.table_len(name, dlist, meta)
        if n > room:
            raise XdplbError(
                f"xdplb: the {name} table of this service needs {n} "
                f"ring entries but only {max(room, 0)} of {t.max_ring} are free")
        return Schedule(name, dlist, meta, n=n)
    try:
        picks, prefix = S.ring_shape(name, dlist, state, room)
    except S.RingTooLarge as e:
        raise XdplbError(
            f"xdplb: the {name} schedule of this service needs {e.needed} ring "
            f"entries but only {max(e.room, 0)} of {t.max_ring} are free; use smaller "
            f"weights or weights with a common divisor") from None
    return Schedule(name, dlist, picks=picks, prefix=prefix, n=len(picks))


def _switched(t, entry, schedule, state, switches=1, **fields):
    """The service entry with a Schedule from state, switched to it
    `switches` times (each time under the other ring generation)."""
    new = copy(entry)
    new.ring_gen ^= XDPLB_RING_GEN_BIT if switches % 2 else 0
    new.ring_base = t.pos(entry.slot)
    new.ring_len, new.ring_prefix = schedule.n, schedule.prefix
    new.sched_cl, new.sched_cw = state.cl, state.cw
    for f, v in fields.items():
        setattr(new, f, v)
    return new


def _switch(t, plan, alloc, key, entry, name, dlist, state, meta, **fields):
    """Plan the service's new schedule from its list dlist [(slot, weight)]
    and state: the ring under the other generation, then the service entry
    switching to it (fields: other SvcEntry fields to change)."""
    sched = plan_schedule(t, alloc.ring_used, name, dlist, state, meta)
    alloc.ring_used += sched.n - entry.ring_len
    plan.put("alloc", 0, alloc)
    plan.service(key, _switched(t, entry, sched, state, **fields), dlist, sched)


# --- services -------------------------------------------------------------------------

def add_service(t, svc):
    if not svc.fwmark and t.service(svc.key) is not None:
        raise XdplbError(E_SVC_EXISTS)
    model.check_service(svc)
    slot = t.free_svc_slot()
    if slot is None:
        raise table_full("services", t.max_services)
    if svc.af == AF_INET6 and t.svc_count(AF_INET6) >= t.max_services6:
        raise table_full("IPv6 services", t.max_services6)
    state = S.init_state(svc.sched, [])
    plan = Plan()
    plan.zero("svc_stats", slot)
    plan.put("sched_pos", slot, SchedPos(0))
    plan.service(svc.key, SvcEntry(slot=slot, seq=t.next_svc_seq(), flags=svc.flags,
                                   timeout=svc.timeout, netmask=netmask_field(svc),
                                   sched_cl=state.cl, sched_cw=state.cw,
                                   **_sched_fields(svc.sched)), dlist=[])
    return plan


def edit_service(t, svc):
    if svc.fwmark or t.service(svc.key) is None:
        model.check_service_kind(svc.af, svc.proto, svc.fwmark)
        raise XdplbError(E_NO_SERVICE)
    model.check_service(svc)
    entry = t.service(svc.key)
    fields = dict(flags=svc.flags, timeout=svc.timeout, netmask=netmask_field(svc))
    plan = Plan()
    if model.SCHED_IDS[svc.sched] == entry.sched:
        new = copy(entry)
        for f, v in fields.items():
            setattr(new, f, v)
        plan.service(svc.key, new)
        return plan
    ds = t.dests_of(entry.slot)
    dlist = _dlist(ds)
    _switch(t, plan, copy(t.alloc()), svc.key, entry, svc.sched, dlist,
            S.init_state(svc.sched, dlist), _meta(svc.sched, ds, svc.af),
            **_sched_fields(svc.sched), **fields)
    return plan


# --- the real-server table ---------------------------------------------------------

def _rs_svcs(t, name, k):
    """[SvcKey(6) bytes] rs_table(6) has (or the plans so far leave) under k."""
    v = t.current(name, k)
    return [] if v is None else [bytes(v.svc[i]) for i in range(min(v.n, XDPLB_RS_SVC_MAX))]


def rs_join(t, plan, svc_k, addr, port):
    """A masquerading destination joins its service: the service goes first
    in its real server's rs_table entry, and the address into the filter,
    before the destination can be scheduled (MAKE). Services that left the
    entry (whose destination went, while its connections lived on:
    conns.prune_real_servers) make room when it is full."""
    k, name = rs_key(svc_k, addr, port), rs_map(addr)
    sk = bytes(svc_key(*svc_k))
    svcs = _rs_svcs(t, name, k)
    if sk in svcs:      # a port-zero service's second port of one address
        return
    if len(svcs) >= XDPLB_RS_SVC_MAX:
        svcs = [s for s in svcs if _rs_serves(t, s, k)]
    if len(svcs) >= XDPLB_RS_SVC_MAX:
        raise XdplbError(f"{E_ENOMEM}: a masquerading real server (address and port) can serve "
                         f"at most {XDPLB_RS_SVC_MAX} virtual services in xdplb")
    plan.put(name, k, rs_value([sk] + svcs))
    rs_filter_join(t, plan, addr)


def rs_filter_join(t, plan, addr):
    """rs_filter's bit of a real server's address (bytes), set (MAKE) if it is
    not: a Masq server's (rs_join), and a full-NAT server's, whose replies,
    to a local address, find their connection through fnat_out."""
    bit = rs_filter_bit(addr)
    word = t.current("rs_filter", bit >> 6)
    word = 0 if word is None else word.value
    if not word >> (bit & 63) & 1:
        plan.put("rs_filter", bit >> 6, C.c_uint64(word | 1 << (bit & 63)))


def _rs_serves(t, sk, k):
    """Service sk (SvcKey bytes) has a masquerading destination under rs key k."""
    svc_k = key_tuple(svc_key_of(sk))
    entry = t.service(svc_k)
    return entry is not None and any(
        d.fwd == IP_VS_CONN_F_MASQ and rs_key(svc_k, dest_addr(d), d.port) == k
        for _, d in t.dests_of(entry.slot))


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
    drop_laddrs(t, plan, entry.slot)
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
        drop_laddrs(t, plan, entry.slot)
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
    plan, [refused] = add_dests(t, svc_k, [dest])
    if refused is not None:
        raise refused
    return plan


def add_dests(t, svc_k, dests):
    """-a of several destinations to one service, as that many add_dest one
    after the other: each checked and refused as add_dest would be at that
    point, the same writes in the end. Returns (Plan, [XdplbError or None
    per destination]). The schedule is planned for each destination (the
    room check needs its length) and switched to once."""
    key = tuple(svc_k)
    entry = t.service(key)
    if entry is None:
        return Plan(), [XdplbError(E_SVC_NOT_DEFINED)] * len(dests)
    name = model.SCHED_NAMES[entry.sched]
    dlist = t.dlist(entry.slot)
    svc_af = model.family(key[1])
    meta = _meta(name, t.dests_of(entry.slot), svc_af)
    state = current_state(t, entry, dlist)
    alloc = copy(t.alloc())
    seq, used = alloc.dest_seq, alloc.ring_used   # (as ints in the loop: ctypes is slow)
    plan, results, added, sched = Plan(), [], set(), None
    for dest in dests:
        try:
            model.check_dest(dest, svc_af)
            port = dest_port(key[2], dest)
            ident = _dest_id(dest.addr, port)
            if ident in added or t.find_dest(entry.slot, *ident) is not None:
                raise XdplbError(E_DEST_EXISTS)
            slot = t.free_dest_slot(alloc)
            if slot is None:
                raise table_full("destinations", t.max_dests - 1)
            check_fullnat(t, entry, dest)
            joined = Plan()
            if dest.fwd == IP_VS_CONN_F_MASQ:
                rs_join(t, joined, key, *ident)
            elif dest.fwd == XDPLB_CONN_F_FULLNAT:
                rs_filter_join(t, joined, ident[0])
            after = [(slot, dest.weight)] + dlist
            after_state = S.on_add(name, after, state)
            after_meta = None if meta is None else {
                **meta, slot: (_mh_addr(svc_af, ident[0]), port, dest.weight)}
            after_sched = plan_schedule(t, used, name, after, after_state, after_meta)
        except XdplbError as e:
            results.append(e)
            continue
        used += after_sched.n - (sched.n if sched else entry.ring_len)
        seq += 1
        plan.writes += joined.writes
        alloc.dest_top, alloc.dest_free = max(alloc.dest_top, slot), slot + 1
        plan.zero("dest_stats", slot)
        plan.zero("dest_conns", slot)
        addr, addr6, af = _addr_fields(ident[0])
        plan.put("dests", slot, _dest_entry(
            addr, ident[1], dest.fwd, XDPLB_DEST_F_AVAILABLE, entry.slot, seq, dest.weight,
            dest.u_threshold, dest.l_threshold, dest.weight, dlist[0][0] if dlist else 0,
            *_tun_fields(dest), addr6, af, bytes(3)))
        added.add(ident)
        dlist, state, meta, sched = after, after_state, after_meta, after_sched
        if _primed(dest):
            plan.primed.append(dest.addr)
        results.append(None)
    if sched is not None:
        alloc.dest_seq, alloc.ring_used = seq, used
        plan.put("alloc", 0, alloc)
        plan.service(key, _switched(t, entry, sched, state, len(added)), dlist, sched)
    return plan, results


def edit_dest(t, svc_k, dest):
    entry, ds = _service_of(t, svc_k)
    model.check_dest(dest, model.family(svc_k[1]))
    slot = t.find_dest(entry.slot, *_dest_id(dest.addr, dest_port(svc_k[2], dest)))
    if slot is None:
        raise XdplbError(E_NO_DEST)
    check_fullnat(t, entry, dest)
    old = t.dest_entry(slot)
    new = copy(old)
    new.fwd, new.weight = dest.fwd, dest.weight
    new.tun_port, new.tun_type, new.tun_flags = _tun_fields(dest)
    if dest.weight > 0:  # mh's last_weight: the latest non-zero weight
        new.last_weight = dest.weight
    new.u_threshold, new.l_threshold = dest.u_threshold, dest.l_threshold
    name = model.SCHED_NAMES[entry.sched]
    after = [(s, new if s == slot else d) for s, d in ds]
    state = S.on_edit(name, _dlist(after), current_state(t, entry, _dlist(ds)))
    plan = Plan()
    plan.put("dests", slot, new)
    if new.fwd == IP_VS_CONN_F_MASQ:
        rs_join(t, plan, tuple(svc_k), dest_addr(old), old.port)
    elif new.fwd == XDPLB_CONN_F_FULLNAT:
        rs_filter_join(t, plan, dest_addr(old))
    # Editing clears OVERLOAD when u_threshold goes to 0 or up.
    if not dest.u_threshold or dest.u_threshold > old.u_threshold:
        dc = t.current("dest_conns", slot)
        if dc is not None and dc.overload:
            dc = copy(dc)
            dc.overload = 0
            plan.put("dest_conns", slot, dc)
    _switch(t, plan, copy(t.alloc()), tuple(svc_k), entry, name, _dlist(after), state,
            _meta(name, after, model.family(svc_k[1])))
    if _primed(dest):
        plan.primed.append(dest.addr)
    return plan


def delete_dest(t, svc_k, addr, port):
    entry, ds = _service_of(t, svc_k)
    slot = t.find_dest(entry.slot, *_dest_id(addr, port))
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
    rest = ds[:i] + ds[i + 1:]
    _switch(t, plan, alloc, tuple(svc_k), entry, name, _dlist(rest), state,
            _meta(name, rest, model.family(svc_k[1])))
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


def set_setting(t, name, value):
    """`xdplb set NAME VALUE`: one of SETTINGS, 0 or 1."""
    if name not in model.SETTINGS:
        raise XdplbError(f"unknown setting {name!r} (one of: {', '.join(model.SETTINGS)})")
    if value not in (0, 1):
        raise XdplbError(f"{name} takes 0 or 1, not {value}")
    plan = Plan()
    plan.put("sysctl", model.SETTINGS[name][0], C.c_uint32(value))
    return plan


def set_timeouts(t, tcp, tcpfin, udp):
    """--set: TCP ESTABLISHED, TCP FIN_WAIT, UDP; 0 leaves one unchanged.
    Entries take a new value at their next state change or packet."""
    plan = Plan()
    for idx, v in ((1, tcp), (4, tcpfin), (XDPLB_TMO_UDP, udp)):
        if v:
            plan.put("timeouts", idx, C.c_uint32(v))
    return plan


# --- many operations --------------------------------------------------------------------

def run(t, ops):
    """Plan ops one after the other against the tables t, applying each plan
    (t.apply) before the next: [(operation, args) | XdplbError (refused
    before planning)]. Returns ([XdplbError or None per op], the DR servers
    to prime). A run of add_dest to a service whose ring is empty (one this
    -R made) is planned as one add_dests: the same writes, needing no more
    room in sched_ring than the last of them did (tables.py)."""
    results, primed = [], []
    i = 0
    while i < len(ops):
        op = ops[i]
        i += 1
        if isinstance(op, XdplbError):
            results.append(op)
            continue
        fn, args = op
        entry = t.service(tuple(args[0])) if fn is add_dest else None
        if entry is not None and not entry.ring_len:
            j = i
            while j < len(ops) and not isinstance(ops[j], XdplbError) and \
                    ops[j][0] is add_dest and ops[j][1][0] == args[0]:
                j += 1
            plan, refused = add_dests(t, args[0], [args[1]] + [o[1][1] for o in ops[i:j]])
            results += refused
            i = j
        else:
            try:
                plan = fn(t, *args)
            except XdplbError as e:
                results.append(e)
                continue
            results.append(None)
        t.apply(plan)
        primed += plan.primed
    return results, primed
