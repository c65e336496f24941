"""`xdplb daemon`: the balancer's periodic duties and, given a keepalived.conf,
keepalived's load-balancing half (xdplb/keepalived/).

One asyncio loop runs:

* the periodic duties (DUTIES): each is a function of the open Control,
  called every `interval` seconds in a worker thread (they take the state
  lock and write maps: they must not stall the checkers);
* with -f FILE, the virtual servers of the file: the services are made equal
  to the file (changing only the difference, xdplb/keepalived/sync.py), one
  task per checker reports to the Pool (xdplb/keepalived/pool.py), and every
  change of the destinations it decides is written by one reconciling task
  (changes that come together are written together).

SIGHUP reads the file again: a file with errors is reported and the running
configuration kept. SIGTERM (or SIGINT) stops the loop; the services stay as
they are (the data path keeps forwarding; a daemon started again takes them
back, sync.py records which are its own). The real servers' states and check
counts are published in /run/xdplb/<state>.checks.json (sync.record_path),
rewritten on every change and every second, for the exporter or anyone.
"""
import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

from . import estimator
from .control import Control
from .keepalived import checkers, scripts, sync
from .keepalived.conf import parse
from .keepalived.lexer import ConfigError
from .keepalived.pool import Pool

log = logging.getLogger("xdplb.daemon")


@dataclass(frozen=True)
class Periodic:
    """A duty run every `every` seconds (None: the daemon's --interval):
    start(ctl) once, then what it returned, called each time."""
    name: str
    every: float | None
    start: Callable         # start(ctl) -> run()


# Adding a duty is one line here. The rate estimator keeps its own 2 s
# schedule (estimator.Daemon: a period when one is due), so it is asked often.
DUTIES = (
    Periodic("expiry sweep", None, lambda ctl: ctl.sweep),
    Periodic("rate estimator", 0.1, lambda ctl: estimator.Daemon(ctl.st).run),
)


def load(path):
    """The Config of a keepalived.conf, its scripts checked (keepalived's
    script security); raises ConfigError."""
    cfg = parse(path)
    errors = []
    for vs in cfg.virtual_servers:
        for rs in vs.real_servers:
            for script in [rs.notify_up, rs.notify_down, *(c.script for c in rs.checks)]:
                why = script and scripts.check(script, cfg.script_security)
                if why:
                    errors.append((script.where, why))
    if errors:
        raise ConfigError(errors)
    for keyword, where in cfg.ignored:
        log.info("%s ignoring %s", where, keyword)
    return cfg


class Daemon:
    def __init__(self, ctl, interval, path=None):
        self.ctl, self.interval, self.path = ctl, interval, path
        self.pool = None
        self.dirty = asyncio.Event()
        self.stopped = asyncio.Event()
        self.checks = []            # the running checker tasks
        self.notifies = set()

    # --- the loop ----------------------------------------------------------------------

    async def main(self, cfg=None):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        tasks = [asyncio.create_task(self.periodic(d)) for d in DUTIES]
        if cfg is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
            self.pool = Pool(cfg, on_notify=self.notify)
            await asyncio.to_thread(sync.apply, self.ctl, sync.want(self.pool))
            self.start_checks()
            tasks += [asyncio.create_task(self.reconcile()),
                      asyncio.create_task(self.publish_every(1.0))]
        log.info("running (pid %d)", os.getpid())
        await self.stopped.wait()
        log.info("stopping")
        if self.pool is not None:
            self.pool.stopping()
        for t in tasks + self.checks:
            t.cancel()
        await asyncio.gather(*tasks, *self.checks, return_exceptions=True)
        if self.notifies:
            await asyncio.wait(self.notifies, timeout=5)
        if self.pool is not None:
            self.publish()

    async def periodic(self, duty):
        every = duty.every or self.interval
        run = duty.start(self.ctl)
        while True:
            try:
                await asyncio.to_thread(run)
            except OSError as e:
                log.warning("%s: %s", duty.name, e)
            await asyncio.sleep(every)

    # --- keepalived --------------------------------------------------------------------

    def start_checks(self):
        for vi, v in enumerate(self.pool.vs):
            for key, s in v.rs.items():
                for ci, c in enumerate(s.rs.checks):
                    self.checks.append(asyncio.create_task(checkers.schedule(
                        c, self.reporter(vi, key, ci), up=ci not in s.failed)))

    def reporter(self, vi, key, ci):
        def report(ok, weight, final):
            if self.pool.report(vi, key, ci, ok, weight, final):
                self.dirty.set()
        return report

    async def reconcile(self):
        """Write what the pool decides; changes that came together at once."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            await asyncio.to_thread(sync.apply, self.ctl, sync.want(self.pool))
            self.publish()

    async def reload(self):
        log.info("reloading %s", self.path)
        try:
            cfg = await asyncio.to_thread(load, self.path)
        except ConfigError as e:
            for line in str(e).splitlines():
                log.error("%s", line)
            log.error("reload refused: the running configuration is kept")
            return
        for t in self.checks:
            t.cancel()
        await asyncio.gather(*self.checks, return_exceptions=True)
        self.checks = []
        self.pool.reload(cfg)
        self.start_checks()
        self.dirty.set()

    def notify(self, script, rs):
        task = asyncio.create_task(scripts.run(script))
        self.notifies.add(task)
        task.add_done_callback(self.notifies.discard)

    def publish(self):
        try:
            sync.write_json(sync.record_path(self.ctl.folder, "checks"),
                            {"time": time.time(), "real_servers": self.pool.counts()})
        except OSError as e:
            log.warning("cannot publish the checks' counts: %s", e)

    async def publish_every(self, seconds):
        while True:
            self.publish()
            await asyncio.sleep(seconds)


def test_config(path, ctl, out):
    """`xdplb daemon -t -f FILE`: check the file and print, as ipvsadm
    commands, what the daemon would change (planned against the live state,
    nothing written); True if the file is good and every change would be
    accepted."""
    cfg = load(path)
    wanted = sync.want(Pool(cfg))
    live = sync.live_services(ctl) if ctl else {}
    owned = sync.read_owned(ctl.st) if ctl else set()
    changes = sync.diff(live, wanted, owned)
    for _, _, text in changes:
        out(text)
    refused = sync.dry_run(ctl.st if ctl else None, changes)
    for text, e in refused:
        out(f"{text}: would be refused: {e.message}")
    if not changes:
        out("no change")
    return not refused


def run(interval, path=None, replaced=None):
    """The daemon in the foreground until SIGTERM/SIGINT; None if there is
    no state and no file to make one for. Raises ConfigError, having
    changed nothing, if the file is wrong or a change would be refused.
    replaced(st): first swap this xdplb's data path in (loader.replace)."""
    cfg = load(path) if path else None
    ctl = Control.open(create=cfg is not None)
    if ctl is None:
        return None
    with ctl:
        if replaced is not None:
            replaced(ctl.st)
        if cfg is not None:
            refused = sync.dry_run(ctl.st, sync.diff(
                sync.live_services(ctl), sync.want(Pool(cfg)), sync.read_owned(ctl.st)))
            if refused:
                raise ConfigError([(None, f"{t}: refused: {e.message}") for t, e in refused])
        asyncio.run(Daemon(ctl, interval, path).main(cfg))
    return True
