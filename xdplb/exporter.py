"""`xdplb exporter`: IPVS statistics of this netns's xdplb as Prometheus metrics.

It only reads. The pinned maps are opened with BPF_F_RDONLY (State.open(
readonly=True)), so the kernel refuses any update or delete through its file
descriptors, and no program fd is held (a test run of the program would write
maps). It never sweeps, never takes the writers' lock and never creates
state: with no state it serves xdplb_state_loaded 0 and nothing else, and
says so once in its log.

node_exporter's IPVS collector (collector/ipvs_linux.go), exactly: its
names, help texts, types and labels, so IPVS dashboards and alerts work
unchanged:

    node_ipvs_connections_total, node_ipvs_{incoming,outgoing}_packets_total,
    node_ipvs_{incoming,outgoing}_bytes_total          counters, no labels: totals
        over every service, kept when a service is deleted (xdplb/estimator.py)
    node_ipvs_backend_connections_active / _inactive, node_ipvs_backend_weight
        gauges {local_address, local_port, remote_address, remote_port, proto,
        local_mark} (proto TCP or UDP; local_mark "" as for every non-fwmark
        service)

and xdplb's own, richer ones (the per-service and per-server counters are
`xdplbadm -L --stats --exact`'s; the node_exporter's names with an xdplb_
prefix where they mean the same):

    xdplb_service_{connections,incoming_packets,outgoing_packets,
                   incoming_bytes,outgoing_bytes}_total   {proto,local_address,local_port}
    xdplb_backend_{...}_total                  {... remote_address,remote_port}
    xdplb_service_{...}_per_second, xdplb_backend_{...}_per_second
                    the kernel's rate estimates (`--rate`), while `xdplb daemon` runs
    xdplb_rate_estimator_running            1 if the daemon's estimates are current
    xdplb_backend_connections_active / _inactive / _persistent, xdplb_backend_weight
    xdplb_service_info{...,scheduler} 1
    xdplb_datapath_packets_total{counter}   the data path's counters (`xdplb status`)
    xdplb_connection_table_entries{table}, xdplb_connection_table_size{table}
                    fill of conns (LRU) and conns_assured, as `xdplb status`
    xdplb_state_loaded                      1 if this netns has xdplb state

It listens on 127.0.0.1:19370 unless told otherwise (--listen ADDR:PORT):
the Prometheus exporter range 9100-9999 is fully allocated, 19370 is in
none of the well-known lists.
"""
import ipaddress
import logging
import os
import signal
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import estimator, structs
from .keepalived.sync import record_path
from . import state as statemod

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19370
PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}
SVC_LABELS = ("proto", "local_address", "local_port")
BACKEND_LABELS = ("proto", "local_address", "local_port", "remote_address", "remote_port")
# node_exporter's label names, in the order its output has them (sorted)
NODE_LABELS = ("local_address", "local_mark", "local_port", "proto", "remote_address",
               "remote_port")
NODE_TOTALS = (("connections", "conns", "The total number of connections made."),
               ("incoming_packets", "inpkts", "The total number of incoming packets."),
               ("outgoing_packets", "outpkts", "The total number of outgoing packets."),
               ("incoming_bytes", "inbytes", "The total amount of incoming data."),
               ("outgoing_bytes", "outbytes", "The total amount of outgoing data."))
NODE_BACKEND = (("connections_active", "active",
                 "The current active connections by local and remote address."),
                ("connections_inactive", "inactive",
                 "The current inactive connections by local and remote address."),
                ("weight", "weight", "The current backend weight by local and remote address."))
STATS = (("connections", "conns", "connections scheduled"),
         ("incoming_packets", "inpkts", "packets from clients"),
         ("outgoing_packets", "outpkts", "packets from real servers"),
         ("incoming_bytes", "inbytes", "bytes from clients (L3 lengths)"),
         ("outgoing_bytes", "outbytes", "bytes from real servers (L3 lengths)"))

log = logging.getLogger("xdplb.exporter")


class ListenError(ValueError):
    """A --listen value that is not ADDR[:PORT] with an IP address and a port."""


def parse_listen(text):
    """'ADDR:PORT', 'ADDR', '[V6ADDR]:PORT' or '[V6ADDR]' -> (address, port).
    ADDR must be an IP address (no host names: what is listened on must be
    plain); 0.0.0.0 or :: listen everywhere, and only when written out."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ListenError(f"{text!r}: expected ADDR:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    host, port = text, None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ListenError(f"{text!r}: expected [IPV6]:PORT")
        host, port = inner, (rest[1:] if rest else None)
        if ":" not in host:
            raise ListenError(f"{text!r}: brackets are for IPv6 addresses only")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        raise ListenError(f"{text!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    if not host:
        raise ListenError(f"{text!r}: no address (write 0.0.0.0 to listen on every "
                          "IPv4 address)")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ListenError(f"{text!r}: {host!r} is not an IP address") from None
    if port is None:
        port = str(DEFAULT_PORT)
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ListenError(f"{text!r}: the port must be a number from 1 to 65535")
    return str(addr), int(port)


class XdplbCollector:
    """Reads the state on every scrape through read-only fds; the state is
    opened once and opened again when its program pin changes (a new state
    after detach / attach) or closed when it is gone."""

    def __init__(self, folder=None):
        self.folder = folder
        self.st = None
        self._pin = None      # (st_dev, st_ino) of the open state's program pin
        self._said = None
        self._lock = threading.Lock()

    def _tell(self, what, msg):
        if self._said != what:
            self._said = what
            log.info(msg)

    def _folder(self):
        if self.folder:
            return self.folder
        try:
            return statemod.pin_dir()
        except statemod.BadPinDir:
            raise
        except statemod.StateError as e:  # no bpffs mounted: no state either
            self._tell("nobpffs", f"no xdplb state: {e}; serving empty metrics")
            return None

    def _open(self):
        folder = self._folder()
        if folder is None:
            return self.close()
        try:
            s = os.stat(os.path.join(folder, statemod.PROG_PIN))
            pin = (s.st_dev, s.st_ino)
        except FileNotFoundError:
            pin = None
        if pin is None:
            self.close()
            self._tell("none", f"no xdplb state in {folder} yet: serving empty metrics "
                       "(xdplb attach or xdplbadm creates it)")
            return None
        if self.st is not None and pin == self._pin:
            return self.st
        self.close()
        self.st = statemod.State.open(folder=folder, readonly=True)
        self._pin = pin
        self._tell(pin, f"reading xdplb state {folder} (read-only)")
        return self.st

    def close(self):
        if self.st is not None:
            self.st.close()
        self.st, self._pin = None, None

    def describe(self):
        return []

    def collect(self):
        with self._lock:
            yield from self._collect()

    def _collect(self):
        from .control import Control
        loaded = GaugeMetricFamily("xdplb_state_loaded",
                                   "1 if this network namespace has xdplb state")
        try:
            st = self._open()
        except (statemod.StateError, OSError) as e:
            log.warning("cannot read the xdplb state: %s", e)
            self.close()
            st = None
        loaded.add_metric([], 1 if st is not None else 0)
        yield loaded
        if st is None:
            return
        try:
            services = Control(st).services(stats=True, counts=True)
            est = estimator.load(st)
            counters = [(name, st.counters.sum(i)) for i, name in enumerate(structs.COUNTERS)
                        if name != "rx"]
            fill = _table_fill(st)
        except OSError as e:  # the state went away under us: next scrape sees it
            log.warning("reading the xdplb state failed: %s", e)
            self.close()
            return
        yield from node_ipvs_metrics(services, est.retired)
        yield from _service_metrics(services)
        yield from _rate_metrics(services, est)
        dp = CounterMetricFamily("xdplb_datapath_packets",
                                 "Frames the XDP program finished, by outcome (the "
                                 "counters of `xdplb status`)", labels=["counter"])
        for name, value in counters:
            dp.add_metric([name], value)
        yield dp
        yield from fill
        yield from healthcheck_metrics(record_path(st.folder, "checks"))


# The daemon rewrites its checks' record every second; older is a stopped daemon.
CHECKS_FRESH_S = 5.0
CHECK_LABELS = ["proto", "virtual_server", "real_server"]
CHECK_COUNTERS = (("checks", "checks", "Health checks run"),
                  ("failures", "check_failures", "Health checks that failed"),
                  ("up_transitions", "up_transitions", "Times the real server came up"),
                  ("down_transitions", "down_transitions", "Times the real server went down"))


def healthcheck_metrics(path, now=None):
    """Each real server's health as `xdplb daemon -f` publishes it in path
    (xdplb/keepalived/sync.py): only while the record is current."""
    import json
    import time
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    now = time.time() if now is None else now
    running = record is not None and now - record.get("time", 0) <= CHECKS_FRESH_S
    yield GaugeMetricFamily("xdplb_healthcheck_running",
                            "1 if xdplb daemon -f publishes its health checks", value=int(running))
    if not running:
        return
    up = GaugeMetricFamily("xdplb_healthcheck_up", "1 if the real server passes its checks",
                           labels=CHECK_LABELS)
    weight = GaugeMetricFamily("xdplb_healthcheck_weight",
                               "The weight the checkers give the real server", labels=CHECK_LABELS)
    counters = [(field, CounterMetricFamily(f"xdplb_healthcheck_{name}", text, labels=CHECK_LABELS))
                for name, field, text in CHECK_COUNTERS]
    for rs in record.get("real_servers", ()):
        labels = [rs["proto"], rs["virtual_server"], rs["real_server"]]
        up.add_metric(labels, int(rs["alive"]))
        weight.add_metric(labels, rs["weight"])
        for field, fam in counters:
            fam.add_metric(labels, rs[field])
    yield up
    yield weight
    for _, fam in counters:
        yield fam


def node_address(addr):
    """An address as node_exporter labels it: what Go's net.IP.String() makes
    of the address it parsed from /proc/net/ip_vs (IPv6 compressed as RFC
    5952 writes it; a v4-mapped IPv6 address in dotted decimal)."""
    ip = ipaddress.ip_address(addr)
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def node_ipvs_metrics(services, retired):
    """node_exporter's IPVS metrics: totals (the live services' counters plus
    what deleted ones counted: retired) and per backend gauges."""
    for name, field, help_text in NODE_TOTALS:
        total = getattr(retired, field) + sum(getattr(s.stats, field) for s in services)
        yield CounterMetricFamily(f"node_ipvs_{name}", help_text, value=total)
    families = [(field, GaugeMetricFamily(f"node_ipvs_backend_{name}", help_text,
                                          labels=NODE_LABELS))
                for name, field, help_text in NODE_BACKEND]
    for svc in services:
        for d in svc.dests:
            labels = [node_address(svc.addr), "", str(svc.port),
                      PROTO_NAMES.get(svc.proto, str(svc.proto)),
                      node_address(d.addr), str(d.port)]
            for field, fam in families:
                fam.add_metric(labels, getattr(d, field))
    for _, fam in families:
        yield fam


def _rate_metrics(services, est):
    """The daemon's rate estimates, only while they are current."""
    running = est.fresh()
    yield GaugeMetricFamily("xdplb_rate_estimator_running",
                            "1 if xdplb daemon's rate estimates are current", value=int(running))
    if not running:
        return
    svc_g = {m: GaugeMetricFamily(f"xdplb_service_{m}_per_second",
                                  f"IPVS service {h}, per second (the kernel's estimator)",
                                  labels=SVC_LABELS) for m, _, h in STATS}
    be_g = {m: GaugeMetricFamily(f"xdplb_backend_{m}_per_second",
                                 f"IPVS real server {h}, per second (the kernel's estimator)",
                                 labels=BACKEND_LABELS) for m, _, h in STATS}
    for svc in services:
        sl = [PROTO_NAMES.get(svc.proto, str(svc.proto)), svc.addr, str(svc.port)]
        rate = est.rate(estimator.SVC, svc.slot, svc.seq)
        for m, field, _ in STATS:
            svc_g[m].add_metric(sl, getattr(rate, field))
        for d in svc.dests:
            rate = est.rate(estimator.DEST, d.slot, d.seq)
            for m, field, _ in STATS:
                be_g[m].add_metric([*sl, d.addr, str(d.port)], getattr(rate, field))
    yield from svc_g.values()
    yield from be_g.values()


def _table_fill(st):
    from .cli import count_entries
    entries = GaugeMetricFamily("xdplb_connection_table_entries",
                                "Entries in the connection table's maps (conns: the LRU of "
                                "new connections and templates; conns_assured: established)",
                                labels=["table"])
    size = GaugeMetricFamily("xdplb_connection_table_size",
                             "Capacity of the connection table's maps", labels=["table"])
    for name in ("conns", "conns_assured"):
        m = getattr(st, name)
        entries.add_metric([name], count_entries(m))
        size.add_metric([name], m.max_entries)
    return [entries, size]


def _service_metrics(services):
    svc_c = {m: CounterMetricFamily(f"xdplb_service_{m}", f"IPVS service {h}",
                                    labels=SVC_LABELS) for m, _, h in STATS}
    be_c = {m: CounterMetricFamily(f"xdplb_backend_{m}", f"IPVS real server {h}",
                                   labels=BACKEND_LABELS) for m, _, h in STATS}
    info = GaugeMetricFamily("xdplb_service_info", "IPVS virtual service and its scheduler",
                             labels=[*SVC_LABELS, "scheduler"])
    gauges = {
        "active": GaugeMetricFamily("xdplb_backend_connections_active",
                                    "ActiveConn: the current active connections",
                                    labels=BACKEND_LABELS),
        "inactive": GaugeMetricFamily("xdplb_backend_connections_inactive",
                                      "InActConn: the current inactive connections",
                                      labels=BACKEND_LABELS),
        "persist": GaugeMetricFamily("xdplb_backend_connections_persistent",
                                     "PersistConn: the current persistence templates",
                                     labels=BACKEND_LABELS),
        "weight": GaugeMetricFamily("xdplb_backend_weight", "The current weight",
                                    labels=BACKEND_LABELS),
    }
    for svc in services:
        sl = [PROTO_NAMES.get(svc.proto, str(svc.proto)), svc.addr, str(svc.port)]
        info.add_metric([*sl, svc.sched], 1)
        for m, field, _ in STATS:
            svc_c[m].add_metric(sl, getattr(svc.stats, field))
        for d in svc.dests:
            bl = [*sl, d.addr, str(d.port)]
            for m, field, _ in STATS:
                be_c[m].add_metric(bl, getattr(d.stats, field))
            for attr, g in gauges.items():
                g.add_metric(bl, getattr(d, attr))
    yield info
    yield from svc_c.values()
    yield from be_c.values()
    yield from gauges.values()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def make_registry(folder=None):
    registry = CollectorRegistry(auto_describe=False)
    collector = XdplbCollector(folder)
    registry.register(collector)
    return registry, collector


def serve(host=DEFAULT_HOST, port=DEFAULT_PORT, ready=None):
    """Serve /metrics on host:port until SIGTERM / SIGINT. The state folder is
    checked (XDPLB_PIN_DIR) before the socket is opened."""
    registry, collector = make_registry()
    collector._folder()  # a bad XDPLB_PIN_DIR stops here, before anything listens
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_cls = type("Server", (_Server,), {"address_family": family})
    server = make_server(host, port, make_wsgi_app(registry), server_class=server_cls,
                         handler_class=_QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("serving http://%s:%d/metrics%s", shown, server.server_address[1],
             "" if ipaddress.ip_address(host).is_loopback else
             " (not loopback: reachable from the network)")
    for _ in collector.collect():  # a first look, which logs whether there is state
        pass
    if ready:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        collector.close()
