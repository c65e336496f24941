"""Part 1's ICMP translation row (established.py): an ICMP error about a
tracked Masq connection, translated as IPVS's ip_vs_in_icmp does.

A router on the client's side answers the real server's reply VIP:80 ->
client with "fragmentation needed" (next-hop MTU 1400), sent to VIP; the
program finds the connection from the quoted packet (its tuple reversed is
the connection's), rewrites the outer destination and the quoted source to
the real server's address and port (IP, quoted IP and ICMP checksums
following) and sends it to the real server. The connection is made a fixed
point as the established NAT row's (pkt.establish_nat(): a copy of its
entry under client -> rs:8080), so the translated error, which now quotes
rs:8080 -> client, is found and translated again, to itself, every
iteration.
"""
from .frames import frag_needed_frame, hp, tcp_frame
from .pkt import (CLIENT, TCP_ACK, VIP, VPORT, Built, Timed, entry, establish_nat, probe,
                  real_of)

ROUTER, ROUTER_MAC = "10.0.0.254", "02:00:0a:00:00:fe"
CPORT_ICMP = 42000     # the client port of this row's connection
NEXT_HOP_MTU = 1400
LABEL = "xdplb ICMP error translated (frag. needed about a Masq reply -> RS)"


def _icmp(lab, part, repeat):
    _, c = establish_nat(lab.st, lab.ifindex, cport=CPORT_ICMP, vip=VIP)
    reply = tcp_frame(VIP, CLIENT, VPORT, CPORT_ICMP, TCP_ACK)
    frame = frag_needed_frame(ROUTER, reply, NEXT_HOP_MTU, ROUTER_MAC, "02:00:00:00:00:bb")
    rs, e = hp(*real_of(c)), entry(c)
    return Built(Timed(part, lab.st.prog_fd, frame, lab.ifindex["bc0"], repeat,
                       probe(lab.st, svc=e.svc_slot, dests=(e.dest_slot,),
                             events=("icmp_xlate",))),
                 {"icmp_xlate": 1, "dest.inpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0},
                 f"ICMP fragmentation needed (MTU {NEXT_HOP_MTU}) from a router {ROUTER} to "
                 f"VIP, quoting the reply VIP:80->client:{CPORT_ICMP} (its IP header and 8 "
                 "bytes of TCP) of a Masq connection set up by its handshake through the "
                 "program; xdplb_main hands it to xdplb_icmp (a tail call), which checks the "
                 "IP and ICMP checksums, finds the connection from the quoted tuple reversed, "
                 f"rewrites the outer destination and the quoted source to {rs} (IP, quoted "
                 "IP and ICMP checksums updated) and sends it on the destination's cached "
                 f"egress; a copy of the connection's entry under client->{rs} (as the NAT "
                 "row's) makes the translated error a fixed point", LABEL)


BUILDERS = {"icmp": _icmp}
