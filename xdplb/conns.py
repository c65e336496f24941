"""The connection table seen from the control plane: IPVS's counts, the
sweep that stands in for the kernel's connection timers, and `-L -c`.

The data path creates, moves and expires entries (bpf/xdplb.h: conns and
conns_assured, read as one maps.ConnTable; IPv6's conns6 and conns6_assured
as another, whose values are a Conn and the real server's IPv6 address). It
deletes an expired entry only when a packet finds it, and an LRU eviction tells no one, so the sweep (run
by every listing and by `xdplb daemon`) deletes what has expired and
reconciles dest_conns, the live counts the schedulers read, with the table.
The sweep is not journaled: the next one does the same again.
"""
import ctypes as C
import socket
import time

from . import model
from .keys import (b2a, dest_addr, family, key_tuple, netmask_of, rs_filter_bit, rs_key, rs_value,
                   svc_key_of)
from .model import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP
from .structs import (IP_VS_CONN_F_MASQ, XDPLB_CONN_F_FULLNAT, XDPLB_DIR_IN,
                      XDPLB_DIR_TEMPLATE, XDPLB_RS_SVC_MAX, Conn, Conn6, ConnKey, ConnKey6,
                      DestConns)

_CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)
NS = 1_000_000_000


def now_ns():
    """The data path's clock (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)


def conn_timeout(proto, state, c=None):
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


class Entry:
    """One entry of a connection table: its key (ConnKey or ConnKey6), its
    value as stored (Conn, or Conn6), c the Conn in it, the real server's
    address bytes (4 or 16: its own family's, which a mixed-family tunnel's
    entry does not hold, so live_entries sets it from the destination), and
    whether it is alive."""

    __slots__ = ("table", "k", "value", "c", "addr", "alive")

    def __init__(self, table, k, value, alive=True):
        self.table, self.k, self.value = table, k, value
        self.c = value.c if isinstance(value, Conn6) else value
        self.addr = bytes(value.addr6) if isinstance(value, Conn6) else bytes(value.addr)
        self.alive = alive

    @property
    def af(self):
        return AF_INET6 if isinstance(self.value, Conn6) else AF_INET

    def put(self):
        """Write the entry back (its c changed) where it lives."""
        self.table.put(self.k, self.value)


def live_entries(st, dests, now=None):
    """[Entry] of every entry of both families' tables (a connection or a
    template); alive is False past its timeout or when its destination is
    gone (dests: {slot: DestEntry})."""
    now = now_ns() if now is None else now
    out = []
    for table, key_type, value_type in ((st.conn_table, ConnKey, Conn),
                                        (st.conn_table6, ConnKey6, Conn6)):
        for kb, vb in table.raw_items():
            e = Entry(table, key_type.from_buffer_copy(kb), value_type.from_buffer_copy(vb))
            c = e.c
            e.alive = c.last_seen != 0 and (   # 0: expired by the data path
                now - c.last_seen <= conn_timeout(e.k.proto, c.state, c) * NS)
            d = dests.get(c.dest_slot)
            if d is None or d.svc_slot != c.svc_slot or (c.dest_seq and c.dest_seq != d.seq) \
                    or (c.dir == XDPLB_DIR_IN and not bound_to(e.value, d)):
                e.alive = False
            else:
                e.addr = dest_addr(d)
            out.append(e)
    return out


def bound_to(value, d):
    """The entry's value (Conn or Conn6) names destination d (DestEntry):
    the data path copies d's addr (an IPv6 server's fold) into every entry,
    and into an IPv6 one d's addr6 too (zero for an IPv4 server: a tunnel
    of IPv4 under an IPv6 service)."""
    if isinstance(value, Conn6):
        return bytes(value.c.addr) == bytes(d.addr) and bytes(value.addr6) == bytes(d.addr6)
    return bytes(value.addr) == bytes(d.addr)


def counts(entries):
    """{dest slot: [active, inactive, persist]} of the live entries, as IPVS
    counts them."""
    out = {}
    for e in entries:
        k, c = e.k, e.c
        if not e.alive:
            continue
        ac = out.setdefault(c.dest_slot, [0, 0, 0])
        if c.dir == XDPLB_DIR_TEMPLATE:
            ac[2] += 1
        elif k.proto == IPPROTO_TCP and c.state in model.TCP_ACTIVE_STATES:
            ac[0] += 1
        else:
            ac[1] += 1
    return out


def _controls(k, svc_mask, clients):
    """A template (client net k.saddr) still has connections from clients."""
    net = int.from_bytes(bytes(k.saddr), "big")
    return any((int.from_bytes(bytes(a), "big") & svc_mask) == net for a in clients)


def _client_mask(key, entry):
    """A persistent service's client mask as an integer: IPv4's netmask, or
    an IPv6 service's prefix length made a 128-bit mask."""
    if family(key[1]) == AF_INET6:
        plen = netmask_of(entry, AF_INET6)
        return ((1 << 128) - 1) ^ ((1 << (128 - min(plen, 128))) - 1)
    return int.from_bytes(bytes(entry.netmask), "big")


def sweep(st, dests, svcs):
    """What the kernel's connection timers do: delete every expired entry,
    keep a template alive while connections it controls live (re-armed 60 s,
    as expire_later), then make dest_conns match the table (entries the LRU
    evicted, or the sweep deleted, stop counting, and OVERLOAD is cleared
    below the lower threshold) and rs_table match what still needs it.
    dests: {slot: DestEntry}; svcs: {service key tuple: SvcEntry}. The
    caller holds the state lock. Returns the number of entries deleted."""
    masks = {e.slot: _client_mask(k, e) for k, e in svcs.items()}
    # before the entries: release_mappings
    mappings = {m.name: m.raw_items() for m in (st.fnat_out, st.fnat_out6)}
    now = now_ns()
    entries = live_entries(st, dests, now)
    controlled = {}
    for e in entries:
        if e.alive and e.c.dir == XDPLB_DIR_IN:
            controlled.setdefault((e.c.svc_slot, e.c.dest_slot), []).append(e.k.saddr)
    deleted = 0
    keep = []
    for e in entries:
        c = e.c
        if not e.alive and c.dir == XDPLB_DIR_TEMPLATE and c.last_seen and \
                (c.svc_slot, c.dest_slot) in controlled and c.svc_slot in masks and \
                _controls(e.k, masks[c.svc_slot], controlled[(c.svc_slot, c.dest_slot)]):
            c.last_seen = now - max(c.timeout - 60, 0) * NS
            e.put()
            e.alive = True
            keep.append(e)
        elif e.alive:
            keep.append(e)
        else:
            e.table.delete(e.k)
            deleted += 1
    _reconcile(st.dest_conns, dests, counts(keep))
    release_mappings(st, mappings, keep)
    rs_tables = (st.rs_table, st.rs_table6)
    prune_real_servers(rs_tables, dests, svcs, keep)
    rebuild_rs_filter(st.rs_filter, rs_tables, fullnat_servers(dests, keep))
    return deleted


def mapping_key(k, v):
    """The fnat_out (fnat_out6) key, bytes, of a source-NATed connection (its
    key k, ConnKey or ConnKey6, and value v, Conn or Conn6): its reply tuple;
    None for any other entry."""
    c = v.c if isinstance(v, Conn6) else v
    if c.dir != XDPLB_DIR_IN or not c.lport:
        return None
    if isinstance(v, Conn6):
        return bytes(ConnKey6(v.addr6, v.laddr6, c.port, c.lport, k.proto))
    return bytes(ConnKey(c.addr, c.laddr, c.port, c.lport, k.proto))


def release_mappings(st, mappings, keep):
    """Delete the fnat_out and fnat_out6 mappings (mappings: both maps' items
    read before the entries were) that no kept entry was lent: those of
    entries the sweep deleted or the data path expired, and those of entries
    an LRU eviction took, which told no one. The data path inserts a mapping
    just before its entry, in one run of the program: one read before the
    entries cannot see a mapping without its entry but by a hair, so each is
    looked up once more before it goes."""
    lent = {mapping_key(e.k, e.value): bytes(e.k) for e in keep}
    for fnat_out, table, key_type in ((st.fnat_out, st.conn_table, ConnKey),
                                      (st.fnat_out6, st.conn_table6, ConnKey6)):
        for kb, vb in mappings[fnat_out.name]:
            if lent.get(kb) == vb:
                continue
            k = key_type.from_buffer_copy(vb)
            v = table.get(k)
            c = v.c if isinstance(v, Conn6) else v
            if c is not None and c.last_seen and mapping_key(k, v) == kb:
                continue    # an entry made since the table was read
            fnat_out.delete(kb)


def fullnat_servers(dests, entries):
    """Addresses (bytes) of the full-NAT real servers and of the real servers
    of live source-NATed connections: their replies, to a local address,
    need rs_filter's bit too."""
    out = {bytes(d.addr) for d in dests.values() if d.fwd == XDPLB_CONN_F_FULLNAT}
    return out | {bytes(e.c.addr) for e in entries
                  if e.alive and mapping_key(e.k, e.value) is not None}


def prune_real_servers(rs_tables, dests, svcs, entries):
    """Take each service out of the rs_table(6) entries where neither one of
    its masquerading destinations nor a live Masq connection of it needs it
    any more: a removed (or no longer -m) destination's service stays there
    while its connections live, so their replies are still un-NATed."""
    by_slot = {e.slot: k for k, e in svcs.items()}
    need = set()
    for d in dests.values():
        k = by_slot.get(d.svc_slot)
        if k is not None and d.fwd == IP_VS_CONN_F_MASQ:
            need.add((rs_key(k, dest_addr(d), d.port), d.svc_slot))
    for e in entries:
        c = e.c
        svc_k = by_slot.get(c.svc_slot)
        if e.alive and svc_k is not None and c.dir == XDPLB_DIR_IN and \
                c.fwd == IP_VS_CONN_F_MASQ:
            need.add((rs_key(svc_k, e.addr, c.port), c.svc_slot))
    for rs_table in rs_tables:
        for kb, vb in rs_table.raw_items():
            v = rs_table.value_type.from_buffer_copy(vb)
            listed = [bytes(v.svc[i]) for i in range(min(v.n, XDPLB_RS_SVC_MAX))]
            kept = [s for s in listed
                    if (kb, getattr(svcs.get(key_tuple(svc_key_of(s))), "slot", None)) in need]
            if len(kept) == len(listed):
                continue
            if not kept:
                rs_table.delete(kb)
                continue
            rs_table.put(kb, rs_value(kept))


def _reconcile(dest_conns, dests, want_counts):
    for slot, d in dests.items():
        want = want_counts.get(slot, (0, 0, 0))
        dc = dest_conns.get(slot)
        if dc is None:
            continue
        over = dc.overload
        if over:
            total = want[0] + want[1]
            if d.l_threshold:
                over = total >= d.l_threshold
            elif d.u_threshold:
                over = total * 4 >= d.u_threshold * 3
            else:
                over = 0
        if (dc.active, dc.inactive, dc.persist) != tuple(want) or over != dc.overload:
            dest_conns.put(slot, DestConns(*want, int(bool(over))))


def listing(entries, now=None):
    """Rows of `-L -c` (see ipvsfmt.conn_listing) of the live entries, templates
    included (client port 0, state NONE, as /proc/net/ip_vs_conn shows them),
    a source-NATed one's local address and port after IPVS's columns."""
    now = now_ns() if now is None else now
    out = []
    for e in entries:
        k, c = e.k, e.c
        if not e.alive:
            continue
        tmo = conn_timeout(k.proto, c.state, c)
        age = (now - c.last_seen) // NS
        pname = "UDP" if k.proto == IPPROTO_UDP else "TCP"
        if c.dir == XDPLB_DIR_TEMPLATE:
            sname = "NONE"
        elif k.proto == IPPROTO_UDP:
            sname = "UDP"
        else:
            sname = (model.TCP_STATE_NAMES[c.state]
                     if c.state < len(model.TCP_STATE_NAMES) else "NONE")
        out.append((pname, e.af, b2a(k.saddr), socket.ntohs(k.sport), b2a(k.daddr),
                    socket.ntohs(k.dport), b2a(e.addr), socket.ntohs(c.port), sname,
                    max(tmo - age, 0), "", "", local_of(e)))
    return out


def laddr_conns(entries):
    """{(service slot, local address text): connections} of the live
    source-NATed entries (what DPVS's -G shows as CONNS)."""
    out = {}
    for e in entries:
        local = local_of(e) if e.alive else None
        if local is not None:
            k = (e.c.svc_slot, local[1])
            out[k] = out.get(k, 0) + 1
    return out


def local_of(e):
    """A source-NATed entry's (method, local address, local port) for `-L
    -c`: FullNat, or Hairpin for a Masq connection hairpin source-NATed;
    None for any other."""
    c = e.c
    if mapping_key(e.k, e.value) is None:
        return None
    laddr = e.value.laddr6 if isinstance(e.value, Conn6) else c.laddr
    return ("FullNat" if c.fwd == XDPLB_CONN_F_FULLNAT else "Hairpin", b2a(laddr),
            socket.ntohs(c.lport))


def rebuild_rs_filter(rs_filter, rs_tables, more=()):
    """Clear rs_filter's bits neither an rs_table(6) entry nor one of the
    addresses more (bytes) has any more (the data path only reads the
    filter, and rs_join sets a bit before its entry)."""
    want = {}
    addrs = [bytes(k.addr) for rs_table in rs_tables for k in rs_table.keys()]
    for addr in addrs + list(more):
        bit = rs_filter_bit(addr)
        want[bit >> 6] = want.get(bit >> 6, 0) | 1 << (bit & 63)
    for kb, vb in rs_filter.raw_items():
        word = int.from_bytes(kb, "little")
        have = int.from_bytes(vb, "little")
        if have != want.get(word, 0):
            rs_filter.put(word, C.c_uint64(want.get(word, 0)))
