"""A real Prometheus (Debian's `prometheus`) scraping `xdplb exporter`, then
answering node_exporter-named queries over its HTTP API: the IPVS totals
(a deleted service's counts included) and the backends' gauges with
node_exporter's labels, equal to `xdplbadm -L -n`.

Prometheus and the exporter run in a private netns, on its loopback, with a
temporary configuration and data folder; both are stopped by pid and the
folder removed whatever happens.
"""
import json
import os
import shutil
import tempfile
import time
import urllib.parse

import pytest
from conftest import xdplb_argv
from test_security import VIP, background, fetch, known_state, ns, wait_listening  # noqa: F401

from xdplb import state as statemod
from xdplb.control import Control
from xdplb.model import IPPROTO_UDP

EXPORTER, PROMETHEUS = "127.0.0.1:19370", "127.0.0.1:19390"
CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: xdplb
    static_configs:
      - targets: ['%s']
""" % EXPORTER


@pytest.fixture
def prometheus_dir():
    if not shutil.which("prometheus"):
        pytest.fail("Debian's prometheus is not installed (make setup installs it)")
    d = tempfile.mkdtemp(prefix="xdplb-prom-")
    try:
        with open(os.path.join(d, "prometheus.yml"), "w") as f:
            f.write(CONFIG)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def query(ns, expr):
    url = f"http://{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, text = fetch(ns, url)
    body = json.loads(text)
    assert status == 200 and body["status"] == "success", text
    return body["data"]["result"]


def wait_scraped(ns, proc, timeout=60):
    """Until Prometheus has scraped the exporter successfully once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prometheus exited"
        try:
            if query(ns, 'up{job="xdplb"} == 1') and query(ns, "node_ipvs_connections_total"):
                return
        except OSError:
            pass    # not listening yet
        time.sleep(0.5)
    raise AssertionError("Prometheus scraped nothing")


def test_prometheus_answers_node_exporter_queries(known_state, ns, prometheus_dir):
    folder = known_state["folder"]
    exp = known_state["expect"]
    tcp, udp = known_state["svcs"]
    # deleting a service keeps what it counted in the totals, as the kernel's
    with statemod.State.open(folder=folder) as st:
        Control(st).delete_service(IPPROTO_UDP, VIP, udp.port)
        listing = {(d.addr, d.port): d for s in Control(st).services() for d in s.dests}
    totals = [a + b for a, b in zip(exp[("svc", tcp.proto, tcp.port)],
                                    exp[("svc", udp.proto, udp.port)])]
    with background(ns, xdplb_argv("exporter", "--listen", EXPORTER),
                    env={"XDPLB_PIN_DIR": folder}) as exporter:
        wait_listening(exporter, ns)
        argv = ["prometheus", f"--config.file={prometheus_dir}/prometheus.yml",
                f"--storage.tsdb.path={prometheus_dir}/data",
                f"--web.listen-address={PROMETHEUS}"]
        with background(ns, argv) as prom:
            wait_scraped(ns, prom)
            got = {r["metric"]["__name__"]: float(r["value"][1]) for r in query(
                ns, '{__name__=~"node_ipvs_.*_total"}')}
            backends = {name: query(ns, f"node_ipvs_backend_{name}")
                        for name in ("connections_active", "connections_inactive", "weight")}
    assert got == dict(zip(("node_ipvs_connections_total", "node_ipvs_incoming_packets_total",
                            "node_ipvs_outgoing_packets_total",
                            "node_ipvs_incoming_bytes_total",
                            "node_ipvs_outgoing_bytes_total"), map(float, totals)))
    assert len(listing) == len(tcp.dests) == 2
    for name, field in (("connections_active", "active"), ("connections_inactive", "inactive"),
                        ("weight", "weight")):
        series = {}
        for r in backends[name]:
            m = r["metric"]
            series[(m["remote_address"], int(m["remote_port"]))] = (m, float(r["value"][1]))
        assert set(series) == set(listing), name
        for key, (m, value) in series.items():
            # local_mark is "" for a service without a firewall mark: Prometheus
            # drops empty labels, as it does node_exporter's
            assert m == {"__name__": f"node_ipvs_backend_{name}", "instance": EXPORTER,
                         "job": "xdplb", "local_address": VIP, "local_port": str(tcp.port),
                         "proto": "TCP", "remote_address": key[0],
                         "remote_port": str(key[1])}, m
            assert value == getattr(listing[key], field), (name, key)
    assert prom.returncode is not None and exporter.returncode == 0
