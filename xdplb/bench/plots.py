"""The bench's PNG plots (matplotlib, Agg backend: no display needed), made
to be read at a glance: whole labels (wrapped, never cut), the value on each
bar, reference rows set apart (grey, hatched, named in the legend), and
titles that say what is measured and which way is better."""
import os
import textwrap

from . import fwd as fwdmod
from . import targets as targetsmod

XDPLB, REFERENCE, KERNEL = "tab:blue", "#b0b0b0", "tab:red"
MET, NOT_MET, REPORTED = "tab:green", "tab:red", "#b0b0b0"
WRAP = 44     # characters per label line
DPI = 110


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _wrap(label):
    return textwrap.fill(label, WRAP)


def _height(labels, extra=1.6):
    """Figure height (inches) for bars with these (wrapped) labels."""
    return extra + sum(0.22 * (label.count("\n") + 1) + 0.18 for label in labels)


def _legend(fig, entries, lines=()):
    """One legend for the figure, in a row under its title: entries are
    (text, colour, hatch) patches, lines (text, Line2D keywords)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=c, hatch=h, edgecolor="black", label=t) for t, c, h in entries]
    handles += [Line2D([], [], label=t, **kw) for t, kw in lines]
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=len(handles),
               bbox_to_anchor=(0.5, 1 - 0.35 / fig.get_figheight()), frameon=False)


def _note(ax, text, x, y):
    """text right of (x, y), on white so that lines behind it do not cross it."""
    if text:
        ax.annotate(text, (x, y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})


def _bars(ax, labels, values, colors, hatches, fmt, xlabel, title=None):
    """Horizontal bars, first on top, each with its value at its end."""
    ys = range(len(values))
    ax.barh(ys, values, color=colors, hatch=hatches, edgecolor="black", linewidth=0.5)
    ax.set_yticks(list(ys), [_wrap(label) for label in labels], fontsize=8)
    ax.set_ylim(len(values) - 0.5, -0.5)    # first on top, no empty band
    for y, v in zip(ys, values):
        _note(ax, fmt(v), v, y)
    ax.margins(x=0.18)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _style(rows):
    return ([REFERENCE if r.get("reference") else XDPLB for r in rows],
            ["//" if r.get("reference") else "" for r in rows])


def _save(fig, out, name, made, title=""):
    """Title on top, the legend under it (0.55 in), the axes below."""
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.08 / fig.get_figheight(), va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(os.path.join(out, name), dpi=DPI)
    _plt().close(fig)
    made.append(name)


def _bound_ticks(ax, bounds, rows):
    """A short black tick at each row's target bound (ns)."""
    for y, r in enumerate(rows):
        if r["part"] in bounds:
            ax.plot([bounds[r["part"]]] * 2, [y - 0.42, y + 0.42], color="black", lw=2.5)


def _live_bounds(rows, floor, parts):
    """The Tunnel target's bound (ns) of each of parts against its live-frame Route row."""
    return {x: floor + targetsmod.TUNNEL * (rows[ref]["ns"] - floor)
            for x, ref, _, _ in targetsmod.ISSUE12
            if x in parts and ref.endswith("-live") and ref in rows}


def pkt(res, out, made):
    plt = _plt()
    rows = {r["part"]: r for r in res["pkt"]["rows"]}
    floor = rows["trivial"]["ns"]
    groups = [("Established flow", ("trivial", "minnat", "nat", "nat-reply", "dr"),
               {p: floor + targetsmod.ESTABLISHED * (rows["minnat"]["ns"] - floor)
                for p in ("nat", "nat-reply", "dr") if "minnat" in rows}),
              ("New connection (SYN)", ("newflow-fresh", "newconn-fresh", "newflow", "newconn",
                                        "newconn-call"),
               {x: floor + targetsmod.NEWCONN * (rows[ref]["ns"] - floor)
                for x, ref in (("newconn-fresh", "newflow-fresh"), ("newconn", "newflow"))
                if ref in rows}),
              ("IPv6 and ICMP translation", ("nat", "nat6", "nat-reply", "nat6-reply", "dr",
                                             "dr6", "icmp"),
               {x: floor + targetsmod.IPV6 * (rows[ref]["ns"] - floor)
                for x, ref, bound, _ in targetsmod.ISSUE12
                if bound == targetsmod.IPV6 and ref in rows}),
              *((f"Tunnel, {fam} client (live frames behind the replay harness, net of it)",
                 (dr, live, *tuns), _live_bounds(rows, floor, tuns))
                for fam, dr, live, tuns in (
                    ("IPv4", "dr", "dr-live", ("tun-ipip", "tun-gue", "tun-4in6")),
                    ("IPv6", "dr6", "dr6-live", ("tun6-ipip", "tun6-gue", "tun-6in4"))))]
    groups = [(t, [rows[p] for p in parts if p in rows], b) for t, parts, b in groups]
    groups = [g for g in groups if g[1]]
    heights = [_height([_wrap(r["label"]) for r in g[1]], 0.9) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, sum(heights) + 1.0), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, grows, bounds) in zip(axes[:, 0], groups):
        colors, hatches = _style(grows)
        _bars(ax, [r["label"] for r in grows], [r["ns"] for r in grows], colors, hatches,
              lambda v: f"{v:,.0f} ns", "ns per packet (median of the runs)",
              f"{title}: ns per packet, lower is better")
        _bound_ticks(ax, bounds, grows)
    _legend(fig, [("xdplb (bpf/xdplb.c)", XDPLB, ""),
                  ("reference program (bpf/bench_trivial.c)", REFERENCE, "//")],
            [("the issue's target for that row", {"color": "black", "lw": 2.5})])
    _save(fig, out, "pkt.png", made, "xdplb per-packet cost, BPF_PROG_TEST_RUN medians "
          "(new connections net of the harness)")


def sched(res, out, made):
    rows = [r for r in res["sched"] if "ns" in r]
    if not rows:
        return
    plt = _plt()
    rr = next((r for r in rows if r["part"] == "sched-rr"), None)
    labels = [f"-s {r['sched']}, {r['dests']} dests" for r in rows]
    fig, ax = plt.subplots(figsize=(9, _height(labels)))
    colors = [REFERENCE if r is rr else (XDPLB if r["dests"] == 3 else "tab:cyan") for r in rows]
    hatches = ["//" if r is rr else "" for r in rows]
    _bars(ax, labels, [r["ns"] for r in rows], colors, hatches,
          lambda v: f"{v:,.0f} ns", "ns per new connection (SYN, Masq, table with room)")
    entries = [("xdplb, 3 destinations", XDPLB, ""), ("xdplb, 64 destinations", "tab:cyan", "")]
    if rr:
        bound = rr["floor"] + targetsmod.SCHED * (rr["ns"] - rr["floor"])
        ax.axvline(bound, color="black", ls="--", lw=1)
        entries.insert(0, ("-s rr: the bar for the others", REFERENCE, "//"))
    _legend(fig, entries, [(f"target: {targetsmod.SCHED:g}× rr net of the floor",
                            {"color": "black", "ls": "--", "lw": 1})] if rr else [])
    _save(fig, out, "sched.png", made,
          "New connection per scheduler: ns per SYN, lower is better")


def curves(res, out, made):
    plt = _plt()
    for kind in ("services", "conns"):
        rows = res.get(f"curve_{kind}")
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        xs = [r["size"] for r in rows]
        series = [("established NAT", [r["est_ns"] for r in rows], "o-")]
        news = [r.get("new_ns", r.get("new_call_ns")) for r in rows]
        series.append(("new connection" + ("" if kind == "services" else " (one SYN per call)"),
                       news, "s-"))
        for label, ys, style in series:
            ax.plot(xs, ys, style, label=label)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("services" if kind == "services" else "tracked Masq connections")
        ax.set_ylabel("ns per packet (median)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        _save(fig, out, f"scale_{kind}.png", made, f"xdplb ns per packet against the number "
              f"of {kind}: lower and flatter is better")


def cpus(res, out, made):
    sc = res["scale"]
    rows = [r for r in sc.get("rows", []) if "ratio" in r]
    if not rows:
        return
    plt = _plt()
    n = len(sc["cpus"])
    fig, ax = plt.subplots(figsize=(9, _height([_wrap(r["label"]) for r in rows])))
    colors, hatches = _style(rows)
    _bars(ax, [r["label"] for r in rows], [r["ratio"] for r in rows], colors, hatches,
          lambda v: f"{v:.2f}×", f"rate on {n} CPUs ÷ rate on 1 CPU (net)")
    ax.axvline(n, color="black", ls=":", lw=1)
    _legend(fig, [("xdplb", XDPLB, ""), ("reference program: the bar for xdplb", REFERENCE,
                                         "//")],
            [(f"{n}×: perfect scaling", {"color": "black", "ls": ":", "lw": 1})])
    _save(fig, out, "cpus.png", made,
          f"Scaling across CPUs: {n}-CPU rate ÷ 1-CPU rate, higher is better")


OPS_PLOTS = (("new", "ops.png", "harness + parse + count", "A new connection's"),
             ("established", "ops-established.png", "parse + count on a fixed frame",
              "An established packet's"))


def ops(res, out, made):
    """One plot per group: an established packet's blocks are tens of ns,
    a new connection's hundreds."""
    plt = _plt()
    for group, name, baseline, whose in OPS_PLOTS:
        rows = [r for r in res["ops"]["rows"] if r["group"] == group]
        labels = [r["label"] for r in rows]
        fig, ax = plt.subplots(figsize=(10, _height([_wrap(label) for label in labels])))
        base = [r["baseline"] for r in rows]
        _bars(ax, labels, [r["ns"] for r in rows], [REFERENCE if b else XDPLB for b in base],
              ["//" if b else "" for b in base], lambda v: f"{v:,.0f} ns",
              "ns per operation (median; all but the first net of the first)")
        _legend(fig, [("one operation, net of the baseline", XDPLB, ""),
                      (f"the baseline: {baseline}", REFERENCE, "//")])
        _save(fig, out, name, made, f"{whose} building blocks: ns each, lower is better")


def targets(res, out, made):
    ts = [t for t in targetsmod.evaluate(res) if t["value"] is not None]
    if not ts:
        return
    plt = _plt()
    labels = [f"{t['no']}. {t['short']}" for t in ts]
    fig, ax = plt.subplots(figsize=(10, _height(labels)))
    values = [t["value"] / t["bound"] for t in ts]
    colors = [{True: MET, False: NOT_MET, None: REPORTED}[t["met"]] for t in ts]
    _bars(ax, labels, values, colors, ["//" if t["met"] is None else "" for t in ts],
          lambda v: "", "measured ÷ bound (≤ targets want the bar left of 1, ≥ targets right)")
    for y, t in enumerate(ts):
        value = f"{t['value']:.0f} B" if t["unit"] == " B" else f"{t['value']:.2f}×"
        _note(ax, f"{value} ({t['op']} {t['bound']:g}{t['unit']}: "
                  f"{targetsmod.verdict(t).strip('*')})", values[y], y)
    ax.axvline(1, color="black", lw=1.5)
    ax.margins(x=0.45)
    _legend(fig, [("met", MET, ""), ("not met", NOT_MET, ""), ("reported, no bound", REPORTED,
                                                               "//")],
            [("the bound", {"color": "black", "lw": 1.5})])
    _save(fig, out, "targets.png", made,
          "Issue 11 targets: each measured value against its bound")


def _kernel_style(rows, ceiling):
    colors = [REFERENCE if r["variant"] in ceiling else XDPLB if r["variant"] == "xdplb"
              else KERNEL for r in rows]
    return colors, ["//" if r["variant"] in ceiling else "" for r in rows]


_KERNEL_LEGEND = [("xdplb", XDPLB, ""), ("kernel path", KERNEL, ""),
                  ("no balancing (a ceiling)", REFERENCE, "//")]


def fwd(res, out, made):
    plt = _plt()
    mixes = [m for m in fwdmod.MIXES if any(r["mix"] == m for r in res["fwd"]["rows"])]
    rows_of = {m: [r for r in res["fwd"]["rows"] if r["mix"] == m and "pps" in r] for m in mixes}
    h = max(_height([_wrap(r["label"]) for r in rows]) for rows in rows_of.values())
    fig, axes = plt.subplots(1, len(mixes), figsize=(8 * len(mixes), h + 0.4), squeeze=False)
    for ax, mix in zip(axes[0], mixes):
        rows = rows_of[mix]
        colors, hatches = _kernel_style(rows, ("ceiling", "plain"))
        _bars(ax, [r["label"] for r in rows], [r["pps"] / 1e6 for r in rows], colors, hatches,
              lambda v: f"{v:.3g} Mpps", "Mpps through the balancer (one CPU)",
              fwdmod.MIXES[mix])
    _legend(fig, _KERNEL_LEGEND)
    _save(fig, out, "fwd.png", made,
          "Forwarding rate through a balancer hop (64-byte UDP): Mpps, higher is better")


def cps(res, out, made):
    plt = _plt()
    ws = res["cps"]["workers"]
    fig, axes = plt.subplots(len(ws), 1, figsize=(11, 3.8 * len(ws) + 0.6), squeeze=False)
    for ax, w in zip(axes[:, 0], ws):
        rows = [r for r in res["cps"]["rows"] if r["workers"] == w and "cps" in r]
        colors, hatches = _kernel_style(rows, ("plain",))
        _bars(ax, [r["label"] for r in rows], [r["cps"] for r in rows], colors, hatches,
              lambda v: "", "TCP connections per second (connect, GET, close)",
              f"{w} concurrent client worker{'s' if w > 1 else ''}")
        for y, r in enumerate(rows):
            _note(ax, f"{r['cps']:,.0f}/s (p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:,.0f} µs)",
                  r["cps"], y)
        ax.margins(x=0.45)
    _legend(fig, _KERNEL_LEGEND)
    _save(fig, out, "cps.png", made,
          "TCP connections per second through the balancer, higher is better")


def ctl(res, out, made):
    rows = [r for r in res["ctl"]["rows"] if r["size"] and r["seconds"]]
    if not rows:
        return
    plt = _plt()
    labels = [f"{r['tool']}: {r['what']}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, _height([_wrap(label) for label in labels])))
    _bars(ax, labels, [r["seconds"] for r in rows],
          [XDPLB if r["tool"].startswith("xdplb") else KERNEL for r in rows], [""] * len(rows),
          lambda v: f"{v:.3g} s", "wall seconds (log scale; stopped loads at their limit)")
    ax.set_xscale("log")
    _legend(fig, _KERNEL_LEGEND[:2])
    _save(fig, out, "ctl.png", made, "Control plane: seconds to load the rules, lower is better")


def make(res, out):
    """Every plot res has figures for; returns the file names."""
    made = []
    if "pkt" in res:
        pkt(res, out, made)
    if res.get("sched"):
        sched(res, out, made)
    curves(res, out, made)
    if "scale" in res:
        cpus(res, out, made)
    if "ops" in res:
        ops(res, out, made)
    for part, draw in (("fwd", fwd), ("cps", cps), ("ctl", ctl)):
        if part in res:
            draw(res, out, made)
    targets(res, out, made)
    return made
