"""Smoke test of `xdplb bench` (xdplb/bench/): tiny sizes (--quick), no timing
assertions. It checks that every part runs, that every PROG_TEST_RUN row's
counters moved by exactly the repeat count (each iteration took the path the
row claims), that the results folder gets its table and plots, and that
nothing the benchmark made is left behind."""
import os

import pytest

from xdplb.bench import cli, ops, report, scale
from xdplb.bench.common import leftovers


def _need_root_and_bpffs():
    if os.geteuid() != 0:
        pytest.skip("bench needs root (netns, BPF, bpffs)")
    with open("/proc/self/mountinfo") as f:
        if not any(line.split(" - ")[1].split()[0] == "bpf" for line in f if " - " in line):
            pytest.skip("no bpffs mounted")


@pytest.fixture(scope="module")
def pkt_quick():
    """Part 1 at --quick sizes, once for the tests that read its rows."""
    _need_root_and_bpffs()
    return cli.run(["pkt"], quick=True)


def test_bench_pkt_quick(tmp_path, pkt_quick):
    res = pkt_quick
    repeat = res["config"]["repeat"]
    rows = {r["part"]: r for r in res["pkt"]["rows"]}
    assert {"trivial", "minnat", "nat", "nat-reply", "dr", "newflow-fresh", "newconn-fresh",
            "newflow", "newconn", "newconn-call"} <= set(rows)
    for part, r in rows.items():
        assert r["ok"], f"{part}: {r['proof']}"
    assert f"dest.inpkts +{repeat}" in rows["nat"]["proof"]
    # Every reply iteration was a Masq reply found through rs_table (handle_out).
    assert f"dest.outpkts +{repeat}" in rows["nat-reply"]["proof"]
    assert f"svc.conns +{repeat}" in rows["newconn"]["proof"]
    # The minimal new-flow program missed and inserted on every iteration,
    # and the full-table rows ran on tables the fill had filled.
    for part in ("newflow-fresh", "newflow"):
        assert "newflow.hit +0" in rows[part]["proof"], rows[part]
    assert f"newflow.new +{repeat}" in rows["newflow"]["proof"]
    for part in ("newflow", "newconn"):
        assert "entries in use after the runs" in rows[part]["proof"], rows[part]
    assert {r["part"] for r in res["pkt"]["rows"] if r["reference"]} == {
        "trivial", "minnat", "newflow-fresh", "newflow"}
    # One new-connection row per scheduler the model knows at 3 destinations,
    # and the list schedulers at 64.
    from xdplb import model
    from xdplb.bench import scheds
    rows3 = {r["sched"]: r for r in res["sched"] if r["dests"] == 3}
    rows64 = {r["sched"]: r for r in res["sched"] if r["dests"] == 64}
    assert set(rows3) == set(model.SCHED_IDS) and set(rows64) == set(scheds.LIST_SCHEDS)
    for r in res["sched"]:
        assert "skip" not in r and r["ok"], r
    for kind in ("services", "conns"):
        curve = res[f"curve_{kind}"]
        assert [r["size"] for r in curve] == sorted(res["config"][
            "svc_sizes" if kind == "services" else "conn_sizes"])
        assert all(r["ok"] for r in curve), curve
    # Every target of parts 1-3 is evaluated (met or not: timings are never asserted).
    from xdplb.bench import targets
    ts = targets.evaluate(res)
    assert {1, 2, 3} == {t["no"] for t in ts}
    assert all(t["met"] in (True, False, None) for t in ts)
    assert sum(1 for t in ts if t["no"] == 3) == 3
    res["meta"] = {"date": "t", "kernel": "k", "cpus": 2, "cpu_model": "c", "seconds": 1,
                   "command": "xdplb bench --quick"}
    text, made = report.write(res, str(tmp_path))
    assert "| *trivial XDP_TX (floor)* |" in text and "**NO**" not in text
    assert "## Targets (issue 11)" in text and "minimal new-flow reference" in text
    assert {"pkt.png", "sched.png", "targets.png", "scale_services.png",
            "scale_conns.png"} <= set(made)
    assert all((tmp_path / m).stat().st_size > 1000 for m in made)
    assert "## Issue 12's rows (reported, not asserted)" in text
    compared = {(t["measured"], t["against"]) for t in targets.issue12(res["pkt"])}
    assert len(compared) == len(targets.ISSUE12)
    assert not leftovers()


def _rows(res):
    return res["config"]["repeat"], {r["part"]: r for r in res["pkt"]["rows"]}


def test_bench_pkt_ipv6_rows(pkt_quick):
    """Established IPv6 Masq, its reply and Route: every iteration took the
    IPv6 connection's path (its destination's counters moved by repeat)."""
    repeat, rows = _rows(pkt_quick)
    for part, vip, counter in (("nat6", "[fd00:10::100]:80", "dest.inpkts"),
                               ("nat6-reply", "[fd00:10::100]:80", "dest.outpkts"),
                               ("dr6", "[fd00:10::101]:80", "dest.inpkts")):
        r = rows[part]
        assert r["ok"] and r["verdict"] == "REDIRECT", r
        assert f"{counter} +{repeat}" in r["proof"] and f"fwd +{repeat}" in r["proof"], r
        assert "to_stack +0" in r["proof"] and vip in r["method"], r
    assert "conns6_assured" in rows["nat6"]["method"]


def test_bench_pkt_icmp_row(pkt_quick):
    """The ICMP error about a Masq connection was translated and sent to the
    real server on every iteration."""
    repeat, rows = _rows(pkt_quick)
    r = rows["icmp"]
    assert r["ok"] and r["verdict"] == "REDIRECT", r
    for proof in ("icmp_xlate", "dest.inpkts", "fwd"):
        assert f"{proof} +{repeat}" in r["proof"], r
    assert "to_stack +0" in r["proof"], r


# Each Tunnel row's output read back once: (outer family and protocol, its UDP port, to).
OUTER = {"tun-ipip": ("IPv4, protocol 4", "172.80.0.2"),
         "tun-gue": ("IPv4, protocol 17, UDP to port 6080", "172.80.0.2"),
         "tun-4in6": ("IPv6, protocol 4", "fd00:172::2"),
         "tun6-ipip": ("IPv6, protocol 41", "fd00:172::2"),
         "tun6-gue": ("IPv6, protocol 17, UDP to port 6080", "fd00:172::2"),
         "tun-6in4": ("IPv4, protocol 41", "172.80.0.2")}


def test_bench_pkt_tunnel_rows(tmp_path):
    """`xdplb bench --parts pkt --rows tunnel`: Tunnel ipip and gue over
    IPv4 and IPv6, 4in6 and 6in4, and Route of either family beside them,
    behind the replay harness with live frames, and nothing else of part 1
    but the floor and the direct Route rows. The harness replayed every
    iteration, each was forwarded on the Tunnel (or Route) connection, none
    went to the stack; each Tunnel row's output, read back once, had the
    outer header claimed; the rows are net of the harness's control row and
    compared with the Route row of their client's family."""
    _need_root_and_bpffs()
    from click.testing import CliRunner

    from xdplb.bench import pkt, targets
    out = tmp_path / "res"
    r = CliRunner().invoke(cli.bench_command, ["--quick", "--parts", "pkt", "--rows", "tunnel",
                                               "--out", str(out)])
    assert r.exit_code == 0, r.output
    import json
    res = json.loads((out / "results.json").read_text())
    repeat, rows = _rows(res)
    assert list(rows) == ["trivial", *pkt.ROW_GROUPS["tunnel"]]
    assert "sched" not in res and "curve_services" not in res
    assert rows["replay"]["ok"] and f"harness.replays +{repeat}" in rows["replay"]["proof"]
    for part in ("dr-live", "dr6-live", *OUTER):
        r = rows[part]
        assert r["ok"] and r["verdict"] == "live", r
        for proof in ("harness.replays", "dest.inpkts", "fwd"):
            assert f"{proof} +{repeat}" in r["proof"], r
        assert "to_stack +0" in r["proof"], r
    for part, (outer, rs) in OUTER.items():
        assert (f"read back once: {outer}, to {rs}, the client's packet unchanged inside"
                in rows[part]["method"]), rows[part]["method"]
    assert "[fd00:10::101]:80" in rows["dr6-live"]["method"]
    compared = {(t["measured"], t["against"]) for t in targets.issue12(res["pkt"])}
    tunnels = [(x, ref) for x, ref, *_ in targets.ISSUE12 if x in OUTER]
    assert {(rows[x]["label"], rows[ref]["label"]) for x, ref in tunnels} <= compared
    assert ("tun6-ipip", "dr6") in tunnels and ("tun6-gue", "dr6-live") in tunnels
    md = (out / "results.md").read_text()
    assert "6in6" in md and "per scheduler" not in md and "**NO**" not in md
    assert (out / "pkt.png").stat().st_size > 1000
    assert "--rows " + ",".join(pkt.ROW_GROUPS["tunnel"]) in res["meta"]["command"]
    assert not leftovers()


def _fnat_checked(repeat, rows):
    """The full-NAT rows took their path on every iteration: the client's
    packet left from a local address, the reply from the VIP (read back
    once), each new connection was lent one fnat_out mapping, none refused."""
    from xdplb.bench import pkt
    for part, counter in (("fnat", "dest.inpkts"), ("fnat-reply", "dest.outpkts")):
        r = rows[part]
        assert r["ok"] and r["verdict"] == "REDIRECT", r
        assert f"{counter} +{repeat}" in r["proof"] and f"fwd +{repeat}" in r["proof"], r
        assert "to_stack +0" in r["proof"], r
    seen = rows["fnat"]["method"].split("read back once: ")[1]
    assert seen.split(":")[0] in pkt.LADDRS and "checksums right" in seen, seen
    assert ("read back once: 10.0.0.105:80 -> 10.0.0.2:45000, IP and TCP checksums right"
            in rows["fnat-reply"]["method"]), rows["fnat-reply"]["method"]
    r = rows["newconn-fnat-fresh"]
    assert r["ok"] and r["verdict"] == "REDIRECT", r
    for proof in ("svc.conns", "fwd", "harness.seq", "fnat_out"):
        assert f"{proof} +{repeat}" in r["proof"], r
    assert "fnat_no_port +0" in r["proof"] and "to_stack +0" in r["proof"], r


def test_bench_pkt_fnat_rows(pkt_quick):
    """Full-NAT's rows in the whole of part 1, and issue 13's comparisons."""
    from xdplb.bench import targets
    repeat, rows = _rows(pkt_quick)
    _fnat_checked(repeat, rows)
    compared = {(t["measured"], t["against"]) for t in targets.issue12(pkt_quick["pkt"],
                                                                       targets.ISSUE13)}
    assert compared == {(rows[x]["label"], rows[ref]["label"])
                        for x, ref, *_ in targets.ISSUE13}


def test_bench_pkt_fnat_group(tmp_path):
    """`--rows fnat`: full-NAT's rows and the Masq rows they are compared
    with (the new Masq connection's table-with-room row and its control,
    none of the full-table rows), proven as in the whole part."""
    _need_root_and_bpffs()
    import json

    from click.testing import CliRunner
    out = tmp_path / "res"
    r = CliRunner().invoke(cli.bench_command, ["--quick", "--parts", "pkt", "--rows", "fnat",
                                               "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    repeat, rows = _rows(res)
    assert list(rows) == ["trivial", "nat", "nat-reply", "fnat", "fnat-reply",
                          "newconn-harness-fresh", "newconn-fresh", "newconn-fnat-fresh"]
    assert all(r["ok"] for r in rows.values()), rows
    _fnat_checked(repeat, rows)
    assert "## Issue 13's rows (reported, not asserted)" in (out / "results.md").read_text()
    assert not leftovers()


def test_bench_command_bad_rows():
    """--rows: a name of no row or group, or without part 1, is refused
    before anything runs."""
    _need_root_and_bpffs()
    from click.testing import CliRunner
    r = CliRunner().invoke(cli.bench_command, ["--parts", "pkt", "--rows", "tunnel,bogus"])
    assert r.exit_code != 0 and "unknown row(s): bogus" in r.output, r.output
    r = CliRunner().invoke(cli.bench_command, ["--parts", "fwd", "--rows", "tunnel"])
    assert r.exit_code != 0 and "--parts pkt" in r.output, r.output
    assert not leftovers()


def test_bench_scale_quick(tmp_path):
    """Part 6 at --quick sizes: every variant ran on one CPU and on all at
    once and its counters moved by repeat x loops; no timings asserted."""
    _need_root_and_bpffs()
    res = cli.run(["scale"], quick=True)
    sc = res["scale"]
    if len(sc["cpus"]) < 2:
        assert sc["skip"]
        return
    assert {r["name"] for r in sc["rows"]} == set(scale.LABELS)
    for r in sc["rows"]:
        assert r["ok"], r
        assert r["repeat"] >= res["config"]["repeat"]
    assert [(p["xdplb"], p["reference"]) for p in sc["pairs"]] == [
        (x, ref) for x, ref, _ in scale.PAIRS]
    res["meta"] = {"date": "t", "kernel": "k", "cpus": 2, "cpu_model": "c", "seconds": 1,
                   "command": "xdplb bench --quick --parts scale"}
    text, made = report.write(res, str(tmp_path))
    assert "## 6. Scaling across CPUs" in text and "| 5 | scaling to" in text
    assert {"cpus.png", "targets.png"} <= set(made)
    assert not leftovers()


def test_bench_ops_quick(tmp_path):
    """Part 7 at --quick sizes: every building block did its operation on
    every iteration (its own count); program sizes of xdplb and the references."""
    _need_root_and_bpffs()
    res = cli.run(["ops"], quick=True)
    o = res["ops"]
    assert [r["part"] for r in o["rows"]] == [part for part, *_ in ops.OPS + ops.ESTABLISHED]
    for r in o["rows"]:
        assert r["ok"], r
        repeat = o["repeat"] if r["group"] == "new" else o["repeat_established"]
        assert f"op +{repeat}" in r["proof"], r
        assert r["xlated_insns"] > 0, r
    names = {p["name"] for p in o["sizes"]}
    assert {"xdplb_main", "xdplb_new_ring", "xdplb_conn", "bench_newflow"} <= names
    assert all(p["xlated_insns"] > 0 for p in o["sizes"])
    res["meta"] = {"date": "t", "kernel": "k", "cpus": 2, "cpu_model": "c", "seconds": 1,
                   "command": "xdplb bench --quick --parts ops"}
    text, made = report.write(res, str(tmp_path))
    assert "## 7. The anatomy of a new connection" in text
    assert {"ops.png", "ops-established.png"} <= set(made)
    assert not leftovers()


def test_bench_command_other_parts(tmp_path):
    _need_root_and_bpffs()
    from click.testing import CliRunner
    out = tmp_path / "res"
    r = CliRunner().invoke(cli.bench_command, ["--quick", "--parts", "fwd,ctl,mem",
                                               "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "results.md").read_text()
    assert "## 2. Forwarding rate" in md and "## 4. Control plane" in md
    assert "## 5. Kernel memory" in md and "### Per tracked IPv4 connection" in md
    assert "| 4 | memory per IPv4 connection, Masq" in md
    assert "Target 6, a new flow every frame: xdplb ÷ " in md
    for label in ("xdplb (XDP, -m)", "nftables DNAT", "iptables DNAT, kube-proxy chains",
                  "plain IP forwarding", "kernel IPVS"):
        assert label in md
    assert "xdplbadm -R" in md and "iptables-restore" in md
    assert (out / "fwd.png").exists() and (out / "ctl.png").exists()
    assert (out / "targets.png").exists()
    assert (out / "results.json").exists()
    import json
    saved = json.loads((out / "results.json").read_text())
    # One entry per connection of each supported method, in the connection
    # maps only: rs_table is per real server, written by -a, not per connection.
    conns = {c["method"]: c for c in saved["mem"]["conns"]}
    for method in ("Masq", "Route", "Tunnel"):
        assert conns[method]["entries"] == 1, conns[method]
        assert set(conns[method]["maps"]) <= {"conns", "conns_assured"}, conns[method]
    # Every running variant delivered the frames it was given (nothing silently lost).
    for row in saved["fwd"]["rows"]:
        if "skip" not in row and row["mix"] == "est":
            assert row["delivered"] >= 0.9 * row["injected"], row
    assert not leftovers()


def test_bench_command_bad_part():
    _need_root_and_bpffs()
    from click.testing import CliRunner
    r = CliRunner().invoke(cli.bench_command, ["--parts", "bogus"])
    assert r.exit_code != 0 and "unknown part" in r.output


def test_bench_cps_percentile():
    from xdplb.bench.cps import percentile
    vals = list(range(1, 101))
    assert percentile(vals, 50) == 50 and percentile(vals, 99) == 99
    assert percentile([7], 99) == 7 and percentile([], 50) is None


def test_bench_cps_quick(tmp_path):
    """Part 3 at --quick sizes, two rounds (so xdplb is detached and attached
    again with its services kept): every variant made connections and none
    failed; counts only, no timings."""
    _need_root_and_bpffs()
    res = cli.run(["cps"], quick=True, cps_rounds=2)
    c = res["cps"]
    cfg = res["config"]
    assert c["rounds"] == 2 and c["workers"] == list(cfg["cps_workers"])
    rows = c["rows"]
    want = {("plain", 1), ("xdplb", 1), ("nft", 1), ("ipvs", 1)}
    want |= {("iptables", n) for n in cfg["cps_sizes"]}
    assert {(r["variant"], r["n"]) for r in rows} == want
    assert len(rows) == len(want) * len(cfg["cps_workers"])
    for r in rows:
        if "skip" in r:
            assert r["variant"] == "ipvs" and "IPVS" in r["skip"], r
            continue
        assert r["rounds"] == 2 and len(r["runs_cps"]) == 2, r
        assert r["conns"] > 0 and r["errors"] == 0, r
        assert r["p50_us"] <= r["p99_us"] <= r["max_us"], r
        assert r["x_vs_xdplb"] is not None and "cpu_us_over_plain" in r, r
    res["meta"] = {"date": "t", "kernel": "k", "cpus": 2, "cpu_model": "c", "seconds": 1,
                   "command": "xdplb bench --quick --parts cps"}
    text, made = report.write(res, str(tmp_path))
    assert "## 3. Connections per second and latency" in text
    for label in ("plain IP forwarding", "xdplb (XDP, -m)", "nftables DNAT",
                  "iptables DNAT, kube-proxy chains", "kernel IPVS"):
        assert label in text
    assert "cps.png" in made and (tmp_path / "cps.png").stat().st_size > 1000
    assert not leftovers()
