"""The results folder: results.md (every table), results.json (raw figures)
and PNG plots (matplotlib, Agg backend: no display needed)."""
import json
import os

from . import cps as cpsmod
from . import fwd as fwdmod


def _f(x, spec=".0f", none="—"):
    return none if x is None else format(x, spec)


def md_pkt(res):
    from .pkt import format_table
    out = ["## 1. Per-packet cost (BPF_PROG_TEST_RUN)", "", format_table(res["pkt"])]
    if res.get("sched"):
        out += ["", "### New connection per scheduler (every scheduler xdplb.model knows)", "",
                "| scheduler | ns/packet (median) | runs min–max | × floor | hits = repeat |",
                "| --- | ---: | ---: | ---: | :---: |"]
        for r in res["sched"]:
            if "skip" in r:
                out.append(f"| {r['label']} | skipped: {r['skip']} | | | |")
                continue
            out.append(f"| -s {r['sched']} | {r['ns']:.0f} | {min(r['runs_ns']):.0f}–"
                       f"{max(r['runs_ns']):.0f} | {r['x_floor']:.1f} | "
                       f"{'yes' if r['ok'] else '**NO**'} |")
    for kind in ("services", "conns"):
        rows = res.get(f"curve_{kind}")
        if not rows:
            continue
        what = "services" if kind == "services" else "tracked Masq connections (2 entries each)"
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
            "CPUs for the per-CPU maps).", "", "| per | bytes | target |",
            "| --- | ---: | --- |"]
    for what, b, target in m["derived"]:
        t = f"≤ {target}: {'yes' if round(b) <= target else 'no'}" if target else ""
        out.append(f"| {what} | {b:.0f} | {t} |")
    return "\n".join(out)


def markdown(res):
    meta = res["meta"]
    head = [f"# xdplb bench — {meta['date']}", "",
            f"Machine: {meta['cpu_model']}, {meta['cpus']} CPUs, kernel {meta['kernel']}. "
            f"Command: `{meta['command']}`. Total {meta['seconds']:.0f} s.", ""]
    parts = []
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
    return "\n".join(head) + "\n" + "\n\n".join(parts) + "\n"


def plots(res, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    if "pkt" in res:
        rows = [r for r in res["pkt"]["rows"] if not r["part"].startswith("newconn-h")]
        rows += [r for r in res.get("sched", []) if "ns" in r]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
        ax.barh([r["label"][:60] for r in rows], [r["ns"] for r in rows], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ns per packet (BPF_PROG_TEST_RUN, median; log scale)")
        ax.set_title("xdplb per-packet cost")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "pkt.png"), dpi=110)
        plt.close(fig)
        made.append("pkt.png")
    for kind in ("services", "conns"):
        rows = res.get(f"curve_{kind}")
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [r["size"] for r in rows]
        ax.plot(xs, [r["est_ns"] for r in rows], "o-", label="established NAT")
        news = [r.get("new_ns", r.get("new_call_ns")) for r in rows]
        ax.plot(xs, news, "s-", label="new connection" + ("" if kind == "services"
                                                           else " (per call)"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("services" if kind == "services" else "tracked connections")
        ax.set_ylabel("ns per packet")
        ax.set_title(f"xdplb cost against the number of {kind}")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"scale_{kind}.png"), dpi=110)
        plt.close(fig)
        made.append(f"scale_{kind}.png")
    if "fwd" in res:
        mixes = [m for m in fwdmod.MIXES if any(r["mix"] == m for r in res["fwd"]["rows"])]
        fig, axes = plt.subplots(1, len(mixes), figsize=(7 * len(mixes), 4.5), squeeze=False)
        for ax, mix in zip(axes[0], mixes):
            rows = [r for r in res["fwd"]["rows"] if r["mix"] == mix and "pps" in r]
            colors = ["tab:gray" if r["variant"] == "ceiling" else
                      "tab:green" if r["variant"] == "xdplb" else "tab:red" for r in rows]
            ax.barh([r["label"][:45] for r in rows], [r["pps"] / 1e6 for r in rows],
                    color=colors)
            ax.invert_yaxis()
            ax.set_xlabel("Mpps through the balancer (one CPU)")
            ax.set_title(fwdmod.MIXES[mix])
        fig.tight_layout()
        fig.savefig(os.path.join(out, "fwd.png"), dpi=110)
        plt.close(fig)
        made.append("fwd.png")
    if "cps" in res:
        ws = res["cps"]["workers"]
        fig, axes = plt.subplots(len(ws), 1, figsize=(10, 3.6 * len(ws)), squeeze=False)
        for ax, w in zip(axes[:, 0], ws):
            rows = [r for r in res["cps"]["rows"] if r["workers"] == w and "cps" in r]
            colors = ["tab:gray" if r["variant"] == "plain" else
                      "tab:green" if r["variant"] == "xdplb" else "tab:red" for r in rows]
            ax.barh([r["label"][:45] for r in rows], [r["cps"] for r in rows], color=colors)
            for i, r in enumerate(rows):
                ax.annotate(f" p50 {r['p50_us']:.0f} / p99 {r['p99_us']:,.0f} µs",
                            (r["cps"], i), va="center", fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("TCP connections per second (connect, GET, close)")
            ax.set_title(f"{w} concurrent client worker{'s' if w > 1 else ''}")
            ax.margins(x=0.4)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "cps.png"), dpi=110)
        plt.close(fig)
        made.append("cps.png")
    if "ctl" in res:
        rows = [r for r in res["ctl"]["rows"] if r["size"] and r["seconds"]]
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{r['tool']}\n{r['what']}"[:60] for r in rows]
        ax.barh(labels, [r["seconds"] for r in rows],
                color=["tab:green" if r["tool"].startswith("xdplb") else "tab:red"
                       for r in rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("wall seconds (log; stopped loads at their limit)")
        ax.set_title("control plane")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "ctl.png"), dpi=110)
        plt.close(fig)
        made.append("ctl.png")
    return made


def write(res, out):
    os.makedirs(out, exist_ok=True)
    text = markdown(res)
    made = plots(res, out)
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{m}]({m})" for m in made) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    return text, made
