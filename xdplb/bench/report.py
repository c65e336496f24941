"""The results folder: results.md (the targets, then every table),
results.json (raw figures) and the PNG plots of plots.py."""
import json
import os

from . import cps as cpsmod
from . import fwd as fwdmod
from . import newconn, plots, targets


def _f(x, spec=".0f", none="—"):
    return none if x is None else format(x, spec)


def _pkt_table(result):
    rows, meta = result["rows"], result["meta"]
    lines = [
        f"BPF_PROG_TEST_RUN, repeat {meta['repeat']:,} per run (table-with-room rows: at most "
        f"{newconn.FRESH_MAX:,}), median of {meta['runs']} runs taking turns; kernel "
        f"{meta['kernel']}, {meta['cpus']} CPUs ({meta['cpu_model']}). Reference rows are "
        "in italics.", "",
        "| measurement | ns/packet (median) | runs min–max | × floor | hits = repeat |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]
    for r in rows:
        hits = "—" if r["part"] == "trivial" else ("yes" if r["ok"] else "**NO**")
        label = f"*{r['label']}*" if r.get("reference") else r["label"]
        lines.append(f"| {label} | {r['ns']:.0f} | {min(r['runs_ns']):.0f}–"
                     f"{max(r['runs_ns']):.0f} | {_f(r['x_floor'], '.2f')} | {hits} |")
    lines += ["", "Notes:", ""]
    for r in rows:
        lines.append(f"- {r['label']}: {r['method']}. Verdict {r['verdict']}. "
                     f"Counters: {r['proof']}.")
    lines += [
        "- Every xdplb row runs the real bpf/xdplb.c, compiled and pinned in a private bpffs "
        "folder, inside a private netns (veths, addresses, permanent neighbours, "
        "ip_forward=1, tx_ports filled as `xdplb attach` does) so bpf_fib_lookup and the "
        "devmap redirect succeed; services and destinations are configured through the "
        "control API, as `xdplbadm` would (so the rings and the real-server table are the "
        "planner's), and connections are set up by their handshake through the program; "
        "only the fixed points' extra entries the notes name, and the scaling curve's "
        "filler connections (copies of one the program made), go straight into the maps.",
        "- PROG_TEST_RUN does not restore the frame between iterations, so each row is built "
        "to take the same path every iteration and proves it: the counters listed moved by "
        "exactly repeat on every run (fwd = XDPLB_CNT_FWD, to_stack = XDPLB_CNT_TO_STACK, "
        "svc/dest = the IPVS stats of the service and destination slots; newflow.* and "
        "minnat.hits = the reference programs' own per-CPU counters; harness.seq = the "
        "harness's per-CPU sequence).",
        "- The minimal new-flow program's LRU takes the geometry of xdplb's conns map as the "
        "kernel reports it (type, max_entries, key and value sizes, flags), and is filled "
        "the same way as conns in each pair of rows.",
        f"- Total time {meta['seconds']:.1f} s.",
    ]
    return "\n".join(lines)


def md_pkt(res):
    out = ["## 1. Per-packet cost (BPF_PROG_TEST_RUN)", "", _pkt_table(res["pkt"])]
    sched = res.get("sched")
    if sched:
        out += ["", "### New connection per scheduler (every scheduler xdplb.model knows)", "",
                "Each row: the harness into a table emptied before each run, every row taking "
                "turns; × rr is net of the floor, (row − floor) ÷ (rr − floor), the median of "
                "the runs' ratios.", "",
                "| scheduler | dests | ns/packet (median) | runs min–max | × floor | × rr | "
                "hits = repeat |", "| --- | ---: | ---: | ---: | ---: | ---: | :---: |"]
        for r in sched:
            if "skip" in r:
                out.append(f"| -s {r['sched']} | {r['dests']} | skipped: {r['skip']} | | | | |")
                continue
            out.append(f"| -s {r['sched']} | {r['dests']} | {r['ns']:.0f} | "
                       f"{min(r['runs_ns']):.0f}–{max(r['runs_ns']):.0f} | {r['x_floor']:.1f} | "
                       f"{_f(r.get('x_rr'), '.2f')} | {'yes' if r['ok'] else '**NO**'} |")
    for kind in ("services", "conns"):
        rows = res.get(f"curve_{kind}")
        if not rows:
            continue
        what = "services" if kind == "services" else "tracked Masq connections (one entry each)"
        out += ["", f"### Scaling: {what}", "",
                "| size | established NAT ns | × smallest | new connection ns | × smallest | "
                "hits = repeat |", "| ---: | ---: | ---: | ---: | ---: | :---: |"]
        for r in rows:
            new = r.get("new_ns", r.get("new_call_ns"))
            newx = r.get("new_x_smallest")
            out.append(f"| {r['size']:,} | {r['est_ns']:.0f} | {r['est_x_smallest']:.2f} | "
                       f"{_f(new)}{'' if 'new_ns' in r else ' (per call)'} | {_f(newx, '.2f')} | "
                       f"{'yes' if r['ok'] else '**NO**'} |")
        flat = max(r["est_x_smallest"] for r in rows) / min(r["est_x_smallest"] for r in rows)
        out.append(f"\nEstablished curve spread: {flat:.2f}× (target: flat within 1.2×).")
        if kind == "conns":
            out.append("New connection at this scale: one SYN per BPF_PROG_TEST_RUN call "
                       "into the filled table (the harness would empty it), so it includes "
                       "~100 ns of per-call overhead and LRU eviction when the table is full.")
    return "\n".join(out)


def md_fwd(f):
    out = ["## 2. Forwarding rate through a balancer hop (live-frame generator)", "",
           f"64-byte UDP frames injected with BPF_F_TEST_XDP_LIVE_FRAMES on the client's "
           f"veth, counted on the real server's veth; {f['count']:,} frames per run "
           f"(new-flow mix {f['new_count']:,}), median of {f['runs']} runs, the injecting "
           "thread pinned to one CPU. All of one frame's work (injection, the balancer, the "
           "sink) runs on that CPU, so pps is per core; 'hop ns' is the balancer's share "
           "(1/pps − 1/ceiling).", ""]
    for mix, desc in fwdmod.MIXES.items():
        rows = [r for r in f["rows"] if r["mix"] == mix]
        if not rows:
            continue
        out += [f"### {desc}", "",
                "| variant | Mpps | xdplb ÷ this (pps) | hop ns/frame | hop: this ÷ xdplb | "
                "delivered | saturated |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            if "skip" in r:
                out.append(f"| {r['label']} | skipped: {r['skip']} | | | | | |")
                continue
            deliv = r["delivered"] / r["injected"] if r["injected"] else 0
            out.append(f"| {r['label']} | {r['pps'] / 1e6:.3f} | {_f(r.get('x_vs_xdplb'), '.2f')}"
                       f" | {_f(r.get('hop_ns'))} | {_f(r.get('hop_x_vs_xdplb'), '.1f')} | "
                       f"{deliv:.1%} | {fwdmod.bottleneck(r)} |")
        out.append("")
    t6 = [t for t in targets.evaluate({"fwd": f})]
    if t6:
        out += ["Target 6, a new flow every frame: " + "; ".join(
            f"xdplb ÷ {t['against']} = {t['value']:.2f}× ({t['op']} {t['bound']:g}×: "
            f"{targets.verdict(t)})" for t in t6) + ".", ""]
    return "\n".join(out)


def _over(r):
    if r["variant"] == "plain" or r.get("cpu_us_over_plain") is None:
        return "—"
    return f"{r['cpu_us_over_plain']:+.0f} ± {r['cpu_us_over_plain_err']:.0f}"


def md_cps(c):
    bg = c.get("background_busy")
    out = ["## 3. Connections per second and latency", "",
           f"TCP connect / `GET` / read to EOF / close cycles from the client namespace to "
           f"VIP:80 through the balancer namespace to a server on the real server's :8080 "
           f"(Python, {c['server_procs']} processes: accept, read, 63-byte HTTP/1.0 answer, "
           f"close), both at nice {c.get('nice', 0)}. Each worker is a process looping for "
           f"{c['time_limit']:g} s (at most {c['count']:,} connections in all) after "
           f"{c['warmup']} warm-up connections; the variants take turns over "
           f"{c.get('rounds', 1)} round(s): conn/s is the median round, p50/p99 are over "
           "every round's connections, each one whole cycle, connect() to close(), by "
           "time.perf_counter_ns. "
           "'plain' connects to the real server's own address through the same hops with no "
           "balancer rules: the ceiling of this client and server. 'CPU µs/conn' is the "
           "client's and the server's user + system time per connection, which on this "
           "kernel (tick accounting, no separate IRQ time) includes the veth softirqs and "
           "so the balancer's work; its excess over plain is the balancer's cost per "
           "connection (± the tick-sampling noise, √ticks).", ""]
    if bg is not None:
        out += [f"Host CPUs busy with other work just before this part: {bg:.0%} of "
                f"{c['cpus']} CPUs" + (" — rates and p99 below are disturbed by it; compare "
                                        "'CPU µs/conn' rather than rates." if bg > 0.15
                                        else "."), ""]
    for w in c["workers"]:
        rows = [r for r in c["rows"] if r["workers"] == w]
        out += [f"### {w} concurrent client worker{'s' if w > 1 else ''}", "",
                "| variant | conn/s | xdplb ÷ this | p50 µs | p99 µs | CPU µs/conn | over plain "
                "| failed | limited by |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            if "skip" in r:
                out.append(f"| {r['label']} | skipped: {r['skip']} | | | | | | | |")
                continue
            out.append(f"| {r['label']} | {r['cps']:,.0f} | {_f(r.get('x_vs_xdplb'), '.2f')} | "
                       f"{r['p50_us']:.0f} | {r['p99_us']:,.0f} | {_f(r.get('cpu_us_conn'))} | "
                       f"{_over(r)} | {r['errors']} | "
                       f"{cpsmod.bottleneck(r)} |")
        out.append("")
    return "\n".join(out)


def md_ctl(c):
    out = ["## 4. Control plane", "",
           f"Each tool in a namespace of its own; {c['dests']} destinations per service; "
           f"a load stopped after {c['timeout']:.0f} s (iptables: {3 * c['timeout']:.0f} s) "
           "is shown as '> limit' with what it had loaded. One `xdplbadm -a`: the median of "
           f"runs interleaved with the same command against a state of {c.get('small', 10)} "
           "services.", "",
           "| command | size | wall s | target |", "| --- | --- | ---: | --- |"]
    ipt = {r["size"]: r["seconds"] for r in c["rows"]
           if r["tool"] == "iptables-restore" and r["done"]}
    for r in c["rows"]:
        if r["seconds"] is None:
            secs = "failed"
        elif r["done"]:
            secs = f"{r['seconds']:.3f}"
        else:
            secs = f"> {r['seconds']:.0f} (stopped; {r.get('loaded', 0):,} svc loaded)"
        target = ""
        if r["tool"] == "xdplbadm -R" and r["size"] == 10000 and r.get("sched") == "rr":
            ratio = r["seconds"] / ipt[10000] if 10000 in ipt else None
            ok = r["done"] and r["seconds"] <= 1 and ratio is not None and ratio <= 0.5
            target = "≤ 1 s and ≤ 0.5× iptables-restore: " + ("yes" if ok else "no") + (
                f" ({ratio:.2f}×)" if ratio is not None else "")
        if r["tool"] == "xdplbadm -a" and r["seconds"]:
            ok = r["seconds"] <= 0.060 and (r.get("ratio") or 9) <= 1.3
            target = (f"≤ 60 ms and ≤ 1.3× at {c.get('small', 10)} svc "
                      f"({1000 * r['small_seconds']:.0f} ms): " if r.get("small_seconds")
                      else "≤ 60 ms: ") + ("yes" if ok else "no") + (
                f" ({r['ratio']:.2f}×)" if r.get("ratio") else "")
        out.append(f"| {r['tool']} | {r['what']} | {secs} | {target} |")
    if c.get("skip"):
        out.append(f"\n{c['skip']}.")
    return "\n".join(out)


def md_mem(m):
    out = ["## 5. Kernel memory (map accounting, default capacities)", "",
           "| map | max entries | key + value B | kernel bytes | bytes/entry |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for name, v in m["maps"].items():
        out.append(f"| {name} | {v['max_entries']:,} | {v['key']} + {v['value']} | "
                   f"{v['bytes']:,} | {v['per_entry']:.1f} |")
    out += ["", f"Total {m['total'] / 2**20:.1f} MiB, all preallocated ({m['cpus']} possible "
            "CPUs for the per-CPU maps).", "",
            "### Per tracked IPv4 connection", "",
            "One connection of each forwarding method set up through the program (SYN, the "
            "real server's SYN-ACK for Masq, ACK); its maps are the hash maps whose entry "
            "count grew, its entries the most it held at once. Bytes per connection = the "
            "maps' kernel bytes ÷ the connections they can hold. A Masq connection is one "
            "entry, keyed by the client's tuple; its replies find it through rs_table, "
            "which holds one entry per masquerading real server address:port (written "
            "when the destination is added, so it does not grow with connections: see "
            "the per-real-server row below) behind the fixed-size rs_filter array. IPv6 and "
            "full-NAT connections are not in the data path yet.", "",
            "| method | maps | entries per connection | kernel bytes | connections held | "
            "bytes per connection | ≤ 128 B |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in m.get("conns", []):
        if "skip" in c:
            out.append(f"| {c['method']} | skipped: {c['skip']} | | | | | |")
            continue
        out.append(f"| {c['method']} | {' + '.join(c['maps'])} | {c['entries']} | "
                   f"{c['bytes']:,} | {c['connections']:,} | {c['per_conn']:.0f} | "
                   f"{'met' if c['met'] else '**not met**'} |")
    out += ["", "| per | bytes |", "| --- | ---: |"]
    for what, b, _target in m["derived"]:
        out.append(f"| {what} | {b:.0f} |")
    return "\n".join(out)


def md_scale(sc):
    out = ["## 6. Scaling across CPUs (BPF_PROG_TEST_RUN loops, one pinned per CPU)", ""]
    if sc.get("skip"):
        return "\n".join(out + [f"Skipped: {sc['skip']}."])
    n = len(sc["cpus"])
    out += [f"Each variant run with one loop on one CPU and with one loop on each of CPUs "
            f"{', '.join(map(str, sc['cpus']))} at once, {sc['runs']} rounds taking turns; each "
            f"loop at least {sc['repeat']:,} iterations and {sc['seconds_per_loop']:g} s of "
            "work. ns are the kernel's per-iteration times (medians; all CPUs: of every loop); "
            "rates are net of the baseline measured the same way (the harness's control for "
            "new connections, the trivial program for established flows); the ratio is the "
            f"{n}-CPU rate over the one-CPU rate, paired per round. 'overlap' is the shortest "
            "loop's wall time over the longest's (1 = the loops ran side by side throughout).",
            "", f"| variant | iterations per loop | 1 CPU ns | {n} CPUs ns | net 1-CPU Mpps | "
            f"net {n}-CPU Mpps | {n}-CPU ÷ 1-CPU | rounds min–max | overlap | hits = repeat |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in sc["rows"]:
        label = f"*{r['label']}*" if r["reference"] else r["label"]
        spread = (f"{min(r['ratio_runs']):.2f}–{max(r['ratio_runs']):.2f}"
                  if r.get("ratio_runs") else "—")
        out.append(f"| {label} | {r['repeat']:,} | {r['one_ns']:.0f} | {r['all_ns']:.0f} | "
                   f"{_f(r.get('one_mpps'), '.2f')} | {_f(r.get('all_mpps'), '.2f')} | "
                   f"{_f(r.get('ratio'), '.2f')} | {spread} | {r['overlap']:.2f} | "
                   f"{'yes' if r['ok'] else '**NO**: ' + r['proof']} |")
    out += ["", "On a machine shared with other work, a one-CPU loop competes with that work "
            "on the other CPU (a shared core, memory bandwidth) while the all-CPU loops push "
            "it aside, so ratios above the CPU count are that noise; compare xdplb with its "
            "reference, which bears the same."]
    return "\n".join(out)


def md_ops(o):
    out = ["## 7. The anatomy of a new connection and of an established packet", "",
           f"A new connection's building blocks behind the new-connection harness (a "
           f"never-seen 5-tuple every iteration), {o['repeat']:,} iterations per run, in "
           "tables with the geometry of xdplb's conns (LRU) and conns_assured (hash) maps; "
           "the first row is the harness, the parse and the count, the others are net of it.",
           "",
           f"An established packet's building blocks on one fixed frame (an ACK client -> "
           f"VIP:80, no harness) whose tuple each table holds as its one entry, "
           f"{o['repeat_established']:,} iterations per run, in tables with "
           "the geometry of xdplb's conns_assured, conns, rs_table, egress_cache and tx_ports "
           "maps; the first row is the same parse and count with no lookup, the others are "
           "net of it. PROG_TEST_RUN carries out neither XDP_TX nor a redirect: the redirect "
           "row prices the helper, not the transmit.", "",
           f"Median of {o['runs']} runs, every row taking turns with all the others and proven "
           "by its own count moving by exactly repeat; instructions are its program's after "
           "verification (xlated).", ""]
    for group, title in (("new", "A new connection"), ("established", "An established packet")):
        out += [f"### {title}", "",
                "| building block | ns (median) | runs min–max | hits = repeat | "
                "instructions (xlated) |", "| --- | ---: | ---: | :---: | ---: |"]
        for r in o["rows"]:
            if r["group"] == group:
                out.append(f"| {r['label']} | {r['ns']:.0f} | {min(r['runs_ns']):.0f}–"
                           f"{max(r['runs_ns']):.0f} | "
                           f"{'yes' if r['ok'] else '**NO**: ' + r['proof']} | "
                           f"{r['xlated_insns']} |")
        out.append("")
    out += ["### Program sizes (the kernel's bpf_prog_info, as bpftool prog show)", "",
            "| program | role | instructions (xlated) | machine code bytes (jited) | "
            "instructions the verifier walked |", "| --- | --- | ---: | ---: | ---: |"]
    for p in o["sizes"]:
        out.append(f"| {p['name']} | {p['role']} | {p['xlated_insns']:,} | "
                   f"{p['jited_bytes']:,} | {p['verified_insns']:,} |")
    return "\n".join(out)


def markdown(res):
    meta = res["meta"]
    head = [f"# xdplb bench — {meta['date']}", "",
            f"Machine: {meta['cpu_model']}, {meta['cpus']} CPUs, kernel {meta['kernel']}. "
            f"Command: `{meta['command']}`. Total {meta['seconds']:.0f} s.", ""]
    parts = [targets.markdown(targets.evaluate(res))] if targets.evaluate(res) else []
    if "pkt" in res and targets.issue12(res["pkt"]):
        parts.append(targets.markdown(targets.issue12(res["pkt"]),
                                      "Issue 12's rows (reported, not asserted)"))
    if "pkt" in res and targets.issue12(res["pkt"], targets.ISSUE13):
        parts.append(targets.markdown(targets.issue12(res["pkt"], targets.ISSUE13),
                                      "Issue 13's rows (reported, not asserted)"))
    if "pkt" in res:
        parts.append(md_pkt(res))
    if "fwd" in res:
        parts.append(md_fwd(res["fwd"]))
    if "cps" in res:
        parts.append(md_cps(res["cps"]))
    if "ctl" in res:
        parts.append(md_ctl(res["ctl"]))
    if "mem" in res:
        parts.append(md_mem(res["mem"]))
    if "scale" in res:
        parts.append(md_scale(res["scale"]))
    if "ops" in res:
        parts.append(md_ops(res["ops"]))
    if "checks" in res:
        from . import checks
        parts.append(checks.markdown(res["checks"]))
    return "\n".join(head) + "\n" + "\n\n".join(parts) + "\n"


def write(res, out):
    os.makedirs(out, exist_ok=True)
    text = markdown(res)
    made = plots.make(res, out)
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{m}]({m})" for m in made) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    return text, made
