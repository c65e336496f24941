"""Part 1's Tunnel rows (established.py): a client's packet on an
established Tunnel connection, beside established Route measured the same
way: ipip and gue over IPv4 (IPv4 in IPv4) and over IPv6 (IPv6 in IPv6,
next header 41), and ipip across families (IPv4 in IPv6, IPv6 in IPv4).

Encapsulation is no fixed point: the program grows the frame by the outer
headers in front (ipip 20 or 40 bytes, gue 32 or 52), and BPF_PROG_TEST_RUN
keeps the previous iteration's output. Live frames (BPF_F_TEST_XDP_LIVE_FRAMES) reset the
frame's bounds between iterations but not its bytes (their pages are
recycled, not re-initialised: only each page's first use sees the frame
given), so the rows run behind bench_replay (bpf/bench_trivial.c), which
rewrites the frame's first 64 bytes from a template on every iteration and
tail-calls xdplb. An IPv6 frame is 74 bytes: its last 10 (TCP's window,
checksum and urgent pointer) are never written by these paths (Route
rewrites MACs; Tunnel writes only in front of the packet it carries, which
each row checks once, below), so every page keeps them from its first use.
The redirect is carried out: into br0, whose peer has no NAPI, so
the veth refuses the frames at once and the rows price the program and
the redirect, not a receiver. The harness tail-calling bench_trivial (the
"replay" row, whose XDP_TX goes out of bc0 the same way) is the control:
every row here is shown as its time - the control's + the floor, run by
run, and the Route rows measured this way (IPv4 and IPv6) are what Tunnel
is compared with.

Before it is timed, each Tunnel row's frame is run once without live
frames and its output read back (frames.decapsulated()): the outer header
must be of the real server's family, to it, of the claimed protocol (4 or
41 by the inner family; UDP to the GUE port), and carry the client's packet
byte for byte.
"""
import ctypes as C
import socket

from .. import bpfsys, model, tunnel
from ..control import Control
from ..structs import (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                       IP_VS_CONN_F_TUNNEL_TYPE_IPIP)
from .common import BenchError, percpu_sum
from .frames import FRAME_LEN, decapsulated, hp, ip_len, is6
from .pkt import (CLIENT, CLIENT_MAC, CPORT, ESTABLISHED_IN, RSS, RSS6, TCP_ACK, VIP6_DR, VIP_DR,
                  VPORT, XDP_REDIRECT, Built, Timed, client_of, entry, establish_dr, handshake,
                  probe, tcp_frame)

VIP_TUN, VIP_GUE, VIP_4IN6 = "10.0.0.102", "10.0.0.103", "10.0.0.104"
VIP6_TUN, VIP6_GUE, VIP6_6IN4 = "fd00:10::102", "fd00:10::103", "fd00:10::104"
GUE_PORT = 6080
CPORT_LIVE = 43000     # the client port of the live-frame Route rows' connections
LABELS = {
    "replay": "replay harness + trivial, live frames (control of the rows below)",
    "dr-live": "xdplb established DR, live frames behind the harness (net)",
    "tun-ipip": "xdplb established Tunnel ipip (client -> VIP, encapsulated; net)",
    "tun-gue": "xdplb established Tunnel gue (client -> VIP, encapsulated; net)",
    "tun-4in6": "xdplb established Tunnel ipip, IPv4 in IPv6 (client -> VIP; net)",
    "dr6-live": "xdplb established IPv6 DR, live frames behind the harness (net)",
    "tun6-ipip": "xdplb established IPv6 Tunnel ipip, 6in6 (client -> VIP6; net)",
    "tun6-gue": "xdplb established IPv6 Tunnel gue over IPv6 (client -> VIP6; net)",
    "tun-6in4": "xdplb established Tunnel ipip, IPv6 in IPv4 (client -> VIP6; net)",
}
# part: (its service's VIP, the real server, the GUE port or 0 for ipip)
TUNNELS = {"tun-ipip": (VIP_TUN, RSS[0], 0), "tun-gue": (VIP_GUE, RSS[0], GUE_PORT),
           "tun-4in6": (VIP_4IN6, RSS6[0], 0), "tun6-ipip": (VIP6_TUN, RSS6[0], 0),
           "tun6-gue": (VIP6_GUE, RSS6[0], GUE_PORT), "tun-6in4": (VIP6_6IN4, RSS[0], 0)}
CONTROLS = {part: "replay" for part in ("dr-live", "dr6-live", *TUNNELS)}
ROUTE_LIVE = {"dr-live": VIP_DR, "dr6-live": VIP6_DR}


def configure_tunnel(st, vip, rs, gue_port=0):
    """As `xdplbadm -A -t vip:80 -s rr; -a -t vip:80 -r rs -i [--tun-type gue
    --tun-port P]` and `xdplb attach` (tun_src, tun_src6) would, inside
    pkt.netns()."""
    svc = (model.IPPROTO_TCP, vip, VPORT)
    ctl = Control(st)
    ctl.add_service(model.Service(*svc, sched="rr"))
    ctl.add_dest(svc, model.Destination(
        rs, VPORT, fwd=IP_VS_CONN_F_TUNNEL,
        tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GUE if gue_port else IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
        tun_port=gue_port))
    tunnel.write_sources(st)


def check_outer(st, ifindex, frame, rs, gue_port):
    """Run frame once (no live frames) and read the output back: it must
    be redirected inside an outer header of rs's family to rs, of the
    protocol claimed, carrying frame's packet unchanged. Returns what was
    seen, for the row's method; raises BenchError otherwise."""
    verdict, out, _ = bpfsys.prog_test_run(st.prog_fd, frame, ingress_ifindex=ifindex)
    seen = decapsulated(out) if verdict == XDP_REDIRECT else None
    inner = frame[14:14 + ip_len(frame[14:])]
    carried = socket.IPPROTO_IPV6 if inner[0] >> 4 == 6 else socket.IPPROTO_IPIP
    want = ("IPv6" if is6(rs) else "IPv4", socket.IPPROTO_UDP if gue_port else carried,
            rs, gue_port or None, inner)
    if seen != want:
        raise BenchError(f"a Tunnel connection's packet to {rs} was not encapsulated as "
                         f"claimed (verdict {verdict}; saw {seen and seen[:4]}, want "
                         f"{want[:4]})")
    family, proto, _, port, _ = seen
    return (f"{family}, protocol {proto}" + (f", UDP to port {port}" if port else "")
            + f", to {rs}, the client's packet unchanged inside")

def establish_tunnel(st, ifindex, vip, rs, gue_port=0, cport=CPORT):
    """A connection client:cport -> vip:80 (the client of vip's family) of
    configure_tunnel()'s service, set up by its handshake through the
    program (SYN, ACK: input only, as IPVS sees a Tunnel connection).
    Returns (ACK frame, the connection's table value, check_outer()'s
    text); the frame leaves br0 encapsulated to rs."""
    configure_tunnel(st, vip, rs, gue_port)
    _, c = handshake(st, ifindex, vip, cport)
    frame = tcp_frame(client_of(vip), vip, cport, VPORT, TCP_ACK, CLIENT_MAC)
    return frame, c, check_outer(st, ifindex["bc0"], frame, rs, gue_port)


class Replay:
    """bench_replay sending one frame into a target, with live frames."""

    def __init__(self, b, fds):
        self.b, self.fd = b, fds["bench_replay"]
        self.seq = b[b"rp_seq"]

    def aim(self, target_fd, frame):
        tm = self.b[b"rp_tmpl"]
        leaf = tm.Leaf()
        C.memmove(C.addressof(leaf), frame, FRAME_LEN)
        tm[C.c_int(0)] = leaf
        self.b[b"rp_target"][C.c_int(0)] = C.c_int(target_fd)

    def timed(self, part, target_fd, frame, ifindex, repeat, probe=None):
        """A live-frame pkt.Timed of the harness replaying frame into target_fd."""
        def read():
            out = probe() if probe else {}
            out["harness.replays"] = percpu_sum(self.seq)
            return out
        return Timed(part, self.fd, frame, ifindex, repeat, read,
                     lambda: self.aim(target_fd, frame), live=True)


def _replay(lab, part, repeat):
    frame = tcp_frame(CLIENT, VIP_TUN, CPORT, VPORT, TCP_ACK, CLIENT_MAC)
    return Built(Replay(lab.b, lab.fds).timed(part, lab.fds["bench_trivial"], frame,
                                               lab.ifindex["bc0"], repeat),
                 {"harness.replays": 1},
                 "bench_replay rewrites the frame from a template, then tail-calls "
                 "bench_trivial, whose XDP_TX the live frames carry out (out of bc0, whose "
                 "peer refuses them)", LABELS[part])


def _replayed(lab, part, frame, c, repeat, method):
    """The row of xdplb behind the harness on connection c's frame."""
    e = entry(c)
    return Built(Replay(lab.b, lab.fds).timed(
        part, lab.st.prog_fd, frame, lab.ifindex["bc0"], repeat,
        probe(lab.st, svc=e.svc_slot, dests=(e.dest_slot,))),
        {**ESTABLISHED_IN, "harness.replays": 1}, method + "; net of the control",
        LABELS[part], control=CONTROLS[part])


def _dr_live(lab, part, repeat):
    vip = ROUTE_LIVE[part]
    frame, c = establish_dr(lab.st, lab.ifindex, cport=CPORT_LIVE, vip=vip)
    return _replayed(lab, part, frame, c, repeat,
                     f"the DR row's path (ACK client:{CPORT_LIVE}->{hp(vip, VPORT)}, "
                     "established by its handshake) timed as the Tunnel rows are: the "
                     "harness replaying it into xdplb with live frames, the redirect into br0 "
                     "carried out")


def _tunnel(lab, part, repeat):
    vip, rs, gue_port = TUNNELS[part]
    frame, c, outer = establish_tunnel(lab.st, lab.ifindex, vip, rs, gue_port)
    kind = f"gue (UDP to port {gue_port}, no checksum)" if gue_port else "ipip"
    via = "xdplb_main tail-calls xdplb_main6, which" if is6(vip) else "xdplb_main"
    return _replayed(lab, part, frame, c, repeat,
                     f"ACK client:{CPORT}->{hp(vip, VPORT)} on a Tunnel connection ({kind}) "
                     "set up by its handshake through the program (SYN, ACK); " + via +
                     f" finds the entry and tail-calls xdplb_tunnel{'6' if is6(vip) else ''}, "
                     "which checks the MTU, encapsulates from "
                     f"{'tun_src6' if is6(rs) else 'tun_src'}'s address of br0 to {rs} and "
                     "redirects, carried out by the live frames; the harness replays the "
                     f"frame every iteration; its output, read back once: {outer}")


BUILDERS = {"replay": _replay, **{p: _dr_live for p in ROUTE_LIVE},
            **{p: _tunnel for p in TUNNELS}}
