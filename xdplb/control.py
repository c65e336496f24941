"""The one control API of xdplb: the CLI, the lab, the daemon and the tests call it.

A thin facade over one netns's state (xdplb/state.py):

* a configuration change is planned (xdplb/config.py: the checks, refusals
  and writes of each ipvsadm operation) against an in-memory copy of the
  maps (xdplb/tables.py) and applied as one transaction (xdplb/journal.py):
  under the state lock, journaled, so a refused command changes nothing and
  a killed one is redone by the next lock holder; -R plans every line and
  applies the net result as one transaction;
* listings read the maps into model.Service / model.Destination (formatting
  is xdplb/ipvsfmt.py's); the connection table's counts, sweep and `-L -c`
  rows are xdplb/conns.py's.

Refusals raise model.XdplbError (message + ipvsadm exit code).

    ctl = Control.open(create=True)      # creates the state on first use
    ctl.add_service(Service(IPPROTO_TCP, "10.0.0.1", 80, sched="rr"))
    ctl.add_dest((IPPROTO_TCP, "10.0.0.1", 80), Destination("172.80.0.2", 80, fwd=0))
    for svc in ctl.services(): ...
"""
import os
import socket
import time

from . import config, conns, estimator, hostaddr, ipvsfmt, journal, loader, maps, model
from . import state as statemod
from .keys import b2a, dest_addr, netmask_of
from .model import E_NO_SERVICE, Destination, Service, Stats, XdplbError
from .tables import Tables


def prime_neighbour(addr):
    """Make the kernel resolve a DR real server's MAC (one empty UDP datagram
    to its discard port from a throwaway socket: IPv6 neighbour discovery
    for an IPv6 server); errors are ignored."""
    af = socket.AF_INET6 if model.family(addr) == model.AF_INET6 else socket.AF_INET
    try:
        with socket.socket(af, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(b"", (addr, 9))
    except OSError:
        pass


class _LocalAddresses:
    """The services' local addresses as listings show them (model.LocalAddress),
    -F's interfaces by name: this netns's names, asked once, and only if
    some local address has an interface."""

    def __init__(self, tables, conns_of=None):
        self.tables, self.names, self.conns_of = tables, None, conns_of or {}

    def of(self, slot):
        pairs = self.tables.laddrs(slot)
        if self.names is None and any(index for _, index in pairs):
            self.names = hostaddr.ifnames()
        return [model.LocalAddress(addr, index, hostaddr.ifname(index, self.names or {}),
                                   conns=self.conns_of.get((slot, addr), 0))
                for addr, index in pairs]


class Control:
    """Configuration and listing of one xdplb state (one netns)."""

    def __init__(self, st):
        self.st = st
        self.folder = st.folder
        self.rates_sampled = False   # the last rate listing sampled (no daemon)

    @classmethod
    def open(cls, create=False, folder=None):
        """The state of this netns (with create: compiled and pinned first if
        there is none); None when there is none and not create."""
        try:
            folder = folder or statemod.pin_dir(create)
        except statemod.StateError as e:
            if create or isinstance(e, statemod.BadPinDir):
                raise
            return None
        if create:
            st = loader.open_state(folder)
        elif os.path.exists(os.path.join(folder, statemod.PROG_PIN)):
            st = statemod.State.open(folder=folder)
        else:
            statemod.reap(folder)   # what a killed create left
            return None
        ctl = cls(st)
        try:
            journal.settle(st)  # redo a change a killed writer left half-applied
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
        """The state lock and a journal.Transaction: the block's writes through
        it are journaled and applied at its end, all or (if it raises) none;
        a kill -9 at any point leaves either nothing or a journal the next
        command redoes (xdplb/journal.py)."""
        return journal.transaction(self.st)

    # --- configuration: one plan, one transaction ------------------------------------

    def apply(self, op, *args):
        """Plan op(tables, *args) (an operation of xdplb/config.py) against the
        maps and apply its writes as one transaction."""
        [refused] = self.restore([(op, args)])
        if refused is not None:
            raise refused

    def restore(self, ops):
        """Run many operations as one transaction (xdplbadm -R).

        ops: [(operation, args) | XdplbError]. Each is planned against the
        tables the ones before it left, so each refusal is the one the kernel
        would give at that point of the sequence; the net result of the others
        is then written at once: the same maps as running them one by one
        (xdplb/tables.py). DR and TUN servers are primed afterwards. Returns
        [XdplbError or None per op]."""
        with self.locked():
            tx = journal.Transaction(self.st)
            t = Tables(tx)
            results, primed = config.run(t, ops)
            t.write(tx)
            zero_all = any(r is None and op[0] is config.zero and op[1] in ((), (None,))
                           for op, r in zip(ops, results) if not isinstance(op, XdplbError))
            change = estimator.Change(self.st, tx.txn, zero_all)
            journal.commit(self.st, tx.txn)
            change.record()   # the rate estimates and totals of what it zeroed
        for addr in dict.fromkeys(primed):
            prime_neighbour(addr)
        return results

    def add_service(self, svc: Service):
        self.apply(config.add_service, svc)

    def edit_service(self, svc: Service):
        self.apply(config.edit_service, svc)

    def delete_service(self, proto, addr, port):
        self.apply(config.delete_service, (proto, addr, port))

    def flush(self):
        self.apply(config.flush)

    def add_dest(self, svc_k, dest: Destination):
        """svc_k = (proto, addr, port) of the service."""
        self.apply(config.add_dest, svc_k, dest)

    def edit_dest(self, svc_k, dest: Destination):
        self.apply(config.edit_dest, svc_k, dest)

    def delete_dest(self, svc_k, addr, port):
        self.apply(config.delete_dest, svc_k, addr, port)

    def zero(self, svc_k=None):
        """-Z: every service and destination, or one service and its destinations."""
        self.apply(config.zero, svc_k)

    def set_timeouts(self, tcp, tcpfin, udp):
        self.apply(config.set_timeouts, tcp, tcpfin, udp)

    def set_setting(self, name, value):
        """`xdplb set`: one of IPVS's settings (model.SETTINGS)."""
        self.apply(config.set_setting, name, value)

    def settings(self):
        """{name: value} of model.SETTINGS as the data path sees them."""
        out = {}
        for name, (idx, _) in model.SETTINGS.items():
            v = self.st.sysctl.get(idx)
            out[name] = v.value if v is not None else 0
        return out

    # --- listing ----------------------------------------------------------------------

    def timeouts(self):
        """(tcp, tcpfin, udp) as `--timeout` shows them."""
        def get(i, default):
            v = self.st.timeouts.get(i)
            return v.value if v is not None and v.value else default
        return (get(1, model.TCP_TIMEOUTS[1]), get(4, model.TCP_TIMEOUTS[4]),
                get(config.XDPLB_TMO_UDP, model.UDP_TIMEOUT))

    def services(self, svc_k=None, stats=False, rate=False, counts=True, laddr_conns=False):
        """Services (creation order) with their destinations (kernel list order)
        and local addresses.

        stats: fill the counters. rate: the rates `xdplb daemon` estimates as
        the kernel does (xdplb/estimator.py); without the daemon, the counters
        are sampled twice one second apart and the per-second differences are
        reported (so this call takes one second; self.rates_sampled says so).
        counts: fill ActiveConn/InActConn from the connection table.
        laddr_conns: fill each local address's connections (-G's CONNS).
        """
        t = Tables(self.st)
        if svc_k is not None:
            entry = t.service(tuple(svc_k))
            if entry is None:
                raise XdplbError(E_NO_SERVICE, 1)
            found, by_svc = {tuple(svc_k): entry}, {entry.slot: t.dests_of(entry.slot)}
        else:
            found = t.services()
            by_svc = t.dests_by_service() if found else {}
        cc, lc = {}, {}
        if counts or laddr_conns:
            dests = {s: d for ds in by_svc.values() for s, d in ds}
            live = conns.live_entries(self.st, dests)
            cc = conns.counts(live) if counts else {}
            lc = conns.laddr_conns(live) if laddr_conns else {}
        out = []
        laddrs = _LocalAddresses(t, lc)
        for (proto, addr, port), c in sorted(found.items(), key=lambda kv: kv[1].seq):
            af = model.family(addr)
            svc = Service(proto=proto, addr=addr, port=port, sched=model.SCHED_NAMES.get(
                c.sched, "?"), flags=c.flags, timeout=c.timeout, netmask=netmask_of(c, af),
                af=af, slot=c.slot, seq=c.seq, laddrs=laddrs.of(c.slot))
            if stats or rate:
                svc.stats = estimator.counters(self.st.svc_stats, c.slot)
            for slot, d in by_svc.get(c.slot, ()):
                a, i, pc = cc.get(slot, (0, 0, 0))
                dst = Destination(addr=b2a(dest_addr(d)), port=socket.ntohs(d.port), fwd=d.fwd,
                                  weight=d.weight, u_threshold=d.u_threshold,
                                  l_threshold=d.l_threshold, active=a, inactive=i,
                                  persist=pc, slot=slot, seq=d.seq, tun_type=d.tun_type,
                                  tun_port=socket.ntohs(d.tun_port), tun_flags=d.tun_flags)
                if stats or rate:
                    dst.stats = estimator.counters(self.st.dest_stats, slot)
                svc.dests.append(dst)
            out.append(svc)
        if rate:
            self._rates(out)
        return out

    def _rates(self, out):
        est = estimator.load(self.st)
        self.rates_sampled = not est.fresh()
        if not self.rates_sampled:
            for svc in out:
                svc.rate = est.rate(estimator.SVC, svc.slot, svc.seq)
                for d in svc.dests:
                    d.rate = est.rate(estimator.DEST, d.slot, d.seq)
            return
        time.sleep(1.0)
        for svc in out:
            later = estimator.counters(self.st.svc_stats, svc.slot)
            svc.rate = Stats(*(max(b - a, 0) for a, b in zip(svc.stats, later)))
            svc.stats = later
            for d in svc.dests:
                later = estimator.counters(self.st.dest_stats, d.slot)
                d.rate = Stats(*(max(b - a, 0) for a, b in zip(d.stats, later)))
                d.stats = later

    def get_service(self, proto, addr, port, **kw):
        return self.services((proto, addr, port), **kw)[0]

    def save(self, numeric=False):
        """`ipvsadm -S [-n]` text of the current rules."""
        fmt = ipvsfmt.FMT_RULE | (ipvsfmt.FMT_NUMERIC if numeric else 0)
        return ipvsfmt.list_all(self.services(counts=False), fmt)

    # --- the connection table (xdplb/conns.py) ---------------------------------------

    def conn_counts(self):
        """{dest slot: [active, inactive, persist]} from the connection table."""
        return conns.counts(conns.live_entries(self.st, Tables(self.st).every_dest()))

    def sweep(self):
        """Expire connection entries and reconcile the live counts (conns.sweep);
        returns the number of entries deleted."""
        with self.locked():
            t = Tables(self.st)
            return conns.sweep(self.st, t.every_dest(), t.services())

    def connections(self):
        """Rows of `-L -c` (ipvsfmt.conn_listing)."""
        now = conns.now_ns()
        dests = Tables(self.st).every_dest()
        return conns.listing(conns.live_entries(self.st, dests, now), now)

    def snapshot(self):
        """Every non-zero entry of every pinned map (tests use it to prove that a
        refused command changed nothing)."""
        # Destination slots are only ever allocated up to alloc.dest_top (which
        # is part of the snapshot), plus a margin.
        dlimit = max(self.st.alloc.get(0).dest_top + 1, 1024)
        snap = {}
        for name in maps.MAPS:
            m = getattr(self.st, name)
            limit = dlimit if name in ("dests", "dest_stats", "dest_conns") else None
            snap[name] = sorted((k, v) for k, v in m.raw_items(limit) if any(v))
        return snap
