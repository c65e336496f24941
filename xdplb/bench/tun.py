"""Set-up for a "Tunnel, established, IPv4" row of the packet benchmark
(xdplb/bench/pkt.py's topology, state and handshake): a Tunnel service and
one established connection through it.

Encapsulation is no fixed point: without live frames each iteration of
BPF_PROG_TEST_RUN would see the previous one's output (20 or 32 bytes
longer, never ours), so such a row is timed with
BPF_F_TEST_XDP_LIVE_FRAMES, where every iteration gets the frame afresh
(the redirect then reaches br0 for real: a private namespace's veth).
"""
from .. import model, tunnel
from ..control import Control
from ..structs import (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                       IP_VS_CONN_F_TUNNEL_TYPE_IPIP, IP_VS_TUNNEL_ENCAP_FLAG_CSUM)
from .pkt import CLIENT, CLIENT_MAC, CPORT, RSS, TCP_ACK, VPORT, handshake, tcp_frame

VIP_TUN = "10.0.0.102"


def configure_tunnel(st, gue_port=0, csum=False):
    """As `xdplbadm -A -t VIP_TUN:80 -s rr; -a ... -r RS1 -i [--tun-type gue
    --tun-port P [--tun-csum]]` and `xdplb attach` (tun_src) would, inside
    pkt.netns(). Returns the service's key."""
    svc = (model.IPPROTO_TCP, VIP_TUN, VPORT)
    ctl = Control(st)
    ctl.add_service(model.Service(*svc, sched="rr"))
    ctl.add_dest(svc, model.Destination(
        RSS[0], VPORT, fwd=IP_VS_CONN_F_TUNNEL,
        tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GUE if gue_port else IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
        tun_port=gue_port, tun_flags=IP_VS_TUNNEL_ENCAP_FLAG_CSUM if csum else 0))
    tunnel.write_sources(st)
    return svc


def establish_tunnel(st, ifindex, cport=CPORT, gue_port=0, csum=False):
    """A connection client:cport -> VIP_TUN:80 of configure_tunnel()'s
    service, set up by its handshake through the program (SYN, ACK: input
    only, as IPVS sees a Tunnel connection). Returns (ACK frame, the
    connection's entry); the frame leaves br0 encapsulated to RS1."""
    configure_tunnel(st, gue_port, csum)
    _, c = handshake(st, ifindex, VIP_TUN, cport)
    return tcp_frame(CLIENT, VIP_TUN, cport, VPORT, TCP_ACK, CLIENT_MAC), c
