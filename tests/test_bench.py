"""Smoke test of `xdplb bench` (xdplb/bench/): tiny sizes (--quick), no timing
assertions. It checks that every part runs, that every PROG_TEST_RUN row's
counters moved by exactly the repeat count (each iteration took the path the
row claims), that the results folder gets its table and plots, and that
nothing the benchmark made is left behind."""
import os

import pytest

from xdplb.bench import cli, report
from xdplb.bench.common import leftovers


def _need_root_and_bpffs():
    if os.geteuid() != 0:
        pytest.skip("bench needs root (netns, BPF, bpffs)")
    with open("/proc/self/mountinfo") as f:
        if not any(line.split(" - ")[1].split()[0] == "bpf" for line in f if " - " in line):
            pytest.skip("no bpffs mounted")


def test_bench_pkt_quick(tmp_path):
    _need_root_and_bpffs()
    res = cli.run(["pkt"], quick=True)
    repeat = res["config"]["repeat"]
    rows = {r["part"]: r for r in res["pkt"]["rows"]}
    assert {"trivial", "minnat", "nat", "nat-reply", "dr", "newconn"} <= set(rows)
    for part, r in rows.items():
        assert r["ok"], f"{part}: {r['proof']}"
    assert f"dest.inpkts +{repeat}" in rows["nat"]["proof"]
    assert f"svc.conns +{repeat}" in rows["newconn"]["proof"]
    # One new-connection row per scheduler the model knows (rr and wrr at least).
    from xdplb import model
    scheds = {r["part"]: r for r in res["sched"]}
    assert {f"sched-{s}" for s in model.SCHED_IDS} == set(scheds)
    assert {"sched-rr", "sched-wrr"} <= set(scheds)
    for r in scheds.values():
        assert "skip" in r or r["ok"], r
    for kind in ("services", "conns"):
        curve = res[f"curve_{kind}"]
        assert [r["size"] for r in curve] == sorted(res["config"][
            "svc_sizes" if kind == "services" else "conn_sizes"])
        assert all(r["ok"] for r in curve), curve
    res["meta"] = {"date": "t", "kernel": "k", "cpus": 2, "cpu_model": "c", "seconds": 1,
                   "command": "xdplb bench --quick"}
    text, made = report.write(res, str(tmp_path))
    assert "| trivial XDP_TX (floor) |" in text and "**NO**" not in text
    assert {"pkt.png", "scale_services.png", "scale_conns.png"} <= set(made)
    assert all((tmp_path / m).stat().st_size > 1000 for m in made)
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
    assert "## 5. Kernel memory" in md
    for label in ("xdplb (XDP, -m)", "nftables DNAT", "iptables DNAT, kube-proxy chains",
                  "plain IP forwarding", "kernel IPVS"):
        assert label in md
    assert "xdplbadm -R" in md and "iptables-restore" in md
    assert (out / "fwd.png").exists() and (out / "ctl.png").exists()
    assert (out / "results.json").exists()
    # Every running variant delivered the frames it was given (nothing silently lost).
    import json
    rows = json.loads((out / "results.json").read_text())["fwd"]["rows"]
    for row in rows:
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
