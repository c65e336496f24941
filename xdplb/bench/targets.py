"""The targets of issue 11, evaluated on one bench result: every figure
compared only with figures of the same run.

Per-packet ratios are net of the trivial floor, (row - floor) / (reference -
floor): what the two programs do beyond entering and leaving XDP; for rows
that took turns, the median of the runs' ratios (net_ratio). A target
whose rows did not prove their path (counters) is not met, whatever the
ratio. Each target is a dict: no (the issue's target number), short (a
plot label), what, measured
and against (row labels), value, unit ("×" or " B"), op ("≤" or "≥"),
bound, met (True / False / None: reported, no bound applies) and note.
"""
import statistics

NEWCONN = 1.5      # new connection ≤ this × the minimal new-flow program
SCHED = 1.3        # every scheduler's new connection ≤ this × rr's
ESTABLISHED = 1.2  # established ≤ this × the minimal NAT program
SCALING = 0.9      # xdplb's all-CPU/one-CPU ratio ≥ this × the reference's
IPTABLES, NFT = 5.0, 3.0   # a new flow every frame: xdplb ≥ this × their rate
# Issue 12's comparisons, reported, not asserted: (row, against, bound, what).
IPV6, TUNNEL = 1.3, 1.5    # established IPv6 ≤ this × IPv4; Tunnel ≤ this × Route
ISSUE12 = (
    ("nat6", "nat", IPV6, "established IPv6 Masq ÷ IPv4"),
    ("nat6-reply", "nat-reply", IPV6, "established IPv6 Masq reply ÷ IPv4"),
    ("dr6", "dr", IPV6, "established IPv6 Route ÷ IPv4"),
    ("tun-ipip", "dr", TUNNEL, "established Tunnel ipip ÷ Route"),
    ("tun-gue", "dr", TUNNEL, "established Tunnel gue ÷ Route"),
    ("tun-ipip", "dr-live", TUNNEL, "established Tunnel ipip ÷ Route, both live frames"),
    ("tun-gue", "dr-live", TUNNEL, "established Tunnel gue ÷ Route, both live frames"),
    ("tun6-ipip", "dr6", TUNNEL, "established IPv6 Tunnel ipip (6in6) ÷ IPv6 Route"),
    ("tun6-gue", "dr6", TUNNEL, "established IPv6 Tunnel gue ÷ IPv6 Route"),
    ("tun6-ipip", "dr6-live", TUNNEL,
     "established IPv6 Tunnel ipip (6in6) ÷ IPv6 Route, both live frames"),
    ("tun6-gue", "dr6-live", TUNNEL, "established IPv6 Tunnel gue ÷ IPv6 Route, both live frames"),
    ("tun-4in6", "dr-live", TUNNEL, "established Tunnel IPv4 in IPv6 ÷ Route, both live frames"),
    ("tun-6in4", "dr6-live", TUNNEL,
     "established Tunnel IPv6 in IPv4 ÷ IPv6 Route, both live frames"),
    ("icmp", "nat", None, "ICMP error translated ÷ established Masq packet"),
)
# Issue 13's, the same way: full-NAT against Masq.
FNAT_EST, FNAT_NEW = 1.2, 1.3
ISSUE13 = (
    ("fnat", "nat", FNAT_EST, "established full-NAT ÷ Masq"),
    ("fnat-reply", "nat-reply", FNAT_EST, "established full-NAT reply ÷ Masq reply"),
    ("newconn-fnat-fresh", "newconn-fresh", FNAT_NEW,
     "new full-NAT connection ÷ new Masq connection, table with room"),
)


def net_ratio(row, ref, floor):
    """(row - floor) / (ref - floor); where the two rows took turns (as
    many runs each), the median of the runs' ratios: each run's pair ran
    side by side, so a slow stretch of the machine weighs on both."""
    a, b = row.get("runs_ns", []), ref.get("runs_ns", [])
    if a and len(a) == len(b):
        return statistics.median((x - floor) / (y - floor) for x, y in zip(a, b))
    return (row["ns"] - floor) / (ref["ns"] - floor)


def _target(no, short, what, measured, against, value, op, bound, proven=True, unit="×",
            note="", reported=False):
    if reported:
        met = None
    else:
        met = proven and (value <= bound if op == "≤" else value >= bound)
    return {"no": no, "short": short, "what": what, "measured": measured, "against": against, "value": value,
            "unit": unit, "op": op, "bound": bound, "met": met,
            "note": note if proven else "row not proven by its counters; " + note}


def _pkt(pkt):
    rows = {r["part"]: r for r in pkt["rows"]}
    floor = rows["trivial"]["ns"]
    refs = [rows[p] for p in ("trivial", "minnat", "newflow-fresh", "newflow") if p in rows]
    out = [{"no": 1, "short": "reference programs",
            "what": "reference programs compiled and measured in this run",
            "measured": ", ".join(r["label"] for r in refs), "against": "—", "value": None,
            "unit": "", "op": "", "bound": None, "note": "each proven by its own counters",
            "met": len(refs) == 4 and all(r["ok"] for r in refs)}]
    for x, ref in (("newconn-fresh", "newflow-fresh"), ("newconn", "newflow")):
        if x in rows and ref in rows:
            table = "full table" if x == "newconn" else "table with room"
            out.append(_target(2, f"new connection, {table}", "new connection",
                               rows[x]["label"], rows[ref]["label"],
                               net_ratio(rows[x], rows[ref], floor), "≤", NEWCONN,
                               rows[x]["ok"] and rows[ref]["ok"]))
    for x, name in (("nat", "NAT"), ("nat-reply", "NAT reply"), ("dr", "DR")):
        if x in rows and "minnat" in rows:
            out.append(_target(3, f"established {name}",
                               "established flow", rows[x]["label"], rows["minnat"]["label"],
                               net_ratio(rows[x], rows["minnat"], floor), "≤", ESTABLISHED,
                               rows[x]["ok"] and rows["minnat"]["ok"]))
    return out


def _sched(sched):
    rr = next((r for r in sched if r["part"] == "sched-rr" and "ns" in r), None)
    out = []
    for r in sched:
        if rr is None or r is rr or "x_rr" not in r:
            continue
        many = r["dests"] != 3
        out.append(_target(2, f"-s {r['sched']} ÷ -s rr, {r['dests']} dests",
                           f"new connection per scheduler, {r['dests']} destinations",
                           f"-s {r['sched']}, {r['dests']} dests", "-s rr, 3 dests", r["x_rr"],
                           "≤", SCHED, r["ok"] and rr["ok"], reported=many,
                           note="reported, no bound" if many else ""))
    return out


def _mem(mem):
    return [_target(4, f"memory per connection, {c['method']}",
                    f"memory per IPv4 connection, {c['method']}",
                    f"{' + '.join(c['maps'])}: {c['bytes']:,} B for {c['connections']:,} "
                    f"connections ({c['entries']} entr{'y' if c['entries'] == 1 else 'ies'} each)",
                    "the kernel's memlock per map", round(c["per_conn"]), "≤", c["target"],
                    unit=" B", note="the maps' fixed overhead is a fraction of a byte")
            for c in mem.get("conns", []) if "skip" not in c]


def _scale(scale):
    return [_target(5, f"scaling to {len(scale['cpus'])} CPUs, "
                       f"{'established' if p['xdplb'] == 'nat' else '-s ' + p['xdplb']}",
                    f"scaling to {len(scale['cpus'])} CPUs", p["label"], p["ref_label"],
                    p["relative"], "≥", SCALING, p["ok"],
                    note=f"{len(scale['cpus'])}-CPU/1-CPU rate: xdplb {p['ratio']:.2f}×, "
                         f"reference {p['ref_ratio']:.2f}×")
            for p in scale.get("pairs", [])]


def _fwd(fwd):
    rows = [r for r in fwd["rows"] if r["mix"] == "new" and "pps" in r]
    xd = next((r for r in rows if r["variant"] == "xdplb"), None)
    out = []
    if xd is None:
        return out
    for variant, n, bound in (("iptables", 1, IPTABLES), ("nft", 1, NFT)):
        other = next((r for r in rows if r["variant"] == variant and r["n"] == n), None)
        if other:
            out.append(_target(6, f"new flow every frame ÷ {variant}",
                               "a new flow every frame (live frames)", xd["label"],
                               other["label"], xd["pps"] / other["pps"], "≥", bound,
                               note="forwarding-rate ratio (pps)"))
    return out


def evaluate(res):
    """Every target res has figures for, in the issue's order."""
    out = []
    if "pkt" in res:
        out += _pkt(res["pkt"])
    if res.get("sched"):
        out += _sched(res["sched"])
    if "mem" in res:
        out += _mem(res["mem"])
    if "scale" in res:
        out += _scale(res["scale"])
    if "fwd" in res:
        out += _fwd(res["fwd"])
    return sorted(out, key=lambda t: t["no"])


def issue12(pkt, table=ISSUE12):
    """Issue 12's comparisons (or table's: ISSUE13) of the rows pkt has,
    net of the floor."""
    rows = {r["part"]: r for r in pkt["rows"]}
    floor = rows["trivial"]["ns"]
    return [_target("", f"{x} ÷ {ref}", what, rows[x]["label"], rows[ref]["label"],
                    net_ratio(rows[x], rows[ref], floor), "≤" if bound else "", bound,
                    rows[x]["ok"] and rows[ref]["ok"], reported=True)
            for x, ref, bound, what in table if x in rows and ref in rows]


def verdict(t):
    return {True: "met", False: "**not met**", None: "reported"}[t["met"]]


def markdown(targets, title="Targets (issue 11)"):
    if not targets:
        return ""
    out = [f"## {title}", "",
           "Per-packet ratios are net of the trivial floor: (row − floor) ÷ (reference − "
           "floor), the median of the runs' ratios where the two rows took turns (each "
           "run's pair side by side). Only figures of this run are compared.", "",
           "| # | target | measured | against | value | bound | |",
           "| ---: | --- | --- | --- | ---: | ---: | --- |"]
    for t in targets:
        value = "—" if t["value"] is None else (
            f"{t['value']:.0f}{t['unit']}" if t["unit"] == " B" else f"{t['value']:.2f}×")
        bound = "—" if t["bound"] is None else f"{t['op']} {t['bound']:g}{t['unit']}"
        note = f" ({t['note']})" if t["note"] else ""
        out.append(f"| {t['no']} | {t['what']}{note} | {t['measured']} | {t['against']} | "
                   f"{value} | {bound} | {verdict(t)} |")
    return "\n".join(out)
