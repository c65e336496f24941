"""The oracle's model of IPv4 fragments, from README's promises (Fragments):

- a first fragment (offset 0, MF) is ours as a whole packet would be (the
  Oracle judges it); when it was sent on by XDP, or rewritten to the stack,
  or handed to the stack untouched because the method has no XDP path or
  the neighbour is unresolved, what was done is recorded under (source,
  destination, IP id, protocol) for XDPLB_FRAG_TTL_NS; a first fragment
  dropped, not ours, or without a route leaves an earlier record as it is;
- a later fragment (offset > 0) of TCP/UDP with a live record gets the same
  IP-header rewrite (Masq: the destination, or a reply's source; Route:
  none) and leaves the same way (TX when the record's egress is its
  ingress, else REDIRECT, with the record's MACs; or PASS), and nothing
  else of it changes; one that starts inside the first fragment's L4
  header is dropped untouched; without a live record it is passed
  byte-identical.

Records age by the wall clock: within a margin of the lifetime either
answer is accepted.
"""
import collections
import time

from xdplb import structs as S

from .wire import XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, residue

# kind: 'xmit' (macs: egress ifindex, smac, dmac), 'nat' (to the stack,
# rewritten), 'plain' (to the stack untouched); field: the IP header offset
# of the rewritten address (16 destination, 12 source) or None; field2,
# addr2: full-NAT's other one.
Rec = collections.namedtuple("Rec", "kind field addr macs l4_len t field2 addr2",
                             defaults=(None, None))

TTL = S.XDPLB_FRAG_TTL_NS / 1e9
MARGIN = 0.2  # the coarse clock's tick, and between Python's reading and the program's


class FragModel:
    def __init__(self, oracle, violation):
        self.oracle, self.net, self.violation = oracle, oracle.net, violation
        self.reset()

    def reset(self):
        self.recs = {}
        self.unsure = set()  # keys whose record the oracle cannot know

    # -- first fragments ------------------------------------------------------------

    def note(self, f, p, c, reply, form):
        """After a first fragment f (parsed: p) of connection c (reply: its Reply) left
        as form ('xmit', 'stack (NATed)', 'stack (untouched)'), checked."""
        key = (p.src, p.dst, p.ident, p.proto)
        target = c.addr if reply is None else reply.key[0]
        fnat = c.fwd == S.XDPLB_CONN_F_FULLNAT
        masq = c.fwd == S.IP_VS_CONN_F_MASQ or fnat
        if reply is not None:
            field, addr = 12, reply.key[1]
        else:
            field, addr = (16, c.addr) if masq else (None, None)
        # full-NAT: the other address too (the client's, the local one)
        nat2 = ((16, reply.key[0]) if reply is not None else (12, c.laddr)) if fnat else ()
        l4_len = (f[p.l4 + 12] >> 4) * 4 if p.proto == 6 else 8
        if form == "stack (untouched)":
            xdp_fwd = c.fwd in (S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE, S.XDPLB_CONN_F_FULLNAT)
            fib = self.net.fib(target)
            if xdp_fwd and fib is None:
                self.recs.pop(key, None)
                self.unsure.add(key)
                return
            if xdp_fwd and fib != "no_neigh":
                return  # no route: passed as it came, nothing recorded
            rec = Rec("plain", None, None, None, l4_len, time.monotonic())
        elif form == "stack (NATed)":
            rec = Rec("nat", field, addr, None, l4_len, time.monotonic(), *nat2)
        else:
            rec = Rec("xmit", field, addr, self.net.neigh[target], l4_len, time.monotonic(),
                      *nat2)
        self.unsure.discard(key)
        self.recs[key] = rec

    # -- later fragments -----------------------------------------------------------

    def expect(self, q):
        """What must happen to later fragment q: (kind, Rec or None); kind is
        'untracked', 'overlap', 'follow', 'either' (near the lifetime's end:
        follow / overlap, or untracked) or 'unsure'."""
        key = q.frag_key()
        if key in self.unsure:
            return "unsure", None
        rec = self.recs.get(key)
        if rec is None:
            return "untracked", None
        age = time.monotonic() - rec.t
        if age > TTL + MARGIN:
            return "untracked", None
        return ("either" if age > TTL - MARGIN else "follow"), rec

    def judge(self, f, q, expected, ifindex, verdict, out, counters):
        """Raises Violation for a wrong answer; counts the expected
        counters into counters."""
        kind, rec = expected
        untouched = verdict == XDP_PASS and out == f
        if kind == "unsure":
            counters["unsure"] += 1
            return "unsure"
        if kind == "untracked" or (kind == "either" and untouched):
            if not untouched:
                raise self.violation("later fragment without a record not passed byte-identical")
            counters["frag_untracked" if kind == "untracked" else "either_untouched"] += 1
            return "untracked"
        if q.offset < rec.l4_len:
            if verdict != XDP_DROP or out != f:
                raise self.violation("later fragment overlapping the L4 header not dropped")
            counters["frag_overlap"] += 1
            return "overlap"
        want = self.rewritten(f, q, rec)
        if rec.kind == "xmit":
            if verdict != (XDP_TX if rec.macs[0] == ifindex else XDP_REDIRECT):
                raise self.violation("later fragment not sent as its first fragment was")
            counters["fwd"] += 1
        else:
            if verdict != XDP_PASS:
                raise self.violation("later fragment not passed as its first fragment was")
            counters["ours_pass"] += 1
        a, b = bytearray(out), bytearray(want)
        ip_c = q.l3 + 10
        a[ip_c:ip_c + 2] = b[ip_c:ip_c + 2]
        if a != b:
            raise self.violation(f"later fragment ({rec.kind}): not its first fragment's "
                                 "rewrite")
        if residue(f[q.l3:q.l3 + q.ihl]) != residue(out[q.l3:q.l3 + q.ihl]):
            raise self.violation("later fragment: IP checksum validity changed")
        return rec.kind

    @staticmethod
    def rewritten(f, q, rec):
        out = bytearray(f)
        if rec.field is not None:
            out[q.l3 + rec.field:q.l3 + rec.field + 4] = rec.addr
        if rec.field2 is not None:
            out[q.l3 + rec.field2:q.l3 + rec.field2 + 4] = rec.addr2
        if rec.macs is not None:
            out[0:6], out[6:12] = rec.macs[2], rec.macs[1]
        return out
