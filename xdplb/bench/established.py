"""Part 1's established-flow rows, all taking turns in one interleave():
the floor (bench_trivial), the minimal NAT program and xdplb's established
flows, each a fixed point the program's own counters prove (pkt.py): a
client's packet (Masq), a real server's reply (Masq) and Route, over IPv4
and IPv6; an ICMP error about a Masq connection translated (xlate.py); and
Route and Tunnel behind the replay harness with live frames (tun.py), shown
net of that harness.
"""
import dataclasses

from . import fnat, pkt, tun, xlate
from .common import percpu_sum
from .frames import hp, is6
from .pkt import (CLIENT, CLIENT_MAC, CPORT, CPORT_REPLY, ESTABLISHED_IN, VIP, VIP6,
                  VIP6_DR, VIP_DR, VPORT, Built, Timed, client_of, entry, real_of, tcp_frame)

LABELS = {
    "trivial": "trivial XDP_TX (floor)",
    "minnat": "minimal NAT reference",
    "nat": "xdplb established NAT (client -> VIP, Masq)",
    "nat-reply": "xdplb established NAT reply (RS -> client, un-NAT)",
    "dr": "xdplb established DR (client -> VIP, Route)",
    "nat6": "xdplb established IPv6 NAT (client -> VIP6, Masq)",
    "nat6-reply": "xdplb established IPv6 NAT reply (RS6 -> client, un-NAT)",
    "dr6": "xdplb established IPv6 DR (client -> VIP6, Route)",
}
VIPS = {"nat": VIP, "nat-reply": VIP, "dr": VIP_DR, "nat6": VIP6, "nat6-reply": VIP6,
        "dr6": VIP6_DR}


@dataclasses.dataclass
class Lab:
    """What a row is built from: the reference programs (bcc object b and
    their fds), xdplb's state, the ifindex of bc0 and br0."""
    b: object
    fds: dict
    st: object
    ifindex: dict


def client_path(st, client=CLIENT):
    """What a client's frame pays before its connection lookup (method notes)."""
    if pkt.rs_filtered(st, client):
        return ("the client's rs_filter bit is set (a hash collision with a masquerading "
                "real server's address), so each iteration also looks rs_table up")
    return "the client's rs_filter bit is clear: one array load before the lookup"


def _assured(vip):
    return "conns6_assured" if is6(vip) else "conns_assured"


def _trivial(lab, part, repeat):
    frame = tcp_frame(CLIENT, VIP, CPORT, VPORT, pkt.TCP_ACK, CLIENT_MAC)
    return Built(Timed(part, lab.fds["bench_trivial"], frame, lab.ifindex["bc0"], repeat), {},
                 "bench_trivial: returns XDP_TX, touches nothing", LABELS[part])


def _minnat(lab, part, repeat):
    hits = lab.b[b"mn_hits"]
    return Built(Timed(part, lab.fds["bench_minnat"], pkt.minnat_flow(lab.b),
                       lab.ifindex["bc0"], repeat, lambda: {"minnat.hits": percpu_sum(hits)}),
                 {"minnat.hits": 1}, "bench_minnat with LRU entries for client->VIP:80 and its "
                 "rewritten form client->RS:8080 (both rewrite to RS:8080)", LABELS[part])


def _nat(lab, part, repeat):
    vip = VIPS[part]
    frame, c = pkt.establish_nat(lab.st, lab.ifindex, vip=vip)
    rs, e = hp(*real_of(c)), entry(c)
    return Built(Timed(part, lab.st.prog_fd, frame, lab.ifindex["bc0"], repeat,
                       pkt.probe(lab.st, svc=e.svc_slot, dests=(e.dest_slot,))),
                 ESTABLISHED_IN,
                 f"ACK client:{CPORT}->{hp(vip, VPORT)} on a connection set up by its "
                 "handshake through the program (SYN, the real server's SYN-ACK, ACK: "
                 f"ESTABLISHED, in {_assured(vip)}, the egress from the per-destination "
                 f"cache); the rewritten frame client->{rs} finds a copy of the connection's "
                 f"one entry under that tuple (as if the client had connected to a service "
                 f"{rs} whose real server is itself), which makes the rewrite a fixed point; "
                 + client_path(lab.st, client_of(vip)), LABELS[part])


def _nat_reply(lab, part, repeat):
    vip = VIPS[part]
    frame, c, m = pkt.establish_reply(lab.st, lab.ifindex, vip=vip)
    rs, v = hp(*real_of(c)), hp(vip, VPORT)
    e, me = entry(c), entry(m)
    return Built(Timed(part, lab.st.prog_fd, frame, lab.ifindex["br0"], repeat,
                       pkt.probe(lab.st, svc=e.svc_slot, dests=(e.dest_slot, me.dest_slot))),
                 {"dest.outpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0},
                 f"ACK {rs}->client:{CPORT_REPLY} on a connection set up by its handshake "
                 "through the program; it is found through rs_filter and rs_table "
                 f"({rs} -> [{v}]) and un-NATed to {v}->client. That frame is a reply too: "
                 f"a mirror service {rs} (control API) with {v} as its masquerading real "
                 f"server, and a mirror connection client:{CPORT_REPLY}->{rs} set up by its "
                 f"own handshake, so rs_table lists {v} -> [{rs}] and the frame is un-NATed "
                 f"back to {rs}->client. The iterations alternate between the two "
                 "connections, each one filter load, one rs_table hit with one service, one "
                 "entry hit and the un-NAT; dest.outpkts is summed over both destinations (a "
                 "pure ACK in ESTABLISHED changes no state)", LABELS[part])


def _dr(lab, part, repeat):
    vip = VIPS[part]
    frame, c = pkt.establish_dr(lab.st, lab.ifindex, vip=vip)
    e = entry(c)
    return Built(Timed(part, lab.st.prog_fd, frame, lab.ifindex["bc0"], repeat,
                       pkt.probe(lab.st, svc=e.svc_slot, dests=(e.dest_slot,))),
                 ESTABLISHED_IN,
                 f"ACK client->{hp(vip, VPORT)} on a connection set up by its handshake "
                 "through the program (SYN, ACK); DR only rewrites MACs, so the frame is its "
                 "own fixed point; " + client_path(lab.st, client_of(vip)), LABELS[part])


BUILDERS = {"trivial": _trivial, "minnat": _minnat, "nat": _nat, "nat-reply": _nat_reply,
            "dr": _dr, "nat6": _nat, "nat6-reply": _nat_reply, "dr6": _dr,
            **xlate.BUILDERS, **tun.BUILDERS, **fnat.BUILDERS}


def rows(lab, parts, repeat, runs):
    """The rows of parts (in pkt.PARTS' order, the floor and every control
    a row needs added), built, timed taking turns and proven."""
    wanted = {"trivial"} | set(parts) | {tun.CONTROLS[p] for p in parts if p in tun.CONTROLS}
    built = {p: BUILDERS[p](lab, p, repeat) for p in pkt.PARTS if p in wanted and p in BUILDERS}
    res = pkt.interleave([b.timed for b in built.values()], runs)
    floor = res["trivial"][0]
    out = {}
    for part, b in built.items():
        times, deltas, verdicts = res[part]
        if part == "trivial":
            ok, proof = verdicts == {"TX"}, "verdict XDP_TX (no counter: the floor)"
        else:
            ok, proof = pkt.check(deltas, b.expect, repeat)
        if b.control:
            times = [t - c + f for t, c, f in zip(times, res[b.control][0], floor)]
            ok = ok and out[b.control]["ok"]
        out[part] = pkt.row(part, b.label, times, ok, proof, verdicts, b.method)
    return list(out.values())
