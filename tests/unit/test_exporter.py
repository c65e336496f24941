"""The exporter's --listen parsing and metrics, without a server or a state
(tests/test_security.py runs the exporter itself, as root)."""
import pytest
from prometheus_client.core import Metric

from xdplb import exporter
from xdplb.exporter import ListenError, parse_listen
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP, Destination, Service, Stats


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("127.0.0.1", ("127.0.0.1", 19370)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("[::]", ("::", 19370)),
    ("[2001:DB8::1]:80", ("2001:db8::1", 80)),
])
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text,message", [
    ("", "'': expected ADDR:PORT (e.g. 127.0.0.1:19370)"),
    (" 127.0.0.1", "' 127.0.0.1': expected ADDR:PORT (e.g. 127.0.0.1:19370)"),
    (None, "None: expected ADDR:PORT (e.g. 127.0.0.1:19370)"),
    ("localhost:80", "'localhost:80': 'localhost' is not an IP address"),
    ("::1:80", "'::1:80': write an IPv6 address in brackets, [ADDR]:PORT"),
    ("[127.0.0.1]:80", "'[127.0.0.1]:80': brackets are for IPv6 addresses only"),
    ("[::1]80", "'[::1]80': expected [IPV6]:PORT"),
    (":80", "':80': no address (write 0.0.0.0 to listen on every IPv4 address)"),
    ("127.0.0.1:0", "'127.0.0.1:0': the port must be a number from 1 to 65535"),
    ("127.0.0.1:65536", "'127.0.0.1:65536': the port must be a number from 1 to 65535"),
    ("127.0.0.1:\u0668\u0660", "'127.0.0.1:\u0668\u0660': the port must be a number from 1 "
                               "to 65535"),
])
def test_listen_refusals(text, message):
    with pytest.raises(ListenError) as e:
        parse_listen(text)
    assert str(e.value) == message


def samples(families):
    """{(metric name, labels...): value} of every sample."""
    out = {}
    for fam in families:
        assert isinstance(fam, Metric)
        for s in fam.samples:
            out[(s.name, *s.labels.values())] = s.value
    return out


def test_service_and_backend_metrics():
    svc = Service(IPPROTO_TCP, "10.0.0.1", 80, sched="wrr", stats=Stats(3, 40, 30, 4000, 3000))
    svc.dests = [Destination("10.1.0.1", 8080, weight=5, active=2, inactive=1, persist=0,
                             stats=Stats(3, 40, 30, 4000, 3000))]
    udp = Service(IPPROTO_UDP, "10.0.0.2", 53, sched="rr")
    got = samples(exporter._service_metrics([svc, udp]))
    tcp, be = ("TCP", "10.0.0.1", "80"), ("TCP", "10.0.0.1", "80", "10.1.0.1", "8080")
    assert got[("xdplb_service_info", *tcp, "wrr")] == 1
    assert got[("xdplb_service_info", "UDP", "10.0.0.2", "53", "rr")] == 1
    assert [got[(f"xdplb_service_{m}_total", *tcp)] for m, _, _ in exporter.STATS] == \
        [3, 40, 30, 4000, 3000]
    assert [got[(f"xdplb_backend_{m}_total", *be)] for m, _, _ in exporter.STATS] == \
        [3, 40, 30, 4000, 3000]
    assert [got[(f"xdplb_backend_{g}", *be)] for g in (
        "connections_active", "connections_inactive", "connections_persistent", "weight")] == \
        [2, 1, 0, 5]
    assert got[("xdplb_service_connections_total", "UDP", "10.0.0.2", "53")] == 0
    assert len(got) == 2 + 2 * 5 + (5 + 4)   # info and stats of 2 services, 1 backend


def exposition(families):
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_node_exporter_ipvs_metrics_exactly():
    """node_exporter's IPVS collector: names, help texts, types, labels (in the
    order its output has them); totals add what deleted services counted."""
    svc = Service(IPPROTO_TCP, "10.0.0.1", 80, sched="wrr", stats=Stats(3, 40, 30, 4000, 3000))
    svc.dests = [Destination("10.1.0.1", 8080, weight=5, active=2, inactive=1)]
    udp = Service(IPPROTO_UDP, "10.0.0.2", 53, sched="rr", stats=Stats(1, 2, 3, 4, 5))
    udp.dests = [Destination("10.1.0.2", 53, weight=0, active=0, inactive=7)]
    text = exposition(list(exporter.node_ipvs_metrics([svc, udp], Stats(10, 20, 30, 40, 50))))
    be_tcp = ('{local_address="10.0.0.1",local_mark="",local_port="80",proto="TCP",'
              'remote_address="10.1.0.1",remote_port="8080"}')
    be_udp = ('{local_address="10.0.0.2",local_mark="",local_port="53",proto="UDP",'
              'remote_address="10.1.0.2",remote_port="53"}')
    assert text == "".join(line + "\n" for line in [
        "# HELP node_ipvs_connections_total The total number of connections made.",
        "# TYPE node_ipvs_connections_total counter",
        "node_ipvs_connections_total 14.0",
        "# HELP node_ipvs_incoming_packets_total The total number of incoming packets.",
        "# TYPE node_ipvs_incoming_packets_total counter",
        "node_ipvs_incoming_packets_total 62.0",
        "# HELP node_ipvs_outgoing_packets_total The total number of outgoing packets.",
        "# TYPE node_ipvs_outgoing_packets_total counter",
        "node_ipvs_outgoing_packets_total 63.0",
        "# HELP node_ipvs_incoming_bytes_total The total amount of incoming data.",
        "# TYPE node_ipvs_incoming_bytes_total counter",
        "node_ipvs_incoming_bytes_total 4044.0",
        "# HELP node_ipvs_outgoing_bytes_total The total amount of outgoing data.",
        "# TYPE node_ipvs_outgoing_bytes_total counter",
        "node_ipvs_outgoing_bytes_total 3055.0",
        "# HELP node_ipvs_backend_connections_active The current active connections by local "
        "and remote address.",
        "# TYPE node_ipvs_backend_connections_active gauge",
        f"node_ipvs_backend_connections_active{be_tcp} 2.0",
        f"node_ipvs_backend_connections_active{be_udp} 0.0",
        "# HELP node_ipvs_backend_connections_inactive The current inactive connections by "
        "local and remote address.",
        "# TYPE node_ipvs_backend_connections_inactive gauge",
        f"node_ipvs_backend_connections_inactive{be_tcp} 1.0",
        f"node_ipvs_backend_connections_inactive{be_udp} 7.0",
        "# HELP node_ipvs_backend_weight The current backend weight by local and remote "
        "address.",
        "# TYPE node_ipvs_backend_weight gauge",
        f"node_ipvs_backend_weight{be_tcp} 5.0",
        f"node_ipvs_backend_weight{be_udp} 0.0"])


def test_node_exporter_labels_of_ipv6():
    """node_exporter reads IPv6 fully expanded from /proc/net/ip_vs and labels
    it as Go prints a parsed address: compressed, a v4-mapped one dotted."""
    svc = Service(IPPROTO_TCP, "2001:db8::1", 80, sched="rr")
    svc.dests = [Destination("2001:db8:80::2", 8080, weight=1, active=1)]
    mapped = Service(IPPROTO_TCP, "::ffff:10.0.0.9", 80, sched="rr")
    mapped.dests = [Destination("fd00::5", 80, weight=2)]
    text = exposition(list(exporter.node_ipvs_metrics([svc, mapped], Stats())))
    assert ('node_ipvs_backend_weight{local_address="2001:db8::1",local_mark="",local_port="80",'
            'proto="TCP",remote_address="2001:db8:80::2",remote_port="8080"} 1.0\n') in text
    assert ('node_ipvs_backend_weight{local_address="10.0.0.9",local_mark="",local_port="80",'
            'proto="TCP",remote_address="fd00::5",remote_port="80"} 2.0\n') in text


def test_the_grafana_dashboard_uses_only_served_metrics():
    """docs/grafana-xdplb.json: valid JSON, both families of metrics, and no
    name the exporter does not serve (a renamed metric breaks this test)."""
    import json
    import os
    import re
    import time

    from xdplb import estimator
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "grafana-xdplb.json")
    with open(path) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", ())]
    used = {m for e in exprs for m in re.findall(r"\b((?:node_ipvs|xdplb)_\w+)", e)}
    svc = Service(IPPROTO_TCP, "10.0.0.1", 80, sched="rr", stats=Stats())
    svc.dests = [Destination("10.1.0.1", 80)]
    fresh = estimator.Estimates(ticks=1, tick_ns=time.monotonic_ns())
    served = set()
    for fam in [*exporter.node_ipvs_metrics([svc], Stats()), *exporter._service_metrics([svc]),
                *exporter._rate_metrics([svc], fresh)]:
        served |= {s.name for s in fam.samples}
    served |= {"xdplb_datapath_packets_total", "xdplb_connection_table_entries",
               "xdplb_connection_table_size", "xdplb_state_loaded"}   # (_collect's own)
    assert used <= served, used - served
    assert any(m.startswith("node_ipvs_") for m in used)
    assert any(m.startswith("xdplb_") for m in used)


def test_healthcheck_metrics_from_the_daemons_record(tmp_path):
    import json
    path = tmp_path / "state.checks.json"
    rs = {"proto": "TCP", "virtual_server": "1.2.3.4:80", "real_server": "172.80.0.2:8080",
          "alive": False, "weight": 0, "up_transitions": 1, "down_transitions": 2,
          "checks": 40, "check_failures": 5, "quorum_up": True}
    path.write_text(json.dumps({"time": 1000.0, "real_servers": [rs]}))
    got = {m.name: m for m in exporter.healthcheck_metrics(str(path), now=1003.0)}
    assert got["xdplb_healthcheck_running"].samples[0].value == 1
    labels = {"proto": "TCP", "virtual_server": "1.2.3.4:80", "real_server": "172.80.0.2:8080"}
    for name, value in (("xdplb_healthcheck_up", 0), ("xdplb_healthcheck_weight", 0),
                        ("xdplb_healthcheck_checks", 40), ("xdplb_healthcheck_failures", 5),
                        ("xdplb_healthcheck_down_transitions", 2)):
        [sample] = [x for x in got[name].samples if not x.name.endswith("_created")]
        assert (sample.labels, sample.value) == (labels, value), name
    stale = list(exporter.healthcheck_metrics(str(path), now=1010.0))
    assert [m.name for m in stale] == ["xdplb_healthcheck_running"]
    assert stale[0].samples[0].value == 0
    missing = list(exporter.healthcheck_metrics(str(tmp_path / "none.json")))
    assert missing[0].samples[0].value == 0
