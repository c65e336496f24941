"""The oracle's full-NAT rules (README "Forwarding methods", full-NAT),
written from the specification, not from the C code:

- a new connection to a full-NAT destination is lent one of its service's
  local addresses and a port in XDPLB_FNAT_PORT_MIN..MAX, a reply tuple
  (real server, real port, local address, local port) no other connection
  has; which one is the data path's choice, so the oracle reads it from
  the new entry and from then on holds the data path to it;
- the client's packets leave with the destination the real server's and
  the source the local address and port; a packet from the real server to
  a lent tuple belongs to the connection it was lent to, and leaves from
  the VIP and its port to the client's address and port; nothing else is
  such a reply;
- ICMP errors about the connection are translated for both addresses;
- fnat_out holds exactly the lent tuples, each naming its connection.
"""
import ctypes
import socket

from xdplb import structs as S

from .services import FULLNAT_LADDRS


class FullNatRules:
    def __init__(self, oracle, violation, reply_type):
        self.oracle, self.violation, self.Reply = oracle, violation, reply_type
        self.reset()

    def reset(self):
        self.lent = {}      # reply tuple (rs, laddr, rport, lport, proto) -> client key

    def learn(self, key, c, kernel_entry):
        """New full-NAT connection c (the model's, of client key key): what
        the kernel's entry was lent, checked; returns c with it."""
        k = kernel_entry(key)
        if k is None or not k.lport:
            raise self.violation("new full-NAT connection without a local address and port")
        if k.laddr not in FULLNAT_LADDRS[c.svc_slot]:
            raise self.violation(f"lent a local address not of its service: {k.laddr.hex()}")
        if not S.XDPLB_FNAT_PORT_MIN <= k.lport <= S.XDPLB_FNAT_PORT_MAX:
            raise self.violation(f"lent port {k.lport} outside the range")
        t = (c.addr, k.laddr, c.port, k.lport, key[4])
        if t in self.lent:
            raise self.violation(f"reply tuple {t} lent twice")
        self.lent[t] = key
        c = c._replace(laddr=k.laddr, lport=k.lport)
        self.oracle.conns[key] = c
        self.oracle.flows_out[len(c.addr)].append(t)
        self.oracle.stats["full-NAT connections lent a tuple"] += 1
        return c

    def reply_of(self, p):
        """The Reply whose connection was lent p's tuple, or None."""
        key = self.lent.get((p.src, p.dst, p.sport, p.dport, p.proto))
        c = self.oracle.conns.get(key) if key is not None else None
        if c is None or (c.addr, c.port, c.laddr, c.lport) != (p.src, p.sport, p.dst, p.dport):
            return None
        self.oracle.stats["full-NAT replies found through fnat_out"] += 1
        return self.Reply(key, c, False, 0)

    @staticmethod
    def rewrite(out, p, c, reply):
        """Full-NAT's address and port rewrite of frame out (parsed: p)."""
        if reply is None:
            src, sport, dst, dport = c.laddr, c.lport, c.addr, c.port
        else:
            src, sport, dst, dport = reply.key[1], reply.key[3], reply.key[0], reply.key[2]
        n = len(src)
        out[p.src_at:p.src_at + n], out[p.dst_at:p.dst_at + n] = src, dst
        out[p.l4:p.l4 + 2], out[p.l4 + 2:p.l4 + 4] = sport.to_bytes(2, "big"), \
            dport.to_bytes(2, "big")

    def problems(self, fnat_out):
        """fnat_out's and fnat_out6's items (key bytes, value bytes) against
        the tuples lent."""
        got = {}
        for kb, vb in fnat_out:
            key_t = S.ConnKey6 if len(kb) == ctypes.sizeof(S.ConnKey6) else S.ConnKey
            k, v = key_t.from_buffer_copy(kb), key_t.from_buffer_copy(vb)
            got[(bytes(k.saddr), bytes(k.daddr), socket.ntohs(k.sport), socket.ntohs(k.dport),
                 k.proto)] = (bytes(v.saddr), bytes(v.daddr), socket.ntohs(v.sport),
                              socket.ntohs(v.dport), v.proto)
        if got != self.lent:
            yield "fnat_out differs from the tuples lent", \
                f"{len(got)} mappings, {len(self.lent)} lent"
