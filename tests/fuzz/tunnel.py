"""The oracle's Tunnel rules (README "Forwarding methods", docs/ipvs-behaviour.md
§12), written from the specification, not from the C code: a client's
packet of a Tunnel connection travels inside an outer IPv4 header from the
balancer's address on the egress (ipip, or GUE over UDP with or without its
checksum), never oversize once encapsulated (with DF: answered
fragmentation needed with the MTU left inside the tunnel); with the
neighbour unresolved it goes to the stack encapsulated; its fragments go to
the stack untouched."""
from .services import GUE, TUNNELS
from .wire import (MTU, XDP_PASS, XDP_REDIRECT, XDP_TX, VERDICTS, encapsulated,
                   input_checksums_valid, l4_check_off, pseudo, residue)



class TunnelRules:
    """The judge of a Tunnel connection's frames, for oracle (its network,
    counters, stats and answers); violation: the exception to raise."""

    def __init__(self, oracle, violation):
        self.oracle, self.violation = oracle, violation

    def too_big(self, f, p, c, verdict, out):
        """A Tunnel packet with DF that no longer fits once encapsulated, on a
        known egress: answered fragmentation needed with the MTU left inside
        the tunnel (bpf/encap.h); True when it was one, judged."""
        overhead = 32 if TUNNELS[c.dest_slot][0] == GUE else 20
        if p.first_frag or p.tot + overhead <= MTU or not f[p.l3 + 6] & 0x40 or \
                self.oracle.net.fib(c.addr) not in ("ok", "no_neigh"):
            return False
        self.oracle.judge_answer(f, p, ("frag_needed", MTU - overhead), verdict, out)
        return True

    def form(self, f, p, c, ifindex, verdict, out):
        """How a client's frame of Tunnel connection c left (README: inside an
        outer header from the balancer's address on the egress, never
        oversize once encapsulated): ('xmit (encapsulated)' | 'stack
        (encapsulated)' | 'stack (untouched)', the frame it must be)."""
        if p.first_frag:    # fragments of a Tunnel connection go to the stack untouched
            if verdict != XDP_PASS or out != f:
                raise self.violation("a Tunnel connection's fragment not passed untouched")
            self.oracle.counters["ours_pass"] += 1
            return "stack (untouched)", f
        tun_type, port, flags = TUNNELS[c.dest_slot]
        gue = port if tun_type == GUE else None
        fits = p.tot + (32 if gue else 20) <= MTU
        fib = self.oracle.net.fib(c.addr)
        if verdict in (XDP_TX, XDP_REDIRECT):
            self.oracle.counters["fwd"] += 1
            macs = self.oracle.net.neigh.get(c.addr)
            if macs is None:
                raise self.violation("forwarded towards a target without a neighbour")
            if (verdict == XDP_TX) != (macs[0] == ifindex):
                raise self.violation("TX/REDIRECT does not match ingress vs egress")
            if not fits:
                raise self.violation("forwarded oversize once encapsulated")
            return "xmit (encapsulated)", encapsulated(
                f, p, self.oracle.net.tun_src[macs[0]], c.addr, gue, bool(flags), macs)
        if verdict != XDP_PASS:
            raise self.violation(f"unexpected {VERDICTS[verdict] if verdict < 5 else verdict} "
                            "on a tunnel flow")
        self.oracle.counters["ours_pass"] += 1
        if fib == "ok" and fits:
            raise self.violation("passed a frame the FIB can forward")
        if out == f:
            if fib == "no_neigh" and fits:
                raise self.violation("unresolved neighbour: not given to the stack encapsulated")
            return "stack (untouched)", f
        if fib != "no_neigh" or not fits:
            raise self.violation("encapsulated frame passed where it must be untouched")
        egress = self.oracle.net.cli if c.addr[:3] == b"\x0a\x00\x00" else self.oracle.net.srv
        return "stack (encapsulated)", encapsulated(
            f, p, self.oracle.net.tun_src[egress], c.addr, gue, bool(flags), None)

    def compare(self, f, p, c, form, exp_out, out):
        """out equals exp_out but for the outer UDP checksum, which must be 0
        without --tun-csum (or when the inner datagram has no checksum of its
        own over its whole IP payload), else valid whenever f's were."""
        if exp_out == f:
            if out != f:
                raise self.violation(f"{form}: frame changed")
            return
        if len(out) != len(exp_out):
            raise self.violation(f"{form}: {len(out) - len(f)} bytes added, "
                            f"{len(exp_out) - len(f)} expected")
        tun_type, _, flags = TUNNELS[c.dest_slot]
        a, b = bytearray(out), bytearray(exp_out)
        uc = p.l3 + 26
        if tun_type == GUE:
            a[uc:uc + 2] = b[uc:uc + 2]
        if a != b:
            raise self.violation(f"{form}: bytes differ from the encapsulation")
        if residue(out[p.l3:p.l3 + 20]):
            raise self.violation(f"{form}: outer IP checksum invalid")
        if tun_type != GUE:
            self.oracle.stats["encapsulated (ipip), inner unchanged"] += 1
            return
        check = out[uc] << 8 | out[uc + 1]
        co = l4_check_off(p)
        inner_none = p.proto == 17 and (
            f[co] == 0 and f[co + 1] == 0 or (f[p.l4 + 4] << 8 | f[p.l4 + 5]) != p.tot - p.ihl)
        if not flags or inner_none:
            if check:
                raise self.violation(f"{form}: outer UDP checksum set where it must be 0")
            self.oracle.stats["encapsulated (gue), outer UDP checksum 0"] += 1
            return
        if not check:
            raise self.violation(f"{form}: outer UDP checksum 0 with --tun-csum")
        ulen = 12 + p.tot
        valid = not residue(pseudo(out[p.l3 + 12:p.l3 + 16], out[p.l3 + 16:p.l3 + 20], 17, ulen)
                            + out[p.l3 + 20:p.l3 + 20 + ulen])
        if input_checksums_valid(f, p):
            if not valid:
                raise self.violation(f"{form}: outer UDP checksum invalid, the inner "
                                     "packet's valid")
            self.oracle.stats["encapsulated (gue), outer UDP checksum verified valid"] += 1
        else:
            self.oracle.stats["encapsulated (gue), inner checksum already bad"] += 1
