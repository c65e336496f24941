"""`xdplb bench` (= `make bench`): every part, side by side, into a results
folder (results.md, results.json, PNG plots). `--parts` picks parts;
`--quick` runs tiny sizes (what the test suite's smoke test does)."""
import datetime
import importlib.util
import os
import platform
import signal
import sys
import time
import warnings

import click

from .common import BenchError

PARTS = ("pkt", "fwd", "cps", "ctl", "mem", "scale", "ops")
EXTRA_PARTS = ("checks",)        # only when named in --parts
PART_HELP = {"pkt": "1. ns/packet with PROG_TEST_RUN (established IPv4 and IPv6, ICMP "
                    "translation, Tunnel, new connections), per scheduler, scaling curves",
             "fwd": "2. forwarding rate: xdplb / nftables / iptables / IPVS / plain",
             "cps": "3. TCP connections/s and p50/p99 connect-to-close latency, same variants",
             "ctl": "4. control plane: xdplbadm -R / iptables-restore / ipvsadm -R",
             "mem": "5. kernel memory per connection and per service",
             "scale": "6. new-connection and established rates on one CPU and on all at once",
             "ops": "7. the building blocks of a new connection (map operations, tail call, "
                    "FIB lookup) and of an established packet (lookups that hit, clock, "
                    "redirect), ns each, and program sizes",
             "checks": "8. (only when named) health checks of xdplb daemon -f: checks/s per "
                       "core for 1,000 real servers at delay_loop 1, MISC_CHECK apart"}

FULL = dict(repeat=1_000_000, runs=5, curve_repeat=300_000, svc_sizes=(10, 100, 1000, 10000,
            100000), conn_sizes=(1000, 10000, 100000, 1000000), fwd_sizes=(1, 1000, 10000),
            fwd_count=1_000_000, fwd_new=300_000, fwd_runs=3, ctl_sizes=(1000, 10000),
            ctl_timeout=60.0, cps_sizes=(1, 1000, 10000), cps_workers=(1, 8), cps_seconds=1.0,
            cps_rounds=3, cps_count=100_000, cps_warmup=50, scale_seconds=1.0,
            check_servers=1000, check_misc=100, check_seconds=10.0)
QUICK = dict(repeat=200, runs=2, curve_repeat=200, svc_sizes=(10, 100), conn_sizes=(1000, 2000),
             fwd_sizes=(1, 10), fwd_count=20_000, fwd_new=5_000, fwd_runs=1, ctl_sizes=(10,),
             ctl_timeout=30.0, cps_sizes=(1, 10), cps_workers=(1, 2), cps_seconds=0.2,
             cps_rounds=1, cps_count=300, cps_warmup=5, scale_seconds=0.02,
             check_servers=20, check_misc=5, check_seconds=1.0)


def _cpu_model():
    from .pkt import cpu_model
    return cpu_model()


def run(parts=PARTS, quick=False, log=None, rows=None, **over):
    """Run the parts; returns the results dict report.write() takes.
    rows: part 1 only those rows (pkt.rows_named()), without the
    per-scheduler rows and the scaling curves."""
    cfg = dict(QUICK if quick else FULL)
    cfg.update({k: v for k, v in over.items() if v is not None})
    log = log or (lambda m: None)
    t0 = time.monotonic()
    res = {"config": {k: v for k, v in cfg.items()}}
    if "pkt" in parts:
        from . import curves, pkt, scheds
        log("pkt: PROG_TEST_RUN rows")
        res["pkt"] = pkt.run(rows or pkt.PARTS, repeat=cfg["repeat"], runs=cfg["runs"],
                             log=log)
    if "pkt" in parts and not rows:
        floor = res["pkt"]["rows"][0]["ns"]
        res["sched"] = scheds.run(cfg["repeat"], cfg["runs"], log)
        res["curve_services"] = curves.curve("services", cfg["svc_sizes"], cfg["curve_repeat"],
                                             min(cfg["runs"], 3), log, floor)
        res["curve_conns"] = curves.curve("conns", cfg["conn_sizes"], cfg["curve_repeat"],
                                          min(cfg["runs"], 3), log, floor)
    if "fwd" in parts:
        from . import fwd
        res["fwd"] = fwd.run(sizes=cfg["fwd_sizes"], count=cfg["fwd_count"],
                             new_count=cfg["fwd_new"], runs=cfg["fwd_runs"], log=log)
    if "cps" in parts:
        from . import cps
        res["cps"] = cps.run(sizes=cfg["cps_sizes"], workers=cfg["cps_workers"],
                             count=cfg["cps_count"], seconds=cfg["cps_seconds"],
                             rounds=cfg["cps_rounds"], warmup=cfg["cps_warmup"], log=log)
    if "ctl" in parts:
        from . import ctl
        res["ctl"] = ctl.run(sizes=cfg["ctl_sizes"], timeout=cfg["ctl_timeout"], log=log)
    if "mem" in parts:
        from . import mem
        res["mem"] = mem.run(log=log)
    if "scale" in parts:
        from . import scale
        res["scale"] = scale.run(repeat=cfg["repeat"], runs=cfg["runs"],
                                 seconds=cfg["scale_seconds"], log=log)
    if "ops" in parts:
        from . import ops
        res["ops"] = ops.run(repeat=cfg["repeat"], runs=cfg["runs"], log=log)
    if "checks" in parts:
        from . import checks
        res["checks"] = checks.run(servers=cfg["check_servers"], misc_servers=cfg["check_misc"],
                                   seconds=cfg["check_seconds"], log=log)
    res["meta"] = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                   "kernel": platform.release(), "cpus": os.cpu_count(),
                   "cpu_model": _cpu_model(), "seconds": time.monotonic() - t0,
                   "command": "xdplb bench" + (" --quick" if quick else "")
                   + ("" if set(parts) == set(PARTS) else f" --parts {','.join(parts)}")
                   + (f" --rows {','.join(rows)}" if rows else "")}
    return res


@click.command("bench")
@click.option("--parts", default=",".join(PARTS), show_default=True,
              help="comma-separated list of: " + "; ".join(f"{k} = {v}"
                                                             for k, v in PART_HELP.items()))
@click.option("--out", default="bench-results", show_default=True,
              type=click.Path(file_okay=False, writable=True),
              help="results folder (results.md, results.json, *.png)")
@click.option("--quick", is_flag=True, help="tiny sizes: checks that everything runs (seconds)")
@click.option("--rows", default=None, metavar="ROWS",
              help="part 1 (pkt) only these comma-separated rows, with the floor and the "
                   "controls they need, and no per-scheduler rows or scaling curves: e.g. "
                   "'tunnel' (every Tunnel row and the Route rows they are compared with) or "
                   "'dr6,nat6' (rows: xdplb/bench/pkt.py PARTS)")
@click.option("--repeat", type=click.IntRange(1), default=None,
              help="PROG_TEST_RUN iterations per run (default 1,000,000)")
@click.option("--runs", type=click.IntRange(1), default=None,
              help="runs per PROG_TEST_RUN measurement, the median is reported (default 5)")
def bench_command(parts, out, quick, rows, repeat, runs):
    """Is xdplb faster than IPVS and iptables? Measure it, write tables and plots."""
    if importlib.util.find_spec("matplotlib") is None:
        raise click.ClickException("the benchmark draws its plots with matplotlib, which is "
                                   "not installed: pip install 'xdplb[bench]'")
    if os.geteuid() != 0:
        raise click.ClickException("bench needs root (BPF, bpffs and network namespaces)")
    wanted = [p.strip() for p in parts.split(",") if p.strip()]
    bad = set(wanted) - set(PARTS + EXTRA_PARTS)
    if bad:
        raise click.ClickException(f"unknown part(s): {', '.join(sorted(bad))} "
                                   f"(parts: {', '.join(PARTS + EXTRA_PARTS)})")
    if rows is not None:
        from . import pkt
        if "pkt" not in wanted:
            raise click.ClickException("--rows picks rows of part 1: give --parts pkt too")
        try:
            rows = pkt.rows_named([r.strip() for r in rows.split(",") if r.strip()])
        except BenchError as e:
            raise click.ClickException(str(e))
        if not rows:
            raise click.ClickException("--rows names no row")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="bcc")
    # SIGTERM unwinds like Ctrl-C, so namespaces, attachments and pins are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    try:
        res = run(wanted, quick=quick, rows=rows, repeat=repeat, runs=runs,
                  log=lambda m: click.echo(f"bench [{time.monotonic() - t0:5.1f}s] {m}",
                                           err=True))
    except BenchError as e:
        raise click.ClickException(str(e))
    from . import report
    text, made = report.write(res, out)
    click.echo(text)
    click.echo(f"results: {os.path.abspath(out)}/results.md, results.json"
               + "".join(f", {m}" for m in made), err=True)
    bad_rows = [r["label"] for r in res.get("pkt", {}).get("rows", []) if not r["ok"]]
    bad_rows += [r["label"] for r in res.get("sched", []) if "ok" in r and not r["ok"]]
    for part in ("scale", "ops"):
        bad_rows += [r["label"] for r in res.get(part, {}).get("rows", []) if not r["ok"]]
    if bad_rows:
        raise click.ClickException("rows that did not take the path they claim: "
                                   + "; ".join(bad_rows))
