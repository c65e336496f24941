"""The connection table seen from the control plane: IPVS's counts, the
sweep that stands in for the kernel's connection timers, and `-L -c`.

The data path creates, moves and expires entries (bpf/xdplb.h: conns and
conns_assured, read as one maps.ConnTable). It deletes an expired entry only
when a packet finds it, and an LRU eviction tells no one, so the sweep (run
by every listing and by `xdplb daemon`) deletes what has expired and
reconciles dest_conns, the live counts the schedulers read, with the table.
The sweep is not journaled: the next one does the same again.
"""
import ctypes as C
import socket
import time

from . import model
from .model import AF_INET, IPPROTO_TCP, IPPROTO_UDP
from .structs import (IP_VS_CONN_F_MASQ, XDPLB_DIR_IN, XDPLB_DIR_TEMPLATE, XDPLB_RS_SVC_MAX,
                      Conn, ConnKey, DestConns, RsSvcs)
from .tables import b2a, key_tuple, rs_filter_bit, rs_key

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


def live_entries(table, dests, now=None):
    """[(ConnKey, Conn, alive)] of every entry (a connection or a template);
    alive is False past its timeout or when its destination is gone (dests:
    {slot: DestEntry})."""
    now = now_ns() if now is None else now
    out = []
    for kb, vb in table.raw_items():
        c = Conn.from_buffer_copy(vb)
        k = ConnKey.from_buffer_copy(kb)
        alive = c.last_seen != 0 and (   # 0: expired by the data path
            now - c.last_seen <= conn_timeout(k.proto, c.state, c) * NS)
        d = dests.get(c.dest_slot)
        if d is None or d.svc_slot != c.svc_slot or (c.dest_seq and c.dest_seq != d.seq) \
                or (c.dir == XDPLB_DIR_IN and bytes(d.addr) != bytes(c.addr)):
            alive = False
        out.append((k, c, alive))
    return out


def counts(entries):
    """{dest slot: [active, inactive, persist]} of the live entries, as IPVS
    counts them."""
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


def _controls(k, svc_mask, clients):
    """A template (client net k.saddr) still has connections from clients."""
    net = int.from_bytes(bytes(k.saddr), "big")
    return any((int.from_bytes(bytes(a), "big") & svc_mask) == net for a in clients)


def sweep(st, dests, svcs):
    """What the kernel's connection timers do: delete every expired entry,
    keep a template alive while connections it controls live (re-armed 60 s,
    as expire_later), then make dest_conns match the table (entries the LRU
    evicted, or the sweep deleted, stop counting, and OVERLOAD is cleared
    below the lower threshold) and rs_table match what still needs it.
    dests: {slot: DestEntry}; svcs: {service key tuple: SvcEntry}. The
    caller holds the state lock. Returns the number of entries deleted."""
    masks = {e.slot: int.from_bytes(bytes(e.netmask), "big") for e in svcs.values()}
    table = st.conn_table
    now = now_ns()
    entries = live_entries(table, dests, now)
    controlled = {}
    for k, c, alive in entries:
        if alive and c.dir == XDPLB_DIR_IN:
            controlled.setdefault((c.svc_slot, c.dest_slot), []).append(k.saddr)
    deleted = 0
    keep = []
    for k, c, alive in entries:
        if not alive and c.dir == XDPLB_DIR_TEMPLATE and c.last_seen and \
                (c.svc_slot, c.dest_slot) in controlled and c.svc_slot in masks and \
                _controls(k, masks[c.svc_slot], controlled[(c.svc_slot, c.dest_slot)]):
            c.last_seen = now - max(c.timeout - 60, 0) * NS
            table.put(k, c)
            keep.append((k, c, True))
        elif alive:
            keep.append((k, c, alive))
        else:
            table.delete(k)
            deleted += 1
    _reconcile(st.dest_conns, dests, counts(keep))
    prune_real_servers(st.rs_table, dests, svcs, keep)
    rebuild_rs_filter(st.rs_filter, st.rs_table)
    return deleted


def prune_real_servers(rs_table, dests, svcs, entries):
    """Take each service out of the rs_table entries where neither one of
    its masquerading destinations nor a live Masq connection of it needs it
    any more: a removed (or no longer -m) destination's service stays there
    while its connections live, so their replies are still un-NATed."""
    by_slot = {e.slot: k for k, e in svcs.items()}
    need = set()
    for d in dests.values():
        k = by_slot.get(d.svc_slot)
        if k is not None and d.fwd == IP_VS_CONN_F_MASQ:
            need.add((rs_key(k, bytes(d.addr), d.port), d.svc_slot))
    for k, c, alive in entries:
        svc_k = by_slot.get(c.svc_slot)
        if alive and svc_k is not None and c.dir == XDPLB_DIR_IN and c.fwd == IP_VS_CONN_F_MASQ:
            need.add((rs_key(svc_k, bytes(c.addr), c.port), c.svc_slot))
    for kb, vb in rs_table.raw_items():
        v = RsSvcs.from_buffer_copy(vb)
        listed = [v.svc[i] for i in range(min(v.n, XDPLB_RS_SVC_MAX))]
        kept = [s for s in listed
                if (kb, getattr(svcs.get(key_tuple(s)), "slot", None)) in need]
        if len(kept) == len(listed):
            continue
        if not kept:
            rs_table.delete(kb)
            continue
        out = RsSvcs(n=len(kept))
        for i, s in enumerate(kept):
            out.svc[i] = s
        rs_table.put(kb, out)


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
    included (client port 0, state NONE, as /proc/net/ip_vs_conn shows them)."""
    now = now_ns() if now is None else now
    out = []
    for k, c, alive in entries:
        if not alive:
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
        out.append((pname, AF_INET, b2a(k.saddr), socket.ntohs(k.sport), b2a(k.daddr),
                    socket.ntohs(k.dport), b2a(c.addr), socket.ntohs(c.port), sname,
                    max(tmo - age, 0), "", ""))
    return out


def rebuild_rs_filter(rs_filter, rs_table):
    """Clear rs_filter's bits no rs_table entry has any more (the data path
    only reads the filter, and rs_join sets a bit before its entry)."""
    want = {}
    for kb in rs_table.keys():
        bit = rs_filter_bit(bytes(kb.addr))
        want[bit >> 6] = want.get(bit >> 6, 0) | 1 << (bit & 63)
    for kb, vb in rs_filter.raw_items():
        word = int.from_bytes(kb, "little")
        have = int.from_bytes(vb, "little")
        if have != want.get(word, 0):
            rs_filter.put(word, C.c_uint64(want.get(word, 0)))
