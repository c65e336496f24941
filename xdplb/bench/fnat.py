"""Part 1's full-NAT rows (established.py): a client's packet and a real
server's reply on an established full-NAT connection (DPVS's FNAT:
XDPLB_CONN_F_FULLNAT, bpf/fnat.h), beside the Masq rows they are compared
with; the new full-NAT connection row is newconn.py's.

The service VIP_FNAT:80 -> RS1..3:8081 (rr, full-NAT) lends its
connections a source from LADDRS (local addresses on br0, as `xdplbadm -P`
would add them). Both rows are fixed points as the Masq rows are, and each
row's frame is run once before it is timed and its output read back: the
client's packet must leave as laddr:lport -> rs:8081, the reply as
VIP_FNAT:80 -> client, checksums right.
"""
import socket

from .. import bpfsys, config, model
from ..control import Control
from ..structs import XDPLB_CONN_F_FULLNAT
from .common import BenchError
from .frames import hp, tcp_read
from .pkt import (CLIENT, CLIENT_MAC, ESTABLISHED_IN, LADDRS, RS_MAC, RSS, TCP_ACK, VPORT,
                  XDP_REDIRECT, Built, Timed, conn_key, conn_maps, entry, handshake, local_of,
                  probe, real_of, tcp_frame)

VIP_FNAT = "10.0.0.105"
FPORT = 8081           # the real servers' port: not the Masq rows' (their mirror services)
CPORT_FNAT, CPORT_FNAT_REPLY = 44000, 45000
LABELS = {
    "fnat": "xdplb established full-NAT (client -> VIP, FullNat)",
    "fnat-reply": "xdplb established full-NAT reply (RS -> laddr, un-NAT both)",
}
PARTS = ("fnat", "fnat-reply", "newconn-fnat")


def configure(st):
    """As `xdplbadm -A -t VIP_FNAT:80 -s rr; -P -z LADDR -t VIP_FNAT:80 -F br0
    (each of LADDRS); -a -t VIP_FNAT:80 -r RS:8081 --fullnat` (RS1..3)
    would, inside pkt.netns(). Returns the service (model.Service)."""
    ctl, svc = Control(st), (model.IPPROTO_TCP, VIP_FNAT, VPORT)
    ctl.add_service(model.Service(*svc, sched="rr"))
    br0 = socket.if_nametoindex("br0")
    for la in LADDRS:
        ctl.apply(config.add_laddr, svc, la, br0)
    for rs in RSS[:3]:
        ctl.add_dest(svc, model.Destination(rs, FPORT, fwd=XDPLB_CONN_F_FULLNAT))
    return ctl.get_service(*svc, counts=False)


def read_back(st, ifindex, frame, want):
    """Run frame once (arriving on ifindex) and read its output: it must be
    redirected as want = (src, dst, sport, dport), its checksums right.
    Returns the text for the row's method; BenchError otherwise."""
    verdict, out, _ = bpfsys.prog_test_run(st.prog_fd, frame, ingress_ifindex=ifindex)
    seen = tcp_read(out) if verdict == XDP_REDIRECT else None
    if seen != (*want, True):
        raise BenchError(f"a full-NAT frame did not leave as {hp(*want[0::2])} -> "
                         f"{hp(*want[1::2])} with its checksums right (verdict {verdict}, "
                         f"saw {seen})")
    return f"{hp(want[0], want[2])} -> {hp(want[1], want[3])}, IP and TCP checksums right"


def establish(st, ifindex, cport):
    """A full-NAT connection client:cport -> VIP_FNAT:80 set up by its
    handshake through the program (the SYN-ACK from the real server to the
    local address and port it was lent). Returns (key, entry, rs, rport,
    laddr, lport)."""
    key, c = handshake(st, ifindex, VIP_FNAT, cport)
    e = entry(c)
    if e.fwd != XDPLB_CONN_F_FULLNAT or not e.lport:
        raise BenchError(f"the connection to {VIP_FNAT}:{VPORT} was not source-NATed")
    return (key, c, *real_of(c), *local_of(c))


def _fnat(lab, part, repeat):
    st = lab.st
    _, c, rs, rport, la, lp = establish(st, lab.ifindex, CPORT_FNAT)
    frame = tcp_frame(CLIENT, VIP_FNAT, CPORT_FNAT, VPORT, TCP_ACK, CLIENT_MAC)
    seen = read_back(st, lab.ifindex["bc0"], frame, (la, rs, lp, rport))
    # the rewritten frame laddr:lport -> rs:8081 finds a copy of the entry
    conn_maps(st, VIP_FNAT)[1].put(conn_key(la, rs, lp, rport), c)
    e = entry(c)
    return Built(Timed(part, st.prog_fd, frame, lab.ifindex["bc0"], repeat,
                       probe(st, svc=e.svc_slot, dests=(e.dest_slot,))),
                 ESTABLISHED_IN,
                 f"ACK client:{CPORT_FNAT}->{hp(VIP_FNAT, VPORT)} on a full-NAT connection "
                 "set up by its handshake through the program (SYN: a local address and "
                 f"port lent through fnat_out; the SYN-ACK {hp(rs, rport)}->{hp(la, lp)}; ACK: "
                 "ESTABLISHED, in conns_assured); both addresses and ports are rewritten; "
                 f"its output, read back once: {seen}; the rewritten frame finds a copy of "
                 "the connection's one entry under its tuple (as the Masq row's), which makes "
                 "the rewrite a fixed point", LABELS[part])


def _fnat_reply(lab, part, repeat):
    """The reply rs:8081 -> laddr:lport is found through fnat_out and
    un-NATed to VIP_FNAT:80 -> client:cport; that frame is made a reply
    too, un-NATed back: a mirror full-NAT service rs:8081 -> VIP_FNAT:80
    (control API: rs_filter then has VIP_FNAT's bit) and, crafted from the
    connection's entry, a mirror entry under laddr:lport -> rs:8081 lent
    client:cport, with its fnat_out mapping; it keeps the connection's
    cached egress (bc0), as the Masq reply row's mirror connection has."""
    st = lab.st
    key, c, rs, rport, la, lp = establish(st, lab.ifindex, CPORT_FNAT_REPLY)
    frame = tcp_frame(rs, la, rport, lp, TCP_ACK, RS_MAC[rs])
    seen = read_back(st, lab.ifindex["br0"], frame, (VIP_FNAT, CLIENT, VPORT, CPORT_FNAT_REPLY))
    ctl, mirror = Control(st), (model.IPPROTO_TCP, rs, rport)
    ctl.add_service(model.Service(*mirror, sched="rr"))
    ctl.apply(config.add_laddr, mirror, la, 0)
    ctl.add_dest(mirror, model.Destination(VIP_FNAT, VPORT, fwd=XDPLB_CONN_F_FULLNAT))
    m = type(c).from_buffer_copy(c)
    me = entry(m)
    me.addr[:], me.port = socket.inet_aton(VIP_FNAT), socket.htons(VPORT)
    me.laddr[:], me.lport = socket.inet_aton(CLIENT), socket.htons(CPORT_FNAT_REPLY)
    mkey = conn_key(la, rs, lp, rport)
    conn_maps(st, VIP_FNAT)[1].put(mkey, m)
    st.fnat_out.put(conn_key(VIP_FNAT, CLIENT, VPORT, CPORT_FNAT_REPLY), mkey)
    e = entry(c)
    return Built(Timed(part, st.prog_fd, frame, lab.ifindex["br0"], repeat,
                       probe(st, svc=e.svc_slot, dests=(e.dest_slot,))),
                 {"dest.outpkts": 1, "fwd": 1, "svc.conns": 0, "to_stack": 0},
                 f"ACK {hp(rs, rport)}->{hp(la, lp)} on a full-NAT connection set up by its "
                 "handshake through the program; it is found through rs_filter and fnat_out "
                 f"(the reply tuple -> the client's tuple, the entry checked to name it) and "
                 f"un-NATed, both addresses and ports; its output, read back once: {seen}. "
                 f"That frame is a reply too: a mirror full-NAT service {hp(rs, rport)} "
                 f"(control API) whose real server is {hp(VIP_FNAT, VPORT)}, and a mirror entry "
                 f"crafted from the connection's, under {hp(la, lp)}->{hp(rs, rport)}, lent "
                 f"client:{CPORT_FNAT_REPLY}, with its fnat_out mapping (the connection's cached "
                 "egress kept, bc0 as the Masq mirror's), un-NATs it back. The iterations "
                 "alternate between the two entries, each one filter load, one fnat_out hit, "
                 "one entry hit and the un-NAT (the mirror entry keeps the connection's "
                 "destination slot: dest.outpkts counts both)",
                 LABELS[part])


BUILDERS = {"fnat": _fnat, "fnat-reply": _fnat_reply}
