"""Smoke test of `xdplb bench` (xdplb/bench.py): a tiny repeat, no timing
assertions. It checks that every row runs, that the program's own counters
moved by exactly the repeat count (each iteration took the path the row
claims), and that nothing the benchmark made is left behind."""
import os
import subprocess

import pytest

from xdplb import bench


def _need_root_and_bpffs():
    if os.geteuid() != 0:
        pytest.skip("bench needs root (netns, BPF, bpffs)")
    with open("/proc/self/mountinfo") as f:
        if not any(line.split(" - ")[1].split()[0] == "bpf" for line in f if " - " in line):
            pytest.skip("no bpffs mounted")


def _leftovers():
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ns = [line.split()[0] for line in netns.splitlines()
          if line.startswith(f"xdplb-bench-{os.getpid()}")]
    pins = [p for p in ("/sys/fs/bpf/xdplb", "/run/xdplb/bpffs/xdplb") if os.path.isdir(p)
            for p in [os.path.join(p, n) for n in os.listdir(p)
                      if n.startswith(f"bench-{os.getpid()}")]]
    return ns + pins


def test_bench_smoke():
    _need_root_and_bpffs()
    repeat = 50
    result = bench.run(repeat=repeat, runs=2)
    rows = {r["part"]: r for r in result["rows"]}
    assert set(rows) == {"trivial", "minnat", "nat", "nat-reply", "dr", "newconn-harness",
                         "newconn-call", "newconn-fresh", "newconn-raw", "newconn"}
    for part, r in rows.items():
        assert r["ok"], f"{part}: {r['proof']}"
        assert "FAILED" not in r["proof"]
        assert len(r["runs_ns"]) == 2
    # Hits = repeat, spelled out in each proof from the program's own counters.
    assert f"dest.inpkts +{repeat}" in rows["nat"]["proof"]
    assert f"fwd +{repeat}" in rows["nat"]["proof"]
    assert "svc.conns +0" in rows["nat"]["proof"]
    assert f"dest.outpkts +{repeat}" in rows["nat-reply"]["proof"]
    assert f"dest.inpkts +{repeat}" in rows["dr"]["proof"]
    assert f"svc.conns +{repeat}" in rows["newconn"]["proof"]
    assert f"minnat.hits +{repeat}" in rows["minnat"]["proof"]
    assert rows["nat"]["verdict"] in ("REDIRECT", "TX")
    table = bench.format_table(result)
    assert "| trivial XDP_TX (floor) |" in table and "Notes:" in table
    assert "**NO**" not in table
    assert not _leftovers()


def test_bench_command_parts():
    _need_root_and_bpffs()
    from click.testing import CliRunner
    res = CliRunner().invoke(bench.bench_command,
                             ["--repeat", "20", "--runs", "1", "--parts", "trivial,minnat"])
    assert res.exit_code == 0, res.output
    assert "minimal NAT reference" in res.output
    assert "xdplb established" not in res.output
    res = CliRunner().invoke(bench.bench_command, ["--repeat", "5", "--parts", "bogus"])
    assert res.exit_code != 0
    assert not _leftovers()
