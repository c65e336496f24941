"""The oracle: what the data path must do with every frame, decided from
README's promises ("How it works"), not from the C code.

It keeps its own copy of the configured services, the rr ring positions and
the connection table, predicts each frame's fate before the program runs
(expect), judges the program's answer (judge: raises Violation), and after
every batch compares its copy with the kernel's table and counters.
"""
import collections
import socket

from xdplb import structs as S

from .wire import (MTU, TCP_ACK, TCP_RST, TCP_SYN, XDP_ABORTED, XDP_DROP, XDP_PASS,
                   XDP_REDIRECT, XDP_TX, VERDICTS, input_checksums_valid, l4_check_off,
                   l4_region, parse, residue)

Svc = collections.namedtuple("Svc", "slot addr port proto ring")
MConn = collections.namedtuple("MConn", "addr port dir fwd dest_slot svc_slot")
FWD_NAMES = {S.IP_VS_CONN_F_MASQ: "Masq", S.IP_VS_CONN_F_DROUTE: "Route"}


class MDest:
    __slots__ = ("addr", "available", "fwd", "port", "slot", "svc_slot")

    def __init__(self, slot, addr, port, fwd, svc_slot, available=True):
        self.slot, self.addr, self.port, self.fwd = slot, addr, port, fwd
        self.svc_slot, self.available = svc_slot, available


class Violation(Exception):
    """The program did something the oracle forbids; the message says what."""


def fmt_key(k):
    return (f"{socket.inet_ntoa(k[0])}:{k[2]} -> {socket.inet_ntoa(k[1])}:{k[3]} "
            f"proto {k[4]}")


def service_config(net):
    """Service slot -> (addr, port, proto, [(dest slot, addr, port, fwd)]):
    Masq, Route and tunnel services, one without destinations, and
    destinations without a neighbour entry or without a route."""
    M, D, T = S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE, S.IP_VS_CONN_F_TUNNEL
    rs, vip, vip2, vip3 = net.rs, net.vip, net.vip2, net.vip3
    near, no_neigh, no_route = net.near_rs, net.rs_no_neigh, net.rs_no_route
    return {
        1: (vip, 80, 6, [(1, rs[0], 8080, M), (2, rs[1], 8080, M), (3, rs[2], 8080, M)]),
        2: (vip, 53, 17, [(4, rs[0], 8053, M), (5, rs[1], 8053, M)]),
        3: (vip2, 80, 6, [(6, rs[1], 80, D), (7, rs[2], 80, D)]),
        4: (vip2, 5000, 17, [(8, rs[2], 5000, D)]),
        5: (vip, 443, 6, [(9, near, 8443, M)]),
        6: (vip, 8000, 6, [(10, no_neigh, 8080, M), (11, no_route, 8080, M)]),
        7: (vip, 9000, 6, []),
        8: (vip3, 80, 6, [(12, rs[0], 8080, M)]),
        9: (vip3, 53, 17, [(13, rs[1], 53, T)]),
        10: (vip2, 8000, 6, [(14, no_neigh, 8000, D), (15, no_route, 8000, D)]),
    }


class Oracle:
    """The model of one fuzz run. stats and outcomes count what was checked;
    counters holds the batch's expected program counters."""

    GONE_DEST = 12  # service 8's only destination, which goes away every batch

    def __init__(self, net, stats):
        self.net, self.stats = net, stats
        self.outcomes = collections.Counter()
        self.services, self.dests, self.svc_keys, self.home = {}, {}, [], {}
        for slot, (addr, port, proto, dl) in service_config(net).items():
            self.services[(addr, port, proto)] = Svc(slot, addr, port, proto,
                                                     [d[0] for d in dl])
            self.svc_keys.append((addr, port, proto))
            for dslot, daddr, dport, fwd in dl:
                self.dests[dslot] = MDest(dslot, daddr, dport, fwd, slot)
                self.home[dslot] = slot
        self.new_batch()

    def new_batch(self):
        """The configured state again, with empty tables and counters."""
        for d in self.dests.values():
            d.available, d.svc_slot = True, self.home[d.slot]
        self.pos = {svc.slot: 0 for svc in self.services.values()}
        self.conns = {}
        self.flows_in, self.flows_out = [], []
        self.counters = collections.Counter()

    def dest_goes(self, batch):
        """GONE_DEST becomes unavailable (odd batches) or its slot is reused
        by another service (even ones): IPVS drops packets of its flows.
        Returns the destination to write."""
        d = self.dests[self.GONE_DEST]
        if batch % 2:
            d.available = False
        else:
            d.svc_slot = 1
        return d

    # -- before the run: what must happen -----------------------------------------

    def fib(self, target, tot):
        """The FIB's answer for a forward to target, from the topology:
        'ok' (known neighbour), 'no_neigh' (on-link, unresolved), 'none'
        (no route, local, broadcast, or too big for the MTU), None (unsure)."""
        if tot > MTU:
            return "none"
        if target in self.net.neigh:
            return "ok"
        if target in self.net.local:
            return "none"
        if target[:3] in (b"\x0a\x00\x00", b"\xac\x50\x00"):
            return None if target[3] in (0, 255) else "no_neigh"
        return "none"

    def expect(self, f, p):
        """What must happen to frame f (parsed: p): (kind, info). kind is
        'pass' (not ours), 'drop' (reason), or 'fwd' (conn entry, new?).
        A new connection enters the model here."""
        if p is None:
            return "pass", None
        c = self.conns.get(p.key)
        if c is not None:
            if c.dir == S.XDPLB_DIR_IN:
                d = self.dests.get(c.dest_slot)
                if d is None or not d.available or d.svc_slot != c.svc_slot:
                    return "drop", "dest_gone"
            return "fwd", (c, False)
        svc = self.services.get((p.dst, p.dport, p.proto))
        if svc is None:
            return "pass", None
        if p.proto == 6 and p.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return "pass", None
        # The kernel drops a bad IP header in ip_rcv: IPVS never schedules it.
        # A tracked flow's packets carry whatever error they have.
        if residue(f[p.l3:p.l3 + p.ihl]):
            return "pass", None
        if not svc.ring:
            return "drop", "no_dest"
        n = self.pos[svc.slot]
        self.pos[svc.slot] = n + 1
        d = self.dests[svc.ring[n % len(svc.ring)]]
        if not d.available:
            return "drop", "no_dest"
        if d.fwd == S.IP_VS_CONN_F_MASQ:
            ok = (d.addr, p.src, d.port, p.sport, p.proto)
            self.conns[ok] = MConn(p.dst, p.dport, S.XDPLB_DIR_OUT, d.fwd, d.slot, svc.slot)
            self.flows_out.append(ok)
        nc = MConn(d.addr, d.port, S.XDPLB_DIR_IN, d.fwd, d.slot, svc.slot)
        self.conns[p.key] = nc
        self.flows_in.append(p.key)
        return "fwd", (nc, True)

    # -- after the run: judge the program's answer ---------------------------------

    def judge(self, f, p, expected, ifindex, verdict, out, kernel_entry):
        """Check the program's verdict and frame out for f against expected
        (from expect()); kernel_entry(key) is the kernel's connection entry
        as an MConn (or None). Raises Violation."""
        kind, info = expected
        if verdict == XDP_ABORTED:
            raise Violation("XDP_ABORTED")
        if len(out) != len(f):
            raise Violation("output length differs")
        if kind == "pass":
            self.counters["pass"] += 1
            self.stats["not ours"] += 1
            if verdict != XDP_PASS or out != f:
                raise Violation("not ours, but not passed byte-identical")
            self.outcomes["pass (not ours)"] += 1
            return
        self.stats["ours"] += 1
        if p.ihl > 20:
            self.stats["ours with IP options"] += 1
        if p.l3 == 18:
            self.stats["ours with a VLAN tag"] += 1
        if kind == "drop":
            self.counters[info] += 1
            if verdict != XDP_DROP or out != f:
                raise Violation(f"expected DROP untouched ({info})")
            self.outcomes[f"drop ({info})"] += 1
            return
        c, new = info
        if new:
            self.stats["new connections"] += 1
            if kernel_entry(p.key) != c:
                raise Violation("new connection entry is not the ring's next")
        form, exp_out = self._forward_form(f, p, c, ifindex, verdict, out)
        self._compare(f, p, c, form, exp_out, out)
        self.outcomes[f"{form} {VERDICTS[verdict]} {FWD_NAMES.get(c.fwd, f'fwd {c.fwd}')}"] += 1

    def _forward_form(self, f, p, c, ifindex, verdict, out):
        """How a frame of connection c left: ('xmit' | 'stack (untouched)' |
        'stack (NATed)', the frame it must be), if that way is allowed."""
        xdp_fwd = c.fwd in (S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE)
        target = c.addr if c.dir == S.XDPLB_DIR_IN else p.dst
        if verdict in (XDP_TX, XDP_REDIRECT):
            self.counters["fwd"] += 1
            macs = self.net.neigh.get(target)
            if not xdp_fwd or macs is None:
                raise Violation("forwarded towards a target without a neighbour")
            if (verdict == XDP_TX) != (macs[0] == ifindex):
                raise Violation("TX/REDIRECT does not match ingress vs egress")
            return "xmit", self.rewritten(f, p, c, macs)
        if verdict != XDP_PASS:
            raise Violation(f"unexpected {VERDICTS[verdict] if verdict < 5 else verdict} "
                            "on a tracked or new flow")
        self.counters["ours_pass"] += 1
        masq = c.fwd == S.IP_VS_CONN_F_MASQ
        fib = self.fib(target, p.tot)
        if xdp_fwd and fib == "ok":
            raise Violation("passed a frame the FIB can forward")
        if out == f:
            if masq and fib == "no_neigh":
                raise Violation("Masq frame for an unresolved neighbour passed without NAT")
            return "stack (untouched)", f
        if not masq or fib == "none":
            raise Violation("rewritten frame passed where it must be untouched")
        return "stack (NATed)", self.rewritten(f, p, c, None)

    def _compare(self, f, p, c, form, exp_out, out):
        """out equals exp_out but for the checksums, which are verified from
        scratch: they carry f's validity."""
        if exp_out == f:
            if out != f:
                raise Violation(f"{form}: frame changed")
            return
        ip_c, l4_c = p.l3 + 10, l4_check_off(p)
        a, b = bytearray(out), bytearray(exp_out)
        if c.fwd == S.IP_VS_CONN_F_MASQ and form != "stack (untouched)":
            a[ip_c:ip_c + 2] = b[ip_c:ip_c + 2]
            a[l4_c:l4_c + 2] = b[l4_c:l4_c + 2]
        if a != b:
            raise Violation(f"{form}: bytes other than NAT/DR fields differ")
        bad = self.checksums_ok(f, out, p)
        if bad:
            raise Violation(f"{form}: {bad}")
        if not input_checksums_valid(f, p):
            self.stats["rewritten, input checksum already bad (error carried)"] += 1
        else:
            self.stats["rewritten, checksums verified valid"] += 1

    @staticmethod
    def rewritten(f, p, c, macs):
        """f as the data path must send it on connection c."""
        out = bytearray(f)
        if c.fwd == S.IP_VS_CONN_F_MASQ:
            if c.dir == S.XDPLB_DIR_IN:
                out[p.l3 + 16:p.l3 + 20] = c.addr
                out[p.l4 + 2:p.l4 + 4] = c.port.to_bytes(2, "big")
            else:
                out[p.l3 + 12:p.l3 + 16] = c.addr
                out[p.l4:p.l4 + 2] = c.port.to_bytes(2, "big")
        if macs is not None:
            out[0:6], out[6:12] = macs[2], macs[1]  # (ifindex, smac, dmac)
        return out

    @staticmethod
    def checksums_ok(f, out, p):
        """None when out's checksums carry f's validity (and UDP's zero
        rule), else what is wrong."""
        q = parse(out)
        if q is None:
            return "output does not parse"
        ri, ro = residue(f[p.l3:p.l3 + p.ihl]), residue(out[q.l3:q.l3 + q.ihl])
        if ri != ro:
            return (f"IP checksum {'invalid' if ro else 'valid'} "
                    f"(input {'invalid' if ri else 'valid'})")
        ci, co = l4_check_off(p), l4_check_off(q)
        in_check, out_check = f[ci] << 8 | f[ci + 1], out[co] << 8 | out[co + 1]
        if p.proto == 17 and in_check == 0:
            return None if out_check == 0 else "zero UDP checksum was changed"
        if p.proto == 17 and out_check == 0:
            return "UDP checksum became zero"
        ri, ro = residue(l4_region(f, p)), residue(l4_region(out, q))
        if ri != ro:
            return (f"L4 checksum {'invalid' if ro else 'valid'} "
                    f"(input {'invalid' if ri else 'valid'})")
        return None

    # -- after a batch: the kernel's table and counters -----------------------------

    def table_problems(self, got):
        """got: the kernel's connection table, key -> (MConn, cached egress
        (ifindex, smac, dmac) or None). Yields (what, detail) per difference
        from the model."""
        if set(got) != set(self.conns):
            extra = [fmt_key(k) for k in set(got) - set(self.conns)][:5]
            missing = [fmt_key(k) for k in set(self.conns) - set(got)][:5]
            yield "conns map differs from the model", f"extra {extra} missing {missing}"
        for key, m in self.conns.items():
            if key not in got:
                continue
            actual, egress = got[key]
            if actual != m:
                yield "conn entry differs from the model", f"{fmt_key(key)}: {actual} != {m}"
            elif egress is not None:
                target = m.addr if m.dir == S.XDPLB_DIR_IN else key[1]
                if self.net.neigh.get(target) != egress:
                    yield "cached egress is not the FIB's", f"{fmt_key(key)}: ifindex {egress[0]}"

    def counter_problems(self, cnt, frames):
        """cnt: the program's counters by name after frames frames; yields
        (what, detail) per counter that disagrees with the verdicts."""
        e = self.counters
        checks = [("rx", frames), ("pass", e["pass"]), ("fwd", e["fwd"]),
                  ("no_dest", e["no_dest"]), ("dest_gone", e["dest_gone"]),
                  ("conn_full", 0)]
        for name, want in checks:
            if cnt[name] != want:
                yield f"counter {name} is {cnt[name]}, expected {want}", str(cnt)
        if cnt["to_stack"] + cnt["no_route"] != e["ours_pass"]:
            yield "to_stack + no_route differ from our passes", f"{cnt} vs {e['ours_pass']}"
