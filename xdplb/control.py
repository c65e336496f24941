"""The one control API of xdplb: the CLI, the lab, the daemon and the tests call it.

It keeps IPVS's configuration in the pinned maps of this netns's state
(xdplb/state.py) with the contract of bpf/xdplb.h:

* services: SvcKey -> Service (slot = lowest free slot, seq = creation order);
* dests: slot -> Dest (slot 0 unused, flags == 0 means free, seq = insertion
  order, the kernel's list is seq descending);
* sched_ring / sched_pos: the schedule as a ring of dest slots (xdplb/sched.py);
  a change is written under the other generation bit and switched with ONE
  update of the service, then the old generation is deleted;
* svc_stats / dest_stats: per-CPU IPVS counters by slot;
* conns, conns_assured: the connection table (maps.ConnTable), scanned for
  ActiveConn / InActConn.

Every writer runs in self.transaction() (xdplb/journal.py): under the state
lock, its writes are recorded and only journaled and applied when it ends,
so a refused command changes nothing and a killed one is redone by the next
lock holder; it also validates everything before its first map write.
Refusals raise model.XdplbError (message + ipvsadm exit code).

    ctl = Control.open(create=True)      # None-free: creates the state on first use
    ctl.add_service(Service(IPPROTO_TCP, "10.0.0.1", 80, sched="rr"))
    ctl.add_dest((IPPROTO_TCP, "10.0.0.1", 80), Destination("172.80.0.2", 80, fwd=0))
    for svc in ctl.services(): ...
"""
import ctypes as C
import os
import re
import socket
import time

from . import bpfsys, ipvsfmt, journal, model
from . import sched as S
from . import state as statemod
from .model import (AF_INET, E_DEST_EXISTS, E_ENOMEM, E_NO_DEST, E_NO_SERVICE, E_SVC_EXISTS,
                    E_SVC_NOT_DEFINED, IPPROTO_TCP, IPPROTO_UDP, Destination, Service, Stats,
                    XdplbError)
from .structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, XDPLB_DEST_F_AVAILABLE,
                      XDPLB_DIR_IN, XDPLB_DIR_OUT, XDPLB_DIR_TEMPLATE, XDPLB_LIST_MAX,
                      XDPLB_MH_TAB_SIZE,
                      XDPLB_RING_GEN_BIT, XDPLB_SH_TAB_SIZE,
                      XDPLB_TMO_UDP, XDPLB_CFG_CONN_REUSE, Conn, ConnKey, Dest, DestConns, RingKey,
                      SchedPos, SvcDests)
from .structs import Service as CService
from .structs import SvcKey

_NONZERO = re.compile(rb"[^\x00]")


def _used_dest_slots(m, limit=None):
    """(slot, Dest) of the dests array entries whose flags byte is not zero."""
    off = Dest.flags.offset
    out = []
    ksz, vsz = C.sizeof(m.key_type), C.sizeof(m.value_type)
    for kraw, vraw, n in m.raw_chunks(limit):
        for hit in _NONZERO.finditer(vraw[off::vsz]):
            i = hit.start()
            out.append((int.from_bytes(kraw[i * ksz:(i + 1) * ksz], "little"),
                        Dest.from_buffer_copy(vraw, i * vsz)))
    return out


# --- conversions ---------------------------------------------------------------

def table_full(what, capacity):
    """A map of fixed size is full: ipvsadm's ENOMEM text, and which map."""
    return XdplbError(f"{E_ENOMEM}: xdplb's {what} table is full ({capacity} {what}, "
                      f"the size its maps were compiled with)")


def _a2b(addr):
    return (C.c_uint8 * 4)(*socket.inet_aton(addr))


def _b2a(b):
    return socket.inet_ntoa(bytes(b))


def svc_key(proto, addr, port):
    return SvcKey(_a2b(addr), socket.htons(port), proto, 0)


def _key_tuple(k):
    return (k.proto, _b2a(k.addr), socket.ntohs(k.port))


_CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)


def _now_ns():
    return time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)


def _conn_timeout(proto, state, c=None):
    """Seconds an entry may idle: its own (set by the data path at each state
    change from the timeouts map, or the template's -p value), else IPVS's
    default for its state."""
    if c is not None and c.timeout:
        return c.timeout
    if proto == IPPROTO_UDP:
        return model.UDP_TIMEOUT
    if 0 <= state < len(model.TCP_TIMEOUTS):
        return model.TCP_TIMEOUTS[state]
    return model.TCP_TIMEOUTS[0]


def _sched_fields(name):
    """Service fields of a scheduler: id and sched_list()'s parameters."""
    a, b, c, f = S.LIST_PARAMS.get(name, (0, 0, 0, 0))
    return dict(sched=model.SCHED_IDS[name], list_a=a, list_b=b, list_c=c, list_flags=f)


def _dest_meta(d):
    """(addr, port, last_weight) host-order, as the mh table wants them."""
    return (int.from_bytes(bytes(d.addr), "big"), socket.ntohs(d.port), d.last_weight)


def prime_neighbour(addr):
    """Make the kernel resolve a DR real server's MAC (one empty UDP datagram
    to its discard port from a throwaway socket); errors are ignored."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(b"", (addr, 9))
    except OSError:
        pass


class Control:
    """Configuration and listing of one xdplb state (one netns)."""

    def __init__(self, st):
        self.st = st
        self.folder = st.folder
        # The pinned maps' own sizes: a state compiled with -D overrides
        # (benchmarks, tests) differs from bpf/xdplb.h's defaults.
        self.max_services = st.services.max_entries
        self.max_dests = st.dests.max_entries
        self.max_ring = st.sched_ring.max_entries

    @classmethod
    def open(cls, create=False, folder=None):
        """The state of this netns; None when it does not exist and not create."""
        try:
            folder = folder or statemod.pin_dir(create)
        except statemod.StateError as e:
            if create or isinstance(e, statemod.BadPinDir):
                raise
            return None
        if not create and not os.path.exists(os.path.join(folder, statemod.PROG_PIN)):
            statemod.reap(folder)   # what a killed create left
            return None
        ctl = cls(statemod.State.open(create=create, folder=folder))
        try:
            journal.settle(ctl.st)  # redo a change a killed writer left half-applied
        except BaseException:
            ctl.close()
            raise
        return ctl

    def close(self):
        self.st.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def locked(self):
        """The state lock (after redoing a killed writer's journal)."""
        return journal.locked(self.st)

    def transaction(self):
        """The state lock, with the block's map writes journaled and applied
        at its end, all or (if it raises) none; a kill -9 at any point leaves
        either nothing or a journal the next command redoes (xdplb/journal.py)."""
        return journal.transaction(self.st)

    # --- raw reads ----------------------------------------------------------------

    def _services_raw(self):
        """{key tuple: (SvcKey, ctypes Service)}"""
        out = {}
        for kb, vb in self.st.services.raw_items():
            k = SvcKey.from_buffer_copy(kb)
            out[_key_tuple(k)] = (k, CService.from_buffer_copy(vb))
        return out

    def _dests_raw(self, services=None):
        """{slot: ctypes Dest} of every used destination slot.

        dests[0] is never a destination; its seq field keeps the highest slot
        ever allocated (control-plane private, reset by flush), so only
        slots up to it are read instead of the whole array.
        """
        hint = self.st.dests.get(0)
        hw = hint.seq if hint is not None else 0
        if hw == 0 and services is not None and not services:
            return {}
        return dict(_used_dest_slots(self.st.dests, hw + 1 if hw else None))

    def _raise_high_water(self, slot, seq=0):
        """dests[0] (never a destination) keeps, control-plane private, the
        highest slot ever allocated (seq) and the last destination seq handed
        out (u_threshold): seqs are never reused, even after -C."""
        hint = self.st.dests.get(0) or Dest()
        if hint.seq < slot or hint.u_threshold < seq:
            self.st.dests.put(0, Dest(seq=max(hint.seq, slot), u_threshold=max(hint.u_threshold, seq)))

    def _next_seq(self, dests):
        hint = self.st.dests.get(0)
        last = hint.u_threshold if hint is not None else 0
        return max([last] + [d.seq for d in dests.values()]) + 1

    @staticmethod
    def _svc_dests(dests, svc_slot):
        """[(slot, Dest)] of one service in kernel list order (newest first)."""
        ds = [(s, d) for s, d in dests.items() if d.svc_slot == svc_slot]
        ds.sort(key=lambda sd: sd[1].seq, reverse=True)
        return ds

    @staticmethod
    def _sched_list(ds):
        return [(s, d.weight) for s, d in ds]

    def _get_svc(self, services, key, missing):
        try:
            return services[key]
        except KeyError:
            raise XdplbError(missing) from None

    # --- the schedule ---------------------------------------------------------------

    def _current_state(self, csvc, ds_list):
        """The kernel scheduler state now: replay the live ring's picks."""
        name = model.SCHED_NAMES[csvc.sched]
        if S.kind(name) != "ring":
            return S.SchedState()
        start = S.SchedState(csvc.sched_cl, csvc.sched_cw)
        pos = self.st.sched_pos.get(csvc.slot)
        n = (pos.pos if pos else 0) - csvc.ring_base
        if csvc.ring_len == 0 or n <= 0:
            return start
        return S.state_after(name, ds_list, start, n)

    def _ring_room(self, services, slot):
        used = sum(v.ring_len for _, v in services.values())
        return self.max_ring - used

    def _plan_ring(self, services, csvc, sched_name, ds_list, state, meta=None):
        """What sched_ring holds for the service: rr/wrr's ring, sh/dh/mh's
        table (indexed by hash, no cycle), nothing for the list schedulers."""
        kind = S.kind(sched_name)
        if kind == "list":
            if len(ds_list) > XDPLB_LIST_MAX:
                raise XdplbError(
                    f"xdplb: the {sched_name} scheduler considers at most {XDPLB_LIST_MAX} "
                    f"real servers per service; this service would have {len(ds_list)}")
            return S.Ring((), 0)
        if kind == "table":
            table = S.table_for(sched_name, ds_list, meta)
            room = self._ring_room(services, csvc.slot)
            if len(table) > room:
                raise XdplbError(
                    f"xdplb: the {sched_name} table of this service needs {len(table)} "
                    f"ring entries but only {max(room, 0)} of {self.max_ring} are free")
            return S.Ring(tuple(table), len(table))
        try:
            return S.build_ring(sched_name, ds_list, state, self._ring_room(services, csvc.slot))
        except S.RingTooLarge as e:
            raise XdplbError(
                f"xdplb: the {sched_name} schedule of this service needs {e.needed} ring "
                f"entries but only {max(e.room, 0)} of {self.max_ring} are free; use smaller "
                f"weights or weights with a common divisor") from None

    def _write_list(self, svc_slot, ds_list):
        """svc_dests: the first XDPLB_LIST_MAX destinations in kernel order
        (the list schedulers refuse more), zero-terminated."""
        v = SvcDests(n=min(len(ds_list), XDPLB_LIST_MAX))
        for i, (slot, w) in enumerate(ds_list[:XDPLB_LIST_MAX]):
            v.d[i].slot, v.d[i].weight = slot, w
        self.st.svc_dests.put(svc_slot, v)

    def _switch(self, key, csvc, sched_id, ring, state, pos=None, dlist=None, **fields):
        """Write ring under the other generation, switch the service, drop the old one."""
        if dlist is not None:
            self._write_list(csvc.slot, dlist)
        old_gen, old_len = csvc.ring_gen, csvc.ring_len
        new = CService.from_buffer_copy(bytes(csvc))
        new.ring_gen = old_gen ^ XDPLB_RING_GEN_BIT
        for i, slot in enumerate(ring.entries):
            self.st.sched_ring.put(RingKey(csvc.slot, new.ring_gen | i), C.c_uint32(slot))
        if pos is None:
            p = self.st.sched_pos.get(csvc.slot)
            pos = p.pos if p else 0
        new.ring_base = pos
        new.ring_len = len(ring)
        new.ring_prefix = ring.prefix
        new.sched_cl = state.cl
        new.sched_cw = state.cw
        for f, v in _sched_fields(model.SCHED_NAMES[sched_id]).items():
            setattr(new, f, v)
        for f, v in fields.items():
            setattr(new, f, v)
        self.st.services.put(key, new)
        for i in range(old_len):
            self.st.sched_ring.delete(RingKey(csvc.slot, old_gen | i))
        return new

    def _reschedule(self, services, key, csvc, ds_list_before, hook, ds_list_after, meta=None):
        """Replay to now, apply the kernel hook, install the new ring."""
        name = model.SCHED_NAMES[csvc.sched]
        p = self.st.sched_pos.get(csvc.slot)
        pos = p.pos if p else 0
        state = self._current_state(csvc, ds_list_before)
        state = hook(name, state)
        ring = self._plan_ring(services, csvc, name, ds_list_after, state, meta)
        return name, ring, state, pos

    @staticmethod
    def _meta(ds, extra=None):
        meta = {slot: _dest_meta(d) for slot, d in ds}
        if extra:
            meta.update(extra)
        return meta

    # --- services ----------------------------------------------------------------------

    def add_service(self, svc: Service):
        with self.transaction():
            services = self._services_raw()
            if svc.key in services and svc.af == AF_INET and not svc.fwmark:
                raise XdplbError(E_SVC_EXISTS)
            model.check_service(svc)
            used = {v.slot for _, v in services.values()}
            slot = next((i for i in range(self.max_services) if i not in used), None)
            if slot is None:
                raise table_full("services", self.max_services)
            seq = max((v.seq for _, v in services.values()), default=0) + 1
            st = S.init_state(svc.sched, [])
            self.st.svc_stats.zero(slot)
            self.st.sched_pos.put(slot, SchedPos(0))
            c = CService(slot=slot, seq=seq, flags=svc.flags, timeout=svc.timeout,
                         netmask=_a2b(svc.netmask), sched_cl=st.cl, sched_cw=st.cw,
                         **_sched_fields(svc.sched))
            self._write_list(slot, [])
            if not services:   # the kernel's sysctl default, conn_reuse_mode = 1
                self.st.timeouts.put(XDPLB_CFG_CONN_REUSE, C.c_uint32(1))
            self.st.services.put(svc_key(*svc.key), c, bpfsys.BPF_NOEXIST)

    def edit_service(self, svc: Service):
        with self.transaction():
            services = self._services_raw()
            if svc.af != AF_INET or svc.fwmark or svc.key not in services:
                model.check_service_kind(svc.af, svc.proto, svc.fwmark)
                raise XdplbError(E_NO_SERVICE)
            model.check_service(svc)
            key, csvc = services[svc.key]
            fields = dict(flags=svc.flags, timeout=svc.timeout, netmask=_a2b(svc.netmask))
            new_id = model.SCHED_IDS[svc.sched]
            if new_id == csvc.sched:
                new = CService.from_buffer_copy(bytes(csvc))
                for f, v in fields.items():
                    setattr(new, f, v)
                self.st.services.put(key, new)
                return
            ds = self._svc_dests(self._dests_raw(), csvc.slot)
            ds_list = self._sched_list(ds)
            state = S.init_state(svc.sched, ds_list)
            ring = self._plan_ring(services, csvc, svc.sched, ds_list, state, self._meta(ds))
            self._switch(key, csvc, new_id, ring, state, dlist=ds_list, **fields)

    def delete_service(self, proto, addr, port):
        with self.transaction():
            services = self._services_raw()
            key, csvc = self._get_svc(services, (proto, addr, port), E_NO_SERVICE)
            self._remove_service(key, csvc, self._dests_raw())

    def _remove_service(self, key, csvc, dests):
        self.st.services.delete(key)
        for i in range(csvc.ring_len):
            self.st.sched_ring.delete(RingKey(csvc.slot, csvc.ring_gen | i))
        for slot, d in self._svc_dests(dests, csvc.slot):
            self.st.dests.put(slot, Dest())
            self.st.dest_stats.zero(slot)
            self.st.dest_conns.put(slot, DestConns())
        self.st.svc_stats.zero(csvc.slot)
        self.st.sched_pos.put(csvc.slot, SchedPos(0))
        self.st.svc_dests.put(csvc.slot, SvcDests())

    def flush(self):
        with self.transaction():
            services = self._services_raw()
            dests = self._dests_raw()
            for key, csvc in services.values():
                self._remove_service(key, csvc, dests)
            # Leftovers of an interrupted writer, if any.
            for slot, d in dests.items():
                self.st.dests.put(slot, Dest())
                self.st.dest_stats.zero(slot)
            for kb, _ in self.st.sched_ring.raw_items():
                self.st.sched_ring.delete(RingKey.from_buffer_copy(kb))
            self.st.lblc.clear()
            hint = self.st.dests.get(0)
            self.st.dests.put(0, Dest(u_threshold=hint.u_threshold if hint else 0))

    # --- destinations ---------------------------------------------------------------

    @staticmethod
    def _dest_port(svc_port, dest):
        # ipvsadm forces the real port to the virtual port for DR (and TUN).
        return svc_port if dest.fwd == IP_VS_CONN_F_DROUTE else dest.port

    @staticmethod
    def _find_dest(ds, addr, port):
        a = socket.inet_aton(addr)
        for slot, d in ds:
            if bytes(d.addr) == a and socket.ntohs(d.port) == port:
                return slot, d
        return None, None

    def _lookup_for_dest(self, svc_k):
        proto, addr, port = svc_k
        services = self._services_raw()
        if (proto, addr, port) not in services:
            raise XdplbError(E_SVC_NOT_DEFINED)
        key, csvc = services[(proto, addr, port)]
        dests = self._dests_raw(services)
        return services, key, csvc, dests, self._svc_dests(dests, csvc.slot)

    def add_dest(self, svc_k, dest: Destination):
        """svc_k = (proto, addr, port) of the service."""
        with self.transaction():
            services, key, csvc, dests, ds = self._lookup_for_dest(svc_k)
            model.check_dest(dest)
            port = self._dest_port(svc_k[2], dest)
            if self._find_dest(ds, dest.addr, port)[0] is not None:
                raise XdplbError(E_DEST_EXISTS)
            slot = next((i for i in range(1, self.max_dests) if i not in dests), None)
            if slot is None:
                raise table_full("destinations", self.max_dests - 1)
            seq = self._next_seq(dests)
            before = self._sched_list(ds)
            after = [(slot, dest.weight)] + before
            new = Dest(_a2b(dest.addr), socket.htons(port), dest.fwd, XDPLB_DEST_F_AVAILABLE,
                       csvc.slot, seq, dest.weight, dest.u_threshold, dest.l_threshold,
                       dest.weight)
            name, ring, state, pos = self._reschedule(
                services, key, csvc, before, lambda n, s: S.on_add(n, after, s), after,
                self._meta(ds, {slot: _dest_meta(new)}))
            self._raise_high_water(slot, seq)
            self.st.dest_stats.zero(slot)
            self.st.dest_conns.put(slot, DestConns())
            self.st.dests.put(slot, new)
            self._switch(key, csvc, csvc.sched, ring, state, pos, dlist=after)
        if dest.fwd == IP_VS_CONN_F_DROUTE:
            prime_neighbour(dest.addr)

    def edit_dest(self, svc_k, dest: Destination):
        with self.transaction():
            services, key, csvc, dests, ds = self._lookup_for_dest(svc_k)
            model.check_dest(dest)
            port = self._dest_port(svc_k[2], dest)
            slot, old = self._find_dest(ds, dest.addr, port)
            if slot is None:
                raise XdplbError(E_NO_DEST)
            before = self._sched_list(ds)
            after = [(s, dest.weight if s == slot else w) for s, w in before]
            new = Dest.from_buffer_copy(bytes(old))
            new.fwd, new.weight = dest.fwd, dest.weight
            if dest.weight > 0:  # mh's last_weight: the latest non-zero weight
                new.last_weight = dest.weight
            # Editing clears OVERLOAD when u_threshold goes to 0 or up.
            clear = not dest.u_threshold or dest.u_threshold > old.u_threshold
            new.u_threshold, new.l_threshold = dest.u_threshold, dest.l_threshold
            name, ring, state, pos = self._reschedule(
                services, key, csvc, before, lambda n, s: S.on_edit(n, after, s), after,
                self._meta(ds, {slot: _dest_meta(new)}))
            self.st.dests.put(slot, new)
            if clear:
                dc = self.st.dest_conns.get(slot)
                if dc is not None and dc.overload:
                    dc.overload = 0
                    self.st.dest_conns.put(slot, dc)
            self._switch(key, csvc, csvc.sched, ring, state, pos, dlist=after)
        if dest.fwd == IP_VS_CONN_F_DROUTE:
            prime_neighbour(dest.addr)

    def delete_dest(self, svc_k, addr, port):
        with self.transaction():
            services, key, csvc, dests, ds = self._lookup_for_dest(svc_k)
            slot, _ = self._find_dest(ds, addr, port)
            if slot is None:
                raise XdplbError(E_NO_DEST)
            before = self._sched_list(ds)
            after = [(s, w) for s, w in before if s != slot]
            name, ring, state, pos = self._reschedule(
                services, key, csvc, before, lambda n, s: S.on_delete(n, before, slot, s), after,
                self._meta([(s, d) for s, d in ds if s != slot]))
            self._switch(key, csvc, csvc.sched, ring, state, pos, dlist=after)
            self.st.dests.put(slot, Dest())
            self.st.dest_stats.zero(slot)
            self.st.dest_conns.put(slot, DestConns())

    # --- counters ----------------------------------------------------------------------

    def zero(self, svc_k=None):
        """-Z: every service and destination, or one service and its destinations."""
        with self.transaction():
            services = self._services_raw()
            if svc_k is not None:
                key, csvc = self._get_svc(services, tuple(svc_k), E_NO_SERVICE)
                targets = [csvc]
            else:
                targets = [v for _, v in services.values()]
            dests = self._dests_raw()
            for csvc in targets:
                self.st.svc_stats.zero(csvc.slot)
                for slot, _ in self._svc_dests(dests, csvc.slot):
                    self.st.dest_stats.zero(slot)

    def _stats(self, m, slot):
        s = m.sum(slot)
        return Stats(s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)

    def _live_entries(self, dests=None, now=None):
        """[(ConnKey, Conn, alive)] of every IN and TEMPLATE entry; alive is
        False past its timeout or when its destination is gone."""
        dests = self._dests_raw() if dests is None else dests
        now = _now_ns() if now is None else now
        out = []
        for kb, vb in self.st.conn_table.raw_items():
            c = Conn.from_buffer_copy(vb)
            if c.dir == XDPLB_DIR_OUT:
                continue
            k = ConnKey.from_buffer_copy(kb)
            alive = c.last_seen != 0 and (   # 0: expired by the data path
                now - c.last_seen <= _conn_timeout(k.proto, c.state, c) * 1_000_000_000)
            d = dests.get(c.dest_slot)
            if d is None or d.svc_slot != c.svc_slot or (c.dest_seq and c.dest_seq != d.seq) \
                    or (c.dir == XDPLB_DIR_IN and bytes(d.addr) != bytes(c.addr)):
                alive = False
            out.append((k, c, alive))
        return out

    def conn_counts(self, dests=None, entries=None):
        """{dest slot: [active, inactive, persist]} from the connection table
        (entries younger than their timeout, as IPVS counts them)."""
        entries = self._live_entries(dests) if entries is None else entries
        out = {}
        for k, c, alive in entries:
            if not alive:
                continue
            ac = out.setdefault(c.dest_slot, [0, 0, 0])
            if c.dir == XDPLB_DIR_TEMPLATE:
                ac[2] += 1
            elif k.proto == IPPROTO_TCP and c.state in model.TCP_ACTIVE_STATES:
                ac[0] += 1
            else:
                ac[1] += 1
        return out

    def sweep(self):
        """What the kernel's connection timers do: delete every expired entry
        (with the reply entry of a Masq connection), keep a template alive
        while connections it controls live (re-armed 60 s, as expire_later),
        then reconcile the data path's live counts (dest_conns) with the
        table: entries the LRU evicted, or the sweep deleted, stop counting,
        and OVERLOAD is cleared below the lower threshold. Returns the number
        of entries deleted."""
        with self.locked():
            dests = self._dests_raw()
            now = _now_ns()
            entries = self._live_entries(dests, now)
            controlled = {}
            for k, c, alive in entries:
                if alive and c.dir == XDPLB_DIR_IN:
                    controlled.setdefault((c.svc_slot, c.dest_slot), []).append(k.saddr)
            deleted = 0
            keep = []
            masks = self._template_masks()
            for k, c, alive in entries:
                if not alive and c.dir == XDPLB_DIR_TEMPLATE and c.last_seen and \
                        (c.svc_slot, c.dest_slot) in controlled:
                    svc_mask = masks.get(c.svc_slot)
                    if svc_mask is not None and any(
                            (int.from_bytes(bytes(a), "big") & svc_mask) ==
                            int.from_bytes(bytes(k.saddr), "big")
                            for a in controlled[(c.svc_slot, c.dest_slot)]):
                        c.last_seen = now - max(c.timeout - 60, 0) * 1_000_000_000
                        self.st.conn_table.put(k, c)
                        keep.append((k, c, True))
                        continue
                if alive:
                    keep.append((k, c, alive))
                    continue
                if c.dir == XDPLB_DIR_IN and c.fwd == IP_VS_CONN_F_MASQ:
                    ok = ConnKey(c.addr, k.saddr, c.port, k.sport, k.proto)
                    self.st.conn_table.delete(ok)
                self.st.conn_table.delete(k)
                deleted += 1
            # reply entries whose client entry is gone (evicted or deleted)
            live_in = {bytes(k) for k, c, alive in keep if c.dir == XDPLB_DIR_IN}
            for kb, vb in self.st.conn_table.raw_items():
                c = Conn.from_buffer_copy(vb)
                if c.dir != XDPLB_DIR_OUT:
                    continue
                k = ConnKey.from_buffer_copy(kb)
                ik = ConnKey(k.daddr, c.addr, k.dport, c.port, k.proto)
                # (looked up again: the data path may have made it since the scan)
                if bytes(ik) not in live_in and self.st.conn_table.get(ik) is None:
                    self.st.conn_table.delete(k)
            counts = self.conn_counts(dests, keep)
            for slot, d in dests.items():
                want = counts.get(slot, (0, 0, 0))
                dc = self.st.dest_conns.get(slot)
                if dc is None:
                    continue
                have = (dc.active, dc.inactive, dc.persist)
                over = dc.overload
                if over:
                    total = want[0] + want[1]
                    if d.l_threshold:
                        over = total >= d.l_threshold
                    elif d.u_threshold:
                        over = total * 4 >= d.u_threshold * 3
                    else:
                        over = 0
                if tuple(have) != tuple(want) or over != dc.overload:
                    self.st.dest_conns.put(slot, DestConns(*want, int(bool(over))))
            return deleted

    def sweep_forever(self, interval=1.0, stop=None):
        """The daemon's loop (`xdplb daemon`): a sweep every interval seconds
        until stop() is true, so live counts drop on time without listings."""
        while stop is None or not stop():
            try:
                self.sweep()
            except OSError:
                pass
            time.sleep(interval)

    def _template_masks(self):
        return {c.slot: int.from_bytes(bytes(c.netmask), "big")
                for _, c in self._services_raw().values()}

    def connections(self):
        """Entries for `-L -c` (see ipvsfmt.conn_listing), templates included
        (client port 0, state NONE, as /proc/net/ip_vs_conn shows them)."""
        now = _now_ns()
        out = []
        for k, c, alive in self._live_entries(now=now):
            if not alive:
                continue
            tmo = _conn_timeout(k.proto, c.state, c)
            age = (now - c.last_seen) // 1_000_000_000
            pname = "UDP" if k.proto == IPPROTO_UDP else "TCP"
            if c.dir == XDPLB_DIR_TEMPLATE:
                sname = "NONE"
            elif k.proto == IPPROTO_UDP:
                sname = "UDP"
            else:
                sname = (model.TCP_STATE_NAMES[c.state]
                         if c.state < len(model.TCP_STATE_NAMES) else "NONE")
            out.append((pname, AF_INET, _b2a(k.saddr), socket.ntohs(k.sport), _b2a(k.daddr),
                        socket.ntohs(k.dport), _b2a(c.addr), socket.ntohs(c.port), sname,
                        max(tmo - age, 0), "", ""))
        return out

    # --- timeouts -------------------------------------------------------------------

    def timeouts(self):
        """(tcp, tcpfin, udp) as `--timeout` shows them."""
        def get(i, default):
            v = self.st.timeouts.get(i)
            return v.value if v is not None and v.value else default
        return (get(1, model.TCP_TIMEOUTS[1]), get(4, model.TCP_TIMEOUTS[4]),
                get(XDPLB_TMO_UDP, model.UDP_TIMEOUT))

    def set_timeouts(self, tcp, tcpfin, udp):
        """--set: TCP ESTABLISHED, TCP FIN_WAIT, UDP; 0 leaves one unchanged.
        Entries take a new value at their next state change or packet."""
        with self.transaction():
            for idx, v in ((1, tcp), (4, tcpfin), (XDPLB_TMO_UDP, udp)):
                if v:
                    self.st.timeouts.put(idx, C.c_uint32(v))

    # --- listing --------------------------------------------------------------------

    def services(self, svc_k=None, stats=False, rate=False, counts=True):
        """Services (creation order) with their destinations (kernel list order).

        stats: fill the counters. rate: there is no kernel rate estimator; the
        counters are sampled twice one second apart and the per-second
        differences are reported (so this call takes one second).
        counts: fill ActiveConn/InActConn from the connection table.
        """
        services = self._services_raw()
        if svc_k is not None:
            if tuple(svc_k) not in services:
                raise XdplbError(E_NO_SERVICE, 1)
            services = {tuple(svc_k): services[tuple(svc_k)]}
        dests = self._dests_raw(services)
        cc = self.conn_counts(dests) if counts else {}
        out = []
        for (proto, addr, port), (_, c) in sorted(services.items(), key=lambda kv: kv[1][1].seq):
            svc = Service(proto=proto, addr=addr, port=port, sched=model.SCHED_NAMES.get(
                c.sched, "?"), flags=c.flags, timeout=c.timeout, netmask=_b2a(c.netmask),
                slot=c.slot, seq=c.seq)
            if stats or rate:
                svc.stats = self._stats(self.st.svc_stats, c.slot)
            for slot, d in self._svc_dests(dests, c.slot):
                a, i, pc = cc.get(slot, (0, 0, 0))
                dst = Destination(addr=_b2a(d.addr), port=socket.ntohs(d.port), fwd=d.fwd,
                                  weight=d.weight, u_threshold=d.u_threshold,
                                  l_threshold=d.l_threshold, active=a, inactive=i,
                                  persist=pc, slot=slot, seq=d.seq)
                if stats or rate:
                    dst.stats = self._stats(self.st.dest_stats, slot)
                svc.dests.append(dst)
            out.append(svc)
        if rate:
            time.sleep(1.0)
            for svc in out:
                later = self._stats(self.st.svc_stats, svc.slot)
                svc.rate = Stats(*(max(b - a, 0) for a, b in zip(svc.stats, later)))
                svc.stats = later
                for d in svc.dests:
                    later = self._stats(self.st.dest_stats, d.slot)
                    d.rate = Stats(*(max(b - a, 0) for a, b in zip(d.stats, later)))
                    d.stats = later
        return out

    def get_service(self, proto, addr, port, **kw):
        return self.services((proto, addr, port), **kw)[0]

    def save(self, numeric=False):
        """`ipvsadm -S [-n]` text of the current rules."""
        fmt = ipvsfmt.FMT_RULE | (ipvsfmt.FMT_NUMERIC if numeric else 0)
        return ipvsfmt.list_all(self.services(counts=False), fmt)

    def snapshot(self):
        """Every non-zero entry of every pinned map (tests use it to prove that a
        refused command changed nothing)."""
        from . import maps
        hint = self.st.dests.get(0)
        # Destination slots are only ever allocated up to the high-water mark
        # kept in dests[0] (which is part of the snapshot), plus a margin.
        dlimit = max((hint.seq if hint else 0) + 1, 1024)
        snap = {}
        for name in maps.MAPS:
            m = getattr(self.st, name)
            limit = dlimit if name in ("dests", "dest_stats", "dest_conns") else None
            snap[name] = sorted((k, v) for k, v in m.raw_items(limit) if any(v))
        return snap

    # --- restore: many -A / -a lines at once ------------------------------------------

    def restore(self, lines):
        """Run -A / -a lines as one transaction (xdplbadm -R).

        lines: [("svc", Service) | ("dest", (proto, addr, port), Destination) |
        ("err", XdplbError)]. Every line is first run against an in-memory copy
        of the tables, with the checks (and the order of checks) of
        add_service / add_dest, so each refusal is the one the kernel would
        give at that point of the sequence; then the net result is written
        under one lock, each touched service's schedule computed once from its
        final destination list and scheduler state (the same maps as running
        the lines one by one). Returns one XdplbError or None per line.
        """
        with self.transaction():
            sim = _RestoreSim(self)
            results = [sim.run(line) for line in lines]
            sim.apply()
        return results, sim.primed


class _SimSvc:
    __slots__ = ("key", "orig", "c", "new", "ds", "addrs", "state", "switches", "ring_len",
                 "name")


class _RestoreSim:
    """The tables as the lines of a restore see them, and their net effect."""

    def __init__(self, ctl):
        self.ctl = ctl
        st = ctl.st
        self.services = ctl._services_raw()            # {key tuple: (SvcKey, CService)}
        self.sim = {}                                  # key tuple -> _SimSvc (touched)
        used = {c.slot for _, c in self.services.values()}
        self.svc_free = _SlotPool(used, 0, ctl.max_services)
        self.svc_seq = max((c.seq for _, c in self.services.values()), default=0)
        self.nservices = len(self.services)
        self.dests = ctl._dests_raw(self.services)
        self.by_svc = None
        hint = st.dests.get(0)
        self.hw_slot = hint.seq if hint is not None else 0
        self.hw_seq0 = hint.u_threshold if hint is not None else 0
        self.last_seq = max([self.hw_seq0] + [d.seq for d in self.dests.values()])
        self.hw_seq = self.hw_seq0
        self.hw_slot0 = self.hw_slot
        self.dest_free = _SlotPool(set(self.dests) | {0}, 1, ctl.max_dests)
        self.ring_used = sum(c.ring_len for _, c in self.services.values())
        self.new_services = []                         # _SimSvc in creation order
        self.new_dests = []                            # (slot, Dest)
        self.set_reuse = False
        self.primed = []
        self._ring_cache = {}

    # -- lines --

    def run(self, line):
        try:
            if line[0] == "err":
                raise line[1]
            if line[0] == "svc":
                self._add_service(line[1])
            else:
                self._add_dest(line[1], line[2])
        except XdplbError as e:
            return e
        return None

    def _add_service(self, svc):
        model.check_service(svc)
        if svc.key in self.services or svc.key in self.sim and self.sim[svc.key].new:
            raise XdplbError(E_SVC_EXISTS)
        slot = self.svc_free.peek()
        if slot is None:
            raise table_full("services", self.ctl.max_services)
        self.svc_free.take()
        self.svc_seq += 1
        st = S.init_state(svc.sched, [])
        c = CService(slot=slot, seq=self.svc_seq, flags=svc.flags, timeout=svc.timeout,
                     netmask=_a2b(svc.netmask), sched_cl=st.cl, sched_cw=st.cw,
                     **_sched_fields(svc.sched))
        if self.nservices == 0:
            self.set_reuse = True
        self.nservices += 1
        s = _SimSvc()
        s.key, s.orig, s.c, s.new = svc_key(*svc.key), None, c, True
        s.ds, s.addrs, s.state, s.switches, s.ring_len = [], set(), st, 0, 0
        s.name = svc.sched
        self.sim[svc.key] = s
        self.new_services.append(s)

    def _touch(self, k):
        s = self.sim.get(k)
        if s is not None:
            return s
        if k not in self.services:
            return None
        key, csvc = self.services[k]
        if self.by_svc is None:
            self.by_svc = {}
            for slot, d in self.dests.items():
                self.by_svc.setdefault(d.svc_slot, []).append((slot, d))
        ds = sorted(self.by_svc.get(csvc.slot, []), key=lambda sd: sd[1].seq, reverse=True)
        s = _SimSvc()
        s.key, s.orig, s.c, s.new = key, csvc, csvc, False
        s.ds = ds
        s.addrs = {(bytes(d.addr), d.port) for _, d in ds}
        s.name = model.SCHED_NAMES[csvc.sched]
        s.state = None          # replayed from the live ring at the first change
        s.switches, s.ring_len = 0, csvc.ring_len
        self.sim[k] = s
        return s

    def _add_dest(self, svc_k, dest):
        s = self._touch(tuple(svc_k))
        if s is None:
            raise XdplbError(E_SVC_NOT_DEFINED)
        model.check_dest(dest)
        port = Control._dest_port(svc_k[2], dest)
        ident = (socket.inet_aton(dest.addr), socket.htons(port))
        if ident in s.addrs:
            raise XdplbError(E_DEST_EXISTS)
        slot = self.dest_free.peek()
        if slot is None:
            raise table_full("destinations", self.ctl.max_dests - 1)
        seq = self.last_seq + 1
        before = Control._sched_list(s.ds)
        after = [(slot, dest.weight)] + before
        new = Dest(_a2b(dest.addr), socket.htons(port), dest.fwd, XDPLB_DEST_F_AVAILABLE,
                   s.c.slot, seq, dest.weight, dest.u_threshold, dest.l_threshold, dest.weight)
        state = s.state
        if state is None:
            state = self.ctl._current_state(s.orig, before)
        state = S.on_add(s.name, after, state)
        ring_len = self._plan_len(s, after, [(slot, new)] + s.ds, state)
        # committed: the line's writes
        self.dest_free.take()
        self.last_seq = seq
        self.hw_slot, self.hw_seq = max(self.hw_slot, slot), max(self.hw_seq, seq)
        s.ds.insert(0, (slot, new))
        s.addrs.add(ident)
        s.state = state
        self.ring_used += ring_len - s.ring_len
        s.ring_len = ring_len
        s.switches += 1
        self.new_dests.append((slot, new))
        if dest.fwd == IP_VS_CONN_F_DROUTE:
            self.primed.append(dest.addr)

    def _plan_len(self, s, dlist, ds, state):
        """Length of the schedule _plan_ring would build (its refusals too)."""
        name = s.name
        room = self.ctl.max_ring - self.ring_used
        kind = S.kind(name)
        if kind == "list":
            if len(dlist) > XDPLB_LIST_MAX:
                raise XdplbError(
                    f"xdplb: the {name} scheduler considers at most {XDPLB_LIST_MAX} "
                    f"real servers per service; this service would have {len(dlist)}")
            return 0
        if kind == "table":
            if name == "mh":
                n = XDPLB_MH_TAB_SIZE if any(d.last_weight for _, d in ds) else 0
            else:
                n = XDPLB_SH_TAB_SIZE if dlist else 0
            if n > room:
                raise XdplbError(
                    f"xdplb: the {name} table of this service needs {n} "
                    f"ring entries but only {max(room, 0)} of {self.ctl.max_ring} are free")
            return n
        # rr / wrr: the ring's shape only depends on the weights and the state's
        # list position, so it is computed once per shape.
        idx = -1 if state.cl == S.HEAD else S._index(dlist, state.cl)
        shape = (name, tuple([w for _, w in dlist]), idx, state.cw)
        got = self._ring_cache.get(shape)
        if got is None:
            norm = [(i + 1, w) for i, (_, w) in enumerate(dlist)]
            nstate = S.SchedState(S.HEAD if idx < 0 else idx + 1, state.cw)
            need = S.cycle_length(name, norm)
            try:
                picks, _, _ = S.simulate(name, norm, nstate, limit=2 * self.ctl.max_ring + 2)
                length = len(S.build_ring(name, norm, nstate, self.ctl.max_ring))
                got = (need, len(picks), length)
            except S.RingTooLarge:
                got = (need, None, None)
            self._ring_cache[shape] = got
        need, npicks, length = got
        if npicks is not None and need <= room and length <= room and npicks - 1 <= 2 * room + 2:
            return length
        # near (or past) the limit: the exact computation, with its exact refusal
        return len(self.ctl._plan_ring(self._room_services(), s.c, name, dlist, state))

    def _room_services(self):
        """A services dict whose ring_len sum is ring_used (for _ring_room)."""
        return {None: (None, CService(ring_len=max(self.ring_used, 0)))}

    # -- the net result --

    def apply(self):
        st = self.ctl.st
        if not self.new_services and not self.new_dests:
            return
        if self.hw_slot != self.hw_slot0 or self.hw_seq != self.hw_seq0:
            st.dests.put(0, Dest(seq=self.hw_slot, u_threshold=self.hw_seq))
        if self.new_dests:
            slots = [slot for slot, _ in self.new_dests]
            st.dest_stats.zero_many(slots)
            st.dest_conns.put_zeros(slots)
            st.dests.put_many(self.new_dests)
        news = self.new_services
        if news:
            st.svc_stats.zero_many(s.c.slot for s in news)
            st.sched_pos.put_zeros(s.c.slot for s in news)
        lists, rings, svcs = [], [], []
        for s in news:
            c = s.c
            if s.switches:
                ring, dlist = self._final_ring(s)
                c = self._switched(s, ring, 0, c, c.ring_gen ^ (
                    XDPLB_RING_GEN_BIT if s.switches % 2 else 0))
                for i, slot in enumerate(ring.entries):
                    rings.append((RingKey(c.slot, c.ring_gen | i), C.c_uint32(slot)))
            else:
                dlist = []
            lists.append((c.slot, _svc_dests_value(dlist)))
            svcs.append((s.key, c))
        st.svc_dests.put_many(lists)
        st.sched_ring.put_many(rings)
        if self.set_reuse:
            st.timeouts.put(XDPLB_CFG_CONN_REUSE, C.c_uint32(1))
        st.services.put_many(svcs)
        # services that existed: switched as _switch does, once (twice when the
        # line-by-line generation parity ends where it started)
        for s in self.sim.values():
            if s.new or not s.switches:
                continue
            ring, dlist = self._final_ring(s)
            p = st.sched_pos.get(s.orig.slot)
            pos = p.pos if p else 0
            st.svc_dests.put(s.orig.slot, _svc_dests_value(dlist))
            cur = s.orig
            for _ in range(2 if s.switches % 2 == 0 else 1):
                new = self._switched(s, ring, pos, cur, cur.ring_gen ^ XDPLB_RING_GEN_BIT)
                st.sched_ring.put_many((RingKey(new.slot, new.ring_gen | i), C.c_uint32(slot))
                                       for i, slot in enumerate(ring.entries))
                st.services.put(s.key, new)
                for i in range(cur.ring_len):
                    st.sched_ring.delete(RingKey(cur.slot, cur.ring_gen | i))
                cur = new

    def _final_ring(self, s):
        dlist = Control._sched_list(s.ds)
        kind = S.kind(s.name)
        if kind == "list":
            return S.Ring((), 0), dlist
        if kind == "table":
            table = S.table_for(s.name, dlist, Control._meta(s.ds))
            return S.Ring(tuple(table), len(table)), dlist
        return S.build_ring(s.name, dlist, s.state), dlist

    def _switched(self, s, ring, pos, base, gen):
        """base with the schedule ring under generation gen (as _switch writes it)."""
        new = CService.from_buffer_copy(bytes(base))
        new.ring_gen = gen
        new.ring_base = pos
        new.ring_len = len(ring)
        new.ring_prefix = ring.prefix
        new.sched_cl, new.sched_cw = s.state.cl, s.state.cw
        for f, v in _sched_fields(s.name).items():
            setattr(new, f, v)
        return new


def _svc_dests_value(ds_list):
    v = SvcDests(n=min(len(ds_list), XDPLB_LIST_MAX))
    for i, (slot, w) in enumerate(ds_list[:XDPLB_LIST_MAX]):
        v.d[i].slot, v.d[i].weight = slot, w
    return v


class _SlotPool:
    """The lowest free slot in [lo, hi) given the used ones (sparse above the
    highest used slot)."""

    def __init__(self, used, lo, hi):
        import heapq
        self._heapq = heapq
        top = max(used, default=lo - 1)
        self.holes = [i for i in range(lo, top + 1) if i not in used]
        heapq.heapify(self.holes)
        self.fresh = max(top + 1, lo)
        self.hi = hi

    def peek(self):
        if self.holes:
            return self.holes[0]
        return self.fresh if self.fresh < self.hi else None

    def take(self):
        if self.holes:
            return self._heapq.heappop(self.holes)
        self.fresh += 1
        return self.fresh - 1


def open_control(create=False):
    """Control of this netns's state, or None if there is none and not create."""
    return Control.open(create=create)

