"""Part 1's Tunnel rows (established.py): a client's packet on an
established Tunnel connection, ipip and gue, beside established Route,
measured the same way.

Encapsulation is no fixed point: the program grows the frame by 20 bytes
(ipip) or 32 (gue) in front, and BPF_PROG_TEST_RUN keeps the previous
iteration's output. Live frames (BPF_F_TEST_XDP_LIVE_FRAMES) reset the
frame's bounds between iterations but not its bytes (their pages are
recycled, not re-initialised: only each page's first use sees the frame
given), so the rows run behind bench_replay (bpf/bench_trivial.c), which
rewrites the frame from a template on every iteration and tail-calls
xdplb. The redirect is carried out: into br0, whose peer has no NAPI, so
the veth refuses the frames at once and the rows price the program and
the redirect, not a receiver. The harness tail-calling bench_trivial (the
"replay" row, whose XDP_TX goes out of bc0 the same way) is the control:
every row here is shown as its time - the control's + the floor, run by
run, and the Route row measured this way is what Tunnel is compared with.
"""
import ctypes as C

from .. import model, tunnel
from ..control import Control
from ..structs import (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                       IP_VS_CONN_F_TUNNEL_TYPE_IPIP)
from .common import percpu_sum
from .frames import FRAME_LEN, hp
from .pkt import (CLIENT, CLIENT_MAC, CPORT, ESTABLISHED_IN, RSS, TCP_ACK, VPORT, Built, Timed,
                  establish_dr, handshake, probe, tcp_frame)

VIP_TUN, VIP_GUE = "10.0.0.102", "10.0.0.103"
GUE_PORT = 6080
CPORT_LIVE = 43000     # the client port of the live-frame Route row's connection
LABELS = {
    "replay": "replay harness + trivial, live frames (control of the rows below)",
    "dr-live": "xdplb established DR, live frames behind the harness (net)",
    "tun-ipip": "xdplb established Tunnel ipip (client -> VIP, encapsulated; net)",
    "tun-gue": "xdplb established Tunnel gue (client -> VIP, encapsulated; net)",
}
CONTROLS = {part: "replay" for part in ("dr-live", "tun-ipip", "tun-gue")}
TUNNELS = {"tun-ipip": (VIP_TUN, 0), "tun-gue": (VIP_GUE, GUE_PORT)}


def configure_tunnel(st, vip, gue_port=0):
    """As `xdplbadm -A -t vip:80 -s rr; -a -t vip:80 -r RS1 -i [--tun-type gue
    --tun-port P]` and `xdplb attach` (tun_src) would, inside pkt.netns()."""
    svc = (model.IPPROTO_TCP, vip, VPORT)
    ctl = Control(st)
    ctl.add_service(model.Service(*svc, sched="rr"))
    ctl.add_dest(svc, model.Destination(
        RSS[0], VPORT, fwd=IP_VS_CONN_F_TUNNEL,
        tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GUE if gue_port else IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
        tun_port=gue_port))
    tunnel.write_sources(st)


def establish_tunnel(st, ifindex, vip, gue_port=0, cport=CPORT):
    """A connection client:cport -> vip:80 of configure_tunnel()'s service,
    set up by its handshake through the program (SYN, ACK: input only, as
    IPVS sees a Tunnel connection). Returns (ACK frame, the connection's
    entry); the frame leaves br0 encapsulated to RS1."""
    configure_tunnel(st, vip, gue_port)
    _, c = handshake(st, ifindex, vip, cport)
    return tcp_frame(CLIENT, vip, cport, VPORT, TCP_ACK, CLIENT_MAC), c


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
    return Built(Replay(lab.b, lab.fds).timed(
        part, lab.st.prog_fd, frame, lab.ifindex["bc0"], repeat,
        probe(lab.st, svc=c.svc_slot, dests=(c.dest_slot,))),
        {**ESTABLISHED_IN, "harness.replays": 1}, method + "; net of the control",
        LABELS[part], control=CONTROLS[part])


def _dr_live(lab, part, repeat):
    frame, c = establish_dr(lab.st, lab.ifindex, cport=CPORT_LIVE)
    return _replayed(lab, part, frame, c, repeat,
                     f"the DR row's path (ACK client:{CPORT_LIVE}->VIP_DR:80, established by "
                     "its handshake) timed as the Tunnel rows are: the harness replaying it "
                     "into xdplb with live frames, the redirect into br0 carried out")


def _tunnel(lab, part, repeat):
    vip, gue_port = TUNNELS[part]
    frame, c = establish_tunnel(lab.st, lab.ifindex, vip, gue_port)
    kind = f"gue (UDP to port {gue_port}, no checksum)" if gue_port else "ipip"
    return _replayed(lab, part, frame, c, repeat,
                     f"ACK client:{CPORT}->{hp(vip, VPORT)} on a Tunnel connection ({kind}) "
                     "set up by its handshake through the program (SYN, ACK); xdplb_main "
                     "finds the entry and tail-calls xdplb_tunnel, which checks the MTU, "
                     "encapsulates from tun_src's address of br0 to RS1 and redirects, "
                     "carried out by the live frames; the harness replays the frame every "
                     "iteration")


BUILDERS = {"replay": _replay, "dr-live": _dr_live, "tun-ipip": _tunnel, "tun-gue": _tunnel}
