"""The oracle: what the data path must do with every frame, decided from
README's promises ("How it works"), not from the C code.

It keeps its own copy of the configured services, the rr ring positions and
the connection table, predicts each frame's fate before the program runs
(expect), judges the program's answer (judge: raises Violation), and after
every batch compares its copy with the kernel's table and counters.
"""
import collections

from xdplb import structs as S
from xdplb.config import rs_filter_bit

from . import icmp
from .fragments import FragModel
from .fullnat import FullNatRules
from .services import DEST6, SVC6, service_config
from .tunnel import TunnelRules
from .wire import (MTU, TCP_ACK, TCP_RST, TCP_SYN, V4, V6, XDP_ABORTED, XDP_DROP, XDP_PASS,
                   XDP_REDIRECT, XDP_TX, VERDICTS, input_checksums_valid, ip_header,
                   l4_check_off, l4_region, ntop, parse, residue)

Svc = collections.namedtuple("Svc", "slot addr port proto ring")
# laddr, lport: a full-NAT connection's lent local address and port
MConn = collections.namedtuple("MConn", "addr port dir fwd dest_slot svc_slot laddr lport",
                               defaults=(b"", 0))
# A real server's reply: its connection (key, entry), found under rs_table's
# entry for the real server's port (port0 False) or port 0 (True), at the
# index-th service listed there.
Reply = collections.namedtuple("Reply", "key conn port0 index")
FWD_NAMES = {S.IP_VS_CONN_F_MASQ: "Masq", S.IP_VS_CONN_F_DROUTE: "Route",
             S.IP_VS_CONN_F_TUNNEL: "Tunnel", S.XDPLB_CONN_F_FULLNAT: "FullNat"}
FULLNAT = S.XDPLB_CONN_F_FULLNAT
NAT = (S.IP_VS_CONN_F_MASQ, FULLNAT)                        # the destination rewritten
XDP_FWD = (S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE, FULLNAT)     # forwarded by XDP


class MDest:
    __slots__ = ("addr", "available", "fwd", "port", "slot", "svc_slot")

    def __init__(self, slot, addr, port, fwd, svc_slot, available=True):
        self.slot, self.addr, self.port, self.fwd = slot, addr, port, fwd
        self.svc_slot, self.available = svc_slot, available


class Violation(Exception):
    """The program did something the oracle forbids; the message says what."""


def fmt_key(k):
    return f"{ntop(k[0])}:{k[2]} -> {ntop(k[1])}:{k[3]} proto {k[4]}"


class Oracle:
    """The model of one fuzz run. stats and outcomes count what was checked;
    counters holds the batch's expected program counters."""

    # service 8's only destination (and its IPv6 twin's), which goes away
    # every batch -> the service that takes its slot in even batches
    GONE_DESTS = {12: 1, 12 + DEST6: 1 + SVC6}

    def __init__(self, net, stats):
        self.net, self.stats = net, stats
        self.outcomes = collections.Counter()
        self.services, self.dests, self.svc_keys, self.home = {}, {}, [], {}
        self.by_slot = {}
        for slot, (addr, port, proto, dl) in service_config(net).items():
            svc = Svc(slot, addr, port, proto, [d[0] for d in dl])
            self.services[(addr, port, proto)] = self.by_slot[slot] = svc
            self.svc_keys.append((addr, port, proto))
            for dslot, daddr, dport, fwd in dl:
                self.dests[dslot] = MDest(dslot, daddr, dport, fwd, slot)
                self.home[dslot] = slot
        # a full-NAT server's address is in rs_filter too (its replies)
        self.rs_bits = {rs_filter_bit(d.addr) for _, d in self.masq_dests()} | \
            {rs_filter_bit(d.addr) for d in self.dests.values() if d.fwd == FULLNAT}
        self.fullnat = FullNatRules(self, Violation, Reply)
        self.frags = FragModel(self, Violation)
        self.tunnels = TunnelRules(self, Violation)
        self.new_batch()

    def masq_dests(self):
        """(service, destination) of every masquerading destination, in the
        order they join rs_table (the runner writes them in this order)."""
        for svc in self.services.values():
            for dslot in svc.ring:
                d = self.dests[dslot]
                if d.fwd == S.IP_VS_CONN_F_MASQ:
                    yield svc, d

    def new_batch(self):
        """The configured state again, with empty tables and counters."""
        for d in self.dests.values():
            d.available, d.svc_slot = True, self.home[d.slot]
        self.pos = {svc.slot: 0 for svc in self.services.values()}
        self.conns = {}
        self.replied = set()    # connections a reply was forwarded for by XDP
        # tracked flows' tuples by family: the clients' and the replies'
        self.flows_in, self.flows_out = {V4: [], V6: []}, {V4: [], V6: []}
        self.counters = collections.Counter()
        self.frags.reset()
        self.fullnat.reset()
        self.rs = {}
        for svc, d in self.masq_dests():
            self._rs_join(svc, d)

    # -- the real-server table (README: a reply finds its connection through it) --

    @staticmethod
    def rs_at(svc, d):
        """Where rs_table lists a masquerading destination d of svc: under its
        address and port, or port 0 when the service or the destination has
        port 0 (the connections then keep the client's destination port)."""
        return d.addr, d.port if svc.port and d.port else 0, svc.proto

    def _rs_join(self, svc, d):
        """d joins svc: svc goes first (newest) in d's real server's list."""
        listed = self.rs.setdefault(self.rs_at(svc, d), [])
        if svc not in listed:
            listed.insert(0, svc)

    def rs_maybe(self, addr):
        """Is addr's bit set in rs_filter (a masquerading real server's, or
        another address sharing its bit)?"""
        return rs_filter_bit(addr) in self.rs_bits

    def reply_of(self, p):
        """The Reply whose connection p (real server -> client) belongs to,
        or None: for each service rs_table lists under p's source address and
        port, then under port 0, the client's tuple to that service (its
        port, or the reply's source port for a port-zero service) names a
        Masq connection to exactly this real server address and port. Only
        an address in the filter is looked up."""
        if not self.rs_maybe(p.src):
            return None
        reply = self.fullnat.reply_of(p)   # a full-NAT reply: to a lent tuple
        if reply is not None:
            return reply
        for port0, port in ((False, p.sport), (True, 0)):
            for i, svc in enumerate(self.rs.get((p.src, port, p.proto), ())):
                key = (p.dst, svc.addr, p.dport, svc.port or p.sport, p.proto)
                c = self.conns.get(key)
                if c is not None and c.fwd == S.IP_VS_CONN_F_MASQ and c.addr == p.src and \
                        c.port == p.sport:
                    return Reply(key, c, port0, i)
        return None

    def dest_goes(self, batch):
        """Each of GONE_DESTS is deleted (odd batches) or its slot is reused
        by another service (even ones): IPVS drops the client's packets of
        its flows and still un-NATs their replies: its service stays in the
        destination's rs_table entry (the control plane's sweep takes it out
        once no connection needs it). Returns the destinations to write."""
        gone = []
        for dslot, taker in self.GONE_DESTS.items():
            d = self.dests[dslot]
            if batch % 2:
                d.available = False
            else:
                d.svc_slot = taker
                self._rs_join(self.by_slot[taker], d)
            gone.append(d)
        return gone

    # -- before the run: what must happen -----------------------------------------

    def svc_find(self, p):
        """(service, its port) of p: its address and port, else the port-zero
        service of its address; (None, 0) when neither exists."""
        svc = self.services.get((p.dst, p.dport, p.proto))
        if svc is not None:
            return svc, p.dport
        return self.services.get((p.dst, 0, p.proto)), 0

    def expect(self, f, p):
        """What must happen to frame f (parsed: p): (kind, info). kind is
        'pass' (not ours), 'drop' (reason), or 'fwd' (conn entry, new?,
        Reply or None). A new connection enters the model here."""
        if p is None:
            return self.icmp_expect(f)
        reply = self.reply_of(p)
        if reply is not None:
            return "fwd", (reply.conn, False, reply)
        if self.rs_maybe(p.src):
            self.stats["frames past rs_filter, not a reply"] += 1
        c = self.conns.get(p.key)
        if c is not None:
            d = self.dests.get(c.dest_slot)
            if d is None or not d.available or d.svc_slot != c.svc_slot:
                return "drop", "dest_gone"
            return "fwd", (c, False, None)
        svc, svc_port = self.svc_find(p)
        if svc is None:
            return "pass", None
        if p.proto == 6 and p.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return "pass", None
        # The kernel drops a bad IP header in ip_rcv: IPVS never schedules it.
        # A tracked flow's packets carry whatever error they have.
        if residue(ip_header(f, p)):
            return "pass", None
        if not svc.ring:
            return "answer", ("no_dest", 0)
        n = self.pos[svc.slot]
        self.pos[svc.slot] = n + 1
        d = self.dests[svc.ring[n % len(svc.ring)]]
        if not d.available:
            return "answer", ("no_dest", 0)
        # The real port only for packets to the service's port (a port-zero
        # service keeps the client's destination port).
        port = d.port if p.dport == svc_port and d.port else p.dport
        nc = MConn(d.addr, port, S.XDPLB_DIR_IN, d.fwd, d.slot, svc.slot)
        self.conns[p.key] = nc
        self.flows_in[len(p.src)].append(p.key)
        if d.fwd == S.IP_VS_CONN_F_MASQ:
            self.flows_out[len(p.src)].append((d.addr, p.src, port, p.sport, p.proto))
        return "fwd", (nc, True, None)

    # -- after the run: judge the program's answer ---------------------------------

    def judge(self, f, p, expected, ifindex, verdict, out, kernel_entry):
        """Check the program's verdict and frame out for f against expected
        (from expect()); kernel_entry(key) is the kernel's connection entry
        as an MConn (or None). Raises Violation."""
        kind, info = expected
        if verdict == XDP_ABORTED:
            raise Violation("XDP_ABORTED")
        if kind == "answer":
            self.judge_answer(f, p, info, verdict, out)
            return
        if kind == "fwd" and info[1] and info[0].fwd == FULLNAT:
            info = (self.fullnat.learn(p.key, info[0], kernel_entry), True, None)
        if kind == "fwd" and self._too_big(f, p, *info, verdict, out):
            return
        if len(out) != len(f) and not (kind == "fwd" and info[0].fwd == S.IP_VS_CONN_F_TUNNEL):
            raise Violation("output length differs")
        if kind == "icmp":
            self._judge_icmp(f, info, ifindex, verdict, out)
            return
        if kind == "pass":
            self.counters["pass"] += 1
            self.stats["not ours"] += 1
            if verdict != XDP_PASS or out != f:
                raise Violation("not ours, but not passed byte-identical")
            self.outcomes["pass (not ours)"] += 1
            return
        self.stats["ours"] += 1
        if len(p.src) == V6:
            self.stats["ours over IPv6"] += 1
            if p.ihl > 40:
                self.stats["ours over IPv6 with extension headers"] += 1
        elif p.ihl > 20:
            self.stats["ours with IP options"] += 1
        if p.l3 == 18:
            self.stats["ours with a VLAN tag"] += 1
        if kind == "drop":
            self.counters[info] += 1
            if verdict != XDP_DROP or out != f:
                raise Violation(f"expected DROP untouched ({info})")
            self.outcomes[f"drop ({info}){_fam(p.src)}"] += 1
            return
        c, new, reply = info
        if new:
            self.stats["new connections"] += 1
            if kernel_entry(p.key) != c:
                raise Violation("new connection entry is not the ring's next")
        if reply is not None:
            self._count_reply(reply)
        if c.fwd == S.IP_VS_CONN_F_TUNNEL:
            form, exp_out = self.tunnels.form(f, p, c, ifindex, verdict, out)
            self.tunnels.compare(f, p, c, form, exp_out, out)
        else:
            form, exp_out = self._forward_form(f, p, c, reply, ifindex, verdict, out)
            self._compare(f, p, c, form, exp_out, out)
            if p.first_frag:
                self.stats["first fragments sent on"] += 1
                self.frags.note(f, p, c, reply, form)
        self.outcomes[f"{form} {VERDICTS[verdict]} {FWD_NAMES.get(c.fwd, f'fwd {c.fwd}')}"
                      f"{_fam(p.src)}"] += 1

    def judge_later(self, f, q, expected, ifindex, verdict, out):
        """judge() for a later fragment (wire.parse_later: q), expected from
        self.frags.expect(q)."""
        if verdict == XDP_ABORTED:
            raise Violation("XDP_ABORTED")
        if len(out) != len(f):
            raise Violation("output length differs")
        result = self.frags.judge(f, q, expected, ifindex, verdict, out, self.counters)
        self.outcomes[f"later fragment: {result} {VERDICTS[verdict]}"] += 1

    # -- ICMP and path MTU (tests/fuzz/icmp.py) ----------------------------------------

    def icmp_expect(self, f):
        """An ICMP error about a tracked connection: ('icmp', (IcmpErr, conn,
        Reply or None)); anything else not ours."""
        e = icmp.icmp_error(f)
        if e is None:
            return "pass", None
        q = _Tuple(e.dst, e.src, e.dport, e.sport, e.proto)   # the quote, reversed
        reply = self.reply_of(q)
        c = reply.conn if reply is not None else \
            self.conns.get((q.src, q.dst, q.sport, q.dport, q.proto))
        if c is None or not icmp.sound(f, e):
            return "pass", None
        return "icmp", (e, c, reply)

    def _judge_icmp(self, f, info, ifindex, verdict, out):
        e, c, reply = info
        self.stats["ICMP errors of ours"] += 1
        masq = c.fwd in NAT
        if reply is None:
            target = c.addr

            def want(macs):
                if c.fwd == FULLNAT:    # ... and from the local address
                    return icmp.translated(icmp.translated(f, e, "rs", c.addr, c.port, None),
                                           e, "client", c.laddr, c.lport, macs)
                if masq:
                    return icmp.translated(f, e, "rs", c.addr, c.port, macs)
                return self.rewritten(f, None, c, macs, None) if macs else bytes(f)
            way = "to the real server"
        else:
            target = e.src if c.fwd != FULLNAT else reply.key[0]

            def want(macs):
                out = icmp.translated(f, e, "client", reply.key[1], reply.key[3], None)
                if c.fwd == FULLNAT:    # ... about the client's own packet
                    out = icmp.translated(out, e, "rs", reply.key[0], reply.key[2], None)
                if macs is not None:
                    out[0:6], out[6:12] = macs[2], macs[1]
                return out
            way = "to the client"
        fib = self.net.fib(target)
        if reply is not None and fib == "ok":
            self.replied.add(reply.key)
        if c.fwd not in XDP_FWD or fib == "none":
            allowed = {(XDP_PASS, bytes(f))}
        elif fib == "no_neigh":
            allowed = {(XDP_PASS, bytes(want(None)))}
        else:
            macs = self.net.neigh.get(target)
            allowed = {(XDP_PASS, bytes(f)), (XDP_PASS, bytes(want(None)))} if macs is None \
                else {(XDP_TX if macs[0] == ifindex else XDP_REDIRECT, bytes(want(macs)))}
        if (verdict, bytes(out)) not in allowed:
            raise Violation(f"ICMP error {way}: not translated as it must be")
        if verdict != XDP_PASS:
            self.counters["fwd"] += 1
        else:
            self.counters["ours_pass"] += 1
        xdp_fwd = c.fwd in XDP_FWD
        if xdp_fwd and (fib in ("ok", "no_neigh") or verdict != XDP_PASS or out != f):
            self.counters["icmp_xlate"] += 1
        self.outcomes[f"icmp {way} {VERDICTS[verdict]} {FWD_NAMES.get(c.fwd, c.fwd)}"
                      f"{_fam(e.src)}"] += 1

    def judge_answer(self, f, p, info, verdict, out):
        """The data path's own ICMP answer (info: its counter, which says
        which answer, and the MTU it carries)."""
        name, mtu = info
        self.counters[name] += 1
        fam = _fam(p.src)
        if verdict == XDP_DROP and out == f:
            if icmp.unicast(p.src):
                self.counters["icmp_limited"] += 1
                self.outcomes[f"answer ({name}) rate-limited{fam}"] += 1
            else:
                self.outcomes[f"answer ({name}) none to a non-unicast source{fam}"] += 1
            return
        if not icmp.unicast(p.src):
            raise Violation(f"{name}: answered a non-unicast source")
        if verdict not in (XDP_TX, XDP_REDIRECT) or bytes(out) != icmp.answer(f, p, name, mtu):
            raise Violation(f"{name}: not the ICMP answer it must be")
        self.outcomes[f"answer ({name}){fam}"] += 1

    def _too_big(self, f, p, c, new, reply, verdict, out):
        """A forward over the egress MTU (every device's is MTU); True when
        it was one, judged."""
        target = c.addr if reply is None else reply.key[0]
        if c.fwd == S.IP_VS_CONN_F_TUNNEL:
            return self.tunnels.too_big(f, p, c, verdict, out)
        if p.tot <= MTU or c.fwd not in XDP_FWD or self.net.fib(target) != "ok":
            return False
        # not to be fragmented on the way: DF, or any IPv6 packet
        df = len(p.src) == V6 or f[p.l3 + 6] & 0x40
        if reply is not None:
            self.replied.add(reply.key)
        if (reply is None or c.fwd == FULLNAT) and df:
            # (a full-NAT reply is to a local address: answered from it)
            self.judge_answer(f, p, ("frag_needed", MTU), verdict, out)
            return True
        self.counters["too_big"] += 1
        if c.fwd == FULLNAT or reply is None and c.fwd == S.IP_VS_CONN_F_DROUTE:
            want, how = XDP_DROP, "dropped"
        elif reply is not None and df:
            want, how = XDP_PASS, "to the stack untouched"
        else:
            want, how = XDP_PASS, "to the stack NATed"
        if verdict != want:
            raise Violation(f"over the MTU: must go {how}")
        exp_out = self.rewritten(f, p, c, None, reply) if how.endswith("NATed") else f
        self._compare(f, p, c, f"over the MTU, {how}", exp_out, out)
        self.outcomes[f"over the MTU, {how}{_fam(p.src)}"] += 1
        return True

    def _count_reply(self, reply):
        self.stats["replies found through rs_table"] += 1
        if len(reply.key[0]) == V6:
            self.stats["replies found through rs_table6"] += 1
        if reply.port0:
            self.stats["replies found under port 0 (port-zero service)"] += 1
        if reply.index:
            self.stats["replies found past the first service listed"] += 1

    def _forward_form(self, f, p, c, reply, ifindex, verdict, out):
        """How a frame of connection c (a reply: reply is its Reply) left:
        ('xmit' | 'stack (untouched)' | 'stack (NATed)', the frame it must
        be), if that way is allowed."""
        xdp_fwd = c.fwd in XDP_FWD
        target = c.addr if reply is None else reply.key[0]
        if verdict in (XDP_TX, XDP_REDIRECT):
            self.counters["fwd"] += 1
            macs = self.net.neigh.get(target)
            if not xdp_fwd or macs is None:
                raise Violation("forwarded towards a target without a neighbour")
            if (verdict == XDP_TX) != (macs[0] == ifindex):
                raise Violation("TX/REDIRECT does not match ingress vs egress")
            if reply is not None:
                self.replied.add(reply.key)
            return "xmit", self.rewritten(f, p, c, macs, reply)
        if verdict != XDP_PASS:
            raise Violation(f"unexpected {VERDICTS[verdict] if verdict < 5 else verdict} "
                            "on a tracked or new flow")
        self.counters["ours_pass"] += 1
        masq = c.fwd in NAT
        fib = self.net.fib(target)
        if xdp_fwd and fib == "ok":
            raise Violation("passed a frame the FIB can forward")
        if out == f:
            if masq and fib == "no_neigh":
                raise Violation("Masq frame for an unresolved neighbour passed without NAT")
            return "stack (untouched)", f
        if not masq or fib == "none":
            raise Violation("rewritten frame passed where it must be untouched")
        return "stack (NATed)", self.rewritten(f, p, c, None, reply)

    def _compare(self, f, p, c, form, exp_out, out):
        """out equals exp_out but for the checksums, which are verified from
        scratch: they carry f's validity."""
        if exp_out == f:
            if out != f:
                raise Violation(f"{form}: frame changed")
            return
        a, b = bytearray(out), bytearray(exp_out)
        if c.fwd in NAT and form != "stack (untouched)":
            checks = [l4_check_off(p)] + ([p.l3 + 10] if len(p.src) == V4 else [])
            for at in checks:
                a[at:at + 2] = b[at:at + 2]
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
    def rewritten(f, p, c, macs, reply):
        """f as the data path must send it on connection c: Masq sends the
        client's packets to the real server, and its replies (reply: their
        Reply) from the virtual service the client connected to."""
        out = bytearray(f)
        if c.fwd == FULLNAT:
            FullNatRules.rewrite(out, p, c, reply)
        elif c.fwd == S.IP_VS_CONN_F_MASQ:
            if reply is None:
                out[p.dst_at:p.dst_at + len(c.addr)] = c.addr
                out[p.l4 + 2:p.l4 + 4] = c.port.to_bytes(2, "big")
            else:
                out[p.src_at:p.src_at + len(p.src)] = reply.key[1]
                out[p.l4:p.l4 + 2] = reply.key[3].to_bytes(2, "big")
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
        ri, ro = residue(ip_header(f, p)), residue(ip_header(out, q))
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
        from the model. An entry caches the egress of its replies (towards
        the client, key[0]): exactly when one was forwarded by XDP, which
        takes a resolved egress; the client's packets use the destination's
        cache, not the entry."""
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
            elif (egress is not None) != (key in self.replied):
                yield ("reply egress cached without a forwarded reply" if egress else
                       "a reply was forwarded, but its egress is not cached"), fmt_key(key)
            elif egress is not None and self.net.neigh.get(key[0]) != egress:
                yield "cached reply egress is not the FIB's", f"{fmt_key(key)}: ifindex {egress[0]}"

    def counter_problems(self, cnt, frames):
        """cnt: the program's counters by name after frames frames; yields
        (what, detail) per counter that disagrees with the verdicts."""
        e = self.counters
        if e["unsure"]:
            # a later fragment followed a record the oracle could not know
            self.stats["batches with a fragment record the oracle cannot know"] += 1
            if cnt["rx"] != frames:
                yield f"counter rx is {cnt['rx']}, expected {frames}", str(cnt)
            return
        checks = [("rx", frames), ("pass", e["pass"]), ("fwd", e["fwd"]),
                  ("no_dest", e["no_dest"]), ("dest_gone", e["dest_gone"]),
                  ("conn_full", 0), ("frag_overlap", e["frag_overlap"]),
                  ("frag_needed", e["frag_needed"]), ("too_big", e["too_big"]),
                  ("icmp_xlate", e["icmp_xlate"]), ("icmp_limited", e["icmp_limited"]),
                  ("fnat_no_port", 0)]
        for name, want in checks:
            if cnt[name] != want:
                yield f"counter {name} is {cnt[name]}, expected {want}", str(cnt)
        # a later fragment near its record's end that passed untouched: it
        # followed a record of the stack's (to_stack) or found none
        either = e["either_untouched"]
        passed = cnt["to_stack"] + cnt["no_route"] + cnt["tun_too_big"] + cnt["frag_untracked"]
        if passed != e["ours_pass"] + e["frag_untracked"] + either:
            yield ("to_stack + no_route + tun_too_big + frag_untracked differ from our passes",
                   f"{cnt} vs {e}")
        if not e["frag_untracked"] <= cnt["frag_untracked"] <= e["frag_untracked"] + either:
            yield f"counter frag_untracked is {cnt['frag_untracked']}", f"{cnt} vs {e}"
        if cnt["tun_no_src"]:
            yield "tun_no_src counted with every interface's source written", str(cnt)


_Tuple = collections.namedtuple("_Tuple", "src dst sport dport proto")


def _fam(addr):
    """An outcome's family suffix: IPv6's are told apart."""
    return " IPv6" if len(addr) == V6 else ""
