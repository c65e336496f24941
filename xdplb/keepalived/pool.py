"""What keepalived's checker process keeps of each virtual server: which real
servers are alive, the quorum, the sorry server (keepalived/check/ipwrapper.c),
and the destinations IPVS should have as a result.

* A real server is alive when none of its checkers is failing (one with no
  checker always is). A checker starts up, or down under `alpha`.
* Its destination: alive, at its weight (misc_dynamic may change it); failed,
  removed, or kept at weight 0 with `inhibit_on_failure`.
* Quorum: the weights of the alive servers add up to at least `quorum` (+
  `hysteresis` to gain it, - to lose it; losing it also when the sum is 0).
  Without quorum, a `sorry_server` replaces the alive servers (inhibited ones
  stay at weight 0); with quorum it is absent (weight 0 under
  `sorry_server_inhibit`).

Every change of a real server or of the quorum is logged in keepalived's
words, counted, and runs notify_up / notify_down (`on_notify`).
"""
import logging

from .. import model

log = logging.getLogger("xdplb.daemon")


def rs_name(addr, port):
    return f"[{addr}]:{port}"


def vs_label(vs, proto_first=True):
    return f"{model.PROTO_NAMES[vs.proto]}:{vs.name}" if proto_first else vs.name


class RsState:
    """A real server's checkers and counts."""

    def __init__(self, rs, vs):
        self.rs = rs
        self.failed = {i for i, c in enumerate(rs.checks) if c.alpha}
        self.weight = rs.weight
        self.dynamic = {}             # checker index -> weight misc_dynamic set
        self.ups = self.downs = self.checks = self.check_failures = 0

    @property
    def alive(self):
        return not self.failed

    def adopt(self, old):
        """Keep the state of the same real server before a reload, as
        keepalived's migrate_checkers does when its checkers are the same."""
        if old.rs.checks == self.rs.checks:
            self.failed, self.dynamic = set(old.failed), dict(old.dynamic)
            if old.rs.weight == self.rs.weight and self.dynamic:
                self.weight = old.weight
        self.ups, self.downs = old.ups, old.downs
        self.checks, self.check_failures = old.checks, old.check_failures


class VsState:
    def __init__(self, vs):
        self.vs = vs
        self.rs = {(r.addr, r.port): RsState(r, vs) for r in vs.real_servers}
        total = self.live_weight()
        self.quorum_up = total >= vs.quorum + vs.hysteresis

    def live_weight(self):
        return sum(s.weight for s in self.rs.values() if s.alive)

    def update_quorum(self):
        """keepalived's update_quorum_state; True if it changed."""
        vs, total = self.vs, self.live_weight()
        if not self.quorum_up and total >= vs.quorum + vs.hysteresis:
            self.quorum_up = True
            log.info("Gained quorum %d+%d=%d <= %d for VS %s", vs.quorum, vs.hysteresis,
                     vs.quorum + vs.hysteresis, total, vs.name)
            return True
        if self.quorum_up and (not total or total < vs.quorum - vs.hysteresis):
            self.quorum_up = False
            log.info("Lost quorum %d-%d=%d > %d for VS %s", vs.quorum, vs.hysteresis,
                     vs.quorum - vs.hysteresis, total, vs.name)
            return True
        return False

    def destinations(self):
        """{(addr, port): weight} this virtual server's services should have."""
        vs = self.vs
        sorry_in = vs.sorry_server is not None and not self.quorum_up
        out = {}
        for key, s in self.rs.items():
            if s.alive and not sorry_in:
                out[key] = s.weight
            elif s.rs.inhibit:
                out[key] = 0
        if vs.sorry_server is not None:
            key = (vs.sorry_server.addr, vs.sorry_server.port)
            if sorry_in:
                out[key] = vs.sorry_server.weight
            elif vs.sorry_server.inhibit:
                out.setdefault(key, 0)
        return out

    def servers(self):
        """{(addr, port): RealServer} of every server destinations() may name."""
        out = {k: s.rs for k, s in self.rs.items()}
        if self.vs.sorry_server is not None:
            sorry = self.vs.sorry_server
            out.setdefault((sorry.addr, sorry.port), sorry)
        return out


class Pool:
    """Every virtual server's state; report() feeds it checker results."""

    def __init__(self, cfg, on_notify=None):
        self.on_notify = on_notify or (lambda script, rs: None)
        self.vs = [VsState(vs) for vs in cfg.virtual_servers]

    def reload(self, cfg):
        """The new configuration, keeping the state of what did not change."""
        old = {(v.vs.proto, v.vs.endpoints): v for v in self.vs}
        self.vs = []
        for vs in cfg.virtual_servers:
            new = VsState(vs)
            prev = old.get((vs.proto, vs.endpoints))
            if prev is not None:
                for key, s in new.rs.items():
                    if key in prev.rs:
                        s.adopt(prev.rs[key])
                new.quorum_up = prev.quorum_up
                new.update_quorum()
            self.vs.append(new)

    def report(self, vi, key, ci, ok, weight=None, final=True):
        """Checker ci of real server key of virtual server vi said ok (and,
        for misc_dynamic, a weight: -1 for the configured one). True if the
        destinations changed. A check that is not final (a failure with
        retries left) is only counted."""
        v = self.vs[vi]
        s = v.rs[key]
        s.checks += 1
        s.check_failures += not ok
        if not final:
            return False
        before = v.destinations()
        was_alive = s.alive
        if ok:
            s.failed.discard(ci)
            if weight is not None and weight < 0:
                weight = s.rs.weight
            if weight is not None and weight != s.weight:
                s.dynamic[ci] = weight
                log.info("Changing weight from %d to %d for %sactive service %s of VS %s",
                         s.weight, weight, "" if s.alive else "in", rs_name(*key), v.vs.name)
                s.weight = weight
        else:
            s.failed.add(ci)
        if s.alive != was_alive:
            self._transition(v, s, key)
        v.update_quorum()
        return v.destinations() != before

    def _transition(self, v, s, key):
        up = s.alive
        verb = ("Enabl" if s.rs.inhibit else "Add") if up else \
               ("Disabl" if s.rs.inhibit else "Remov")
        prep = "of" if s.rs.inhibit else "to" if up else "from"
        log.info("%sing service %s %s VS %s", verb, rs_name(*key), prep, v.vs.name)
        if up:
            s.ups += 1
        else:
            s.downs += 1
        script = s.rs.notify_up if up else s.rs.notify_down
        if script is not None:
            self.on_notify(script, s.rs)

    def stopping(self):
        """keepalived's omega: at shutdown the down notifiers of alive servers run."""
        for v in self.vs:
            if v.vs.omega:
                for s in v.rs.values():
                    if s.alive and s.rs.notify_down is not None:
                        self.on_notify(s.rs.notify_down, s.rs)

    def counts(self):
        """Each real server's state and counts (the daemon publishes them)."""
        return [{"proto": model.PROTO_NAMES[v.vs.proto], "virtual_server": v.vs.name,
                 "real_server": f"{k[0]}:{k[1]}", "alive": s.alive, "weight": s.weight,
                 "up_transitions": s.ups, "down_transitions": s.downs,
                 "checks": s.checks, "check_failures": s.check_failures,
                 "quorum_up": v.quorum_up}
                for v in self.vs for k, s in v.rs.items()]
