"""xdplbadm: an ipvsadm 1.31-compatible command line for xdplb.

Same options (popt semantics: bundled short options such as -Ln, the first
option must be a command), same checks and messages, same output bytes and
exit codes: 2 for command-line errors, 255 for refused operations (as a
kernel refusal), 1 for listing failures. See docs/ipvs-behaviour.md §1-3.

Start-up stays fast: listing never imports bcc; only the first writing
command of a netns compiles the data path (xdplb/loader.py). A write is an
operation of the planner (xdplb/config.py), applied as one transaction; -R
plans every line and applies the net result at once (Control.restore).
"""
import gc
import io
import os
import re
import sys

from . import config, control, hostaddr, model, state
from . import ipvsfmt as F
from .ipvsopts import (CMD_ADD, CMD_ADDDEST, CMD_ADDLADDR, CMD_DEL, CMD_DELDEST, CMD_DELLADDR,
                       CMD_EDIT, CMD_FLUSH, CMD_GETLADDR, CMD_LIST, CMD_RESTORE, CMD_SAVE,
                       CMD_STARTDAEMON, CMD_STOPDAEMON, CMD_TIMEOUT, CMD_ZERO, INT_MAX, O,
                       TUN_TYPE_IDS, Cmd, Exit, checked, fail, tryhelp_exit)
from .model import (AF_INET, AF_INET6, DEF_SCHED, IPPROTO_TCP, IPPROTO_UDP, Destination, Service,
                    XdplbError)
from .structs import IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ
from .tables import Tables

# --- one command line --------------------------------------------------------------

class Ctx:
    """State shared by the command lines of one process (-R runs many)."""

    def __init__(self, prog):
        self.prog = prog
        self._ctl = None

    def control(self, create=False):
        """The open state (None if there is none and not create)."""
        if self._ctl is None:
            try:
                self._ctl = control.Control.open(create=create)
            except (state.StateError, OSError) as e:
                raise XdplbError(f"xdplb: {e}") from None
            except Exception as e:  # compiling the data path failed (bcc)
                if not create:
                    raise
                raise XdplbError(f"xdplb: cannot create the data path state: {e}") from None
        return self._ctl

    def close(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None


def _service(ce):
    return Service(proto=ce.svc.proto, addr=ce.svc.addr or "0.0.0.0", port=ce.svc.port,
                   sched=ce.sched, flags=ce.flags, timeout=ce.timeout,
                   netmask=ce.svc.netmask, af=ce.svc.af or AF_INET, fwmark=ce.fwmark, pe=ce.pe)


def _key(ce):
    return (ce.svc.proto, ce.svc.addr, ce.svc.port)


def _plain(ce):
    """Could this service exist in xdplb at all?"""
    return not ce.fwmark and ce.svc.af in (AF_INET, AF_INET6) and \
        ce.svc.proto in (IPPROTO_TCP, IPPROTO_UDP)


def _op(c):
    """The planner operation of a checked configuration command, (operation,
    args); raises the XdplbError of a command refused whatever the tables
    hold (checked before any state is opened or created)."""
    cmd = c.cmd
    if cmd == CMD_FLUSH:
        return config.flush, ()
    if cmd == CMD_TIMEOUT:
        return config.set_timeouts, tuple(c.timeouts)
    if cmd == CMD_STARTDAEMON:
        raise XdplbError("xdplb: the connection sync daemon (--start-daemon) is not "
                         "supported yet")
    if cmd == CMD_STOPDAEMON:
        raise XdplbError(model.E_NO_DAEMON)
    if cmd == CMD_ADD:
        return _add_service(_service(c))
    if cmd == CMD_EDIT:
        if not _plain(c):
            model.check_service_kind(c.svc.af or AF_INET, c.svc.proto, c.fwmark)
            raise XdplbError(model.E_NO_SERVICE)
        return config.edit_service, (_service(c),)
    if cmd == CMD_ZERO and O["service-address"] not in c.options:
        return config.zero, ()
    if cmd in (CMD_DEL, CMD_ZERO):
        if not _plain(c):
            raise XdplbError(model.E_NO_SERVICE)
        return (config.delete_service if cmd == CMD_DEL else config.zero), (_key(c),)
    # destinations and local addresses
    if not _plain(c):
        raise XdplbError(model.E_SVC_NOT_DEFINED)
    if cmd == CMD_ADDLADDR:
        hostaddr.check_on_host(c.laddr)
        index = hostaddr.ifindex(c.ifname) if c.ifname is not None else 0
        return config.add_laddr, (_key(c), c.laddr, index)
    if cmd == CMD_DELLADDR:
        return config.delete_laddr, (_key(c), c.laddr)
    if cmd == CMD_DELDEST:
        return config.delete_dest, (_key(c), c.dest.addr, c.dest.port)
    dest = Destination(addr=c.dest.addr, port=c.dest.port, fwd=c.fwd, weight=c.weight,
                       u_threshold=c.u_thr, l_threshold=c.l_thr, af=c.dest.af,
                       tun_type=TUN_TYPE_IDS[c.tun_type], tun_port=c.tun_port,
                       tun_flags=c.tun_flags)
    return (config.add_dest if cmd == CMD_ADDDEST else config.edit_dest), (_key(c), dest)


def _add_service(svc):
    model.check_service(svc)  # refuse before compiling anything
    return config.add_service, (svc,)


def _op_or_refusal(c):
    try:
        return _op(c)
    except XdplbError as e:
        return e


def _creates(op):
    """An operation that creates the state when there is none (the others act
    on an empty table then: they change nothing, or are refused)."""
    return not isinstance(op, XdplbError) and op[0] in (config.add_service,
                                                         config.set_timeouts)


def _write(op, ctx):
    """Run a configuration operation (or refusal); XdplbError is a kernel-like
    refusal."""
    if isinstance(op, XdplbError):
        raise op
    ctl = ctx.control(create=_creates(op))
    if ctl is None:    # no state: what an empty table says
        [refused], _ = config.run(Tables(), [op])
        if refused is not None:
            raise refused
    else:
        ctl.apply(op[0], *op[1])


def _refused(e):
    sys.stdout.flush()
    sys.stderr.write(e.message + "\n")
    return -1


def _list(c, ctx):
    out = sys.stdout
    o = c.options
    fmt = c.fmt
    if O["connection"] in o:
        ctl = ctx.control()
        if ctl:
            ctl.sweep()
        out.write(F.conn_listing(ctl.connections() if ctl else [], fmt))
        return 0
    if O["service-address"] in o:
        ctl = ctx.control()
        if ctl is None or not _plain(c):
            raise XdplbError(model.E_NO_SERVICE, 1)
        ctl.services(_key(c), counts=False)   # refuses a missing service before the sweep
        ctl.sweep()
        svcs = ctl.services(_key(c), stats=bool(fmt & F.FMT_STATS), rate=bool(fmt & F.FMT_RATE))
        out.write(F.list_service(svcs[0], fmt))
        _say_sampled(ctl, ctx)
        return 0
    if O["timeout"] in o:
        ctl = ctx.control()
        out.write(F.timeout_text(*(ctl.timeouts() if ctl else model.DEFAULT_TIMEOUTS)))
        return 0
    if O["daemon"] in o:
        return 0
    _list_all(fmt, ctx)
    return 0


def _get_laddrs(c, ctx):
    """-G [-t|-u VIP:PORT]: DPVS's local-address listing (ipvsfmt.laddr_listing)."""
    ctl = ctx.control()
    if O["service-address"] in c.options:
        if ctl is None or not _plain(c):
            raise XdplbError(model.E_NO_SERVICE, 1)
        svcs = ctl.services(_key(c), counts=False, laddr_conns=True)
    else:
        svcs = ctl.services(counts=False, laddr_conns=True) if ctl is not None else []
    sys.stdout.write(F.laddr_listing(svcs))
    return 0


def _list_all(fmt, ctx):
    ctl = ctx.control()
    svcs = []
    if ctl is not None:
        if not fmt & F.FMT_RULE:
            ctl.sweep()
        svcs = ctl.services(stats=bool(fmt & F.FMT_STATS), rate=bool(fmt & F.FMT_RATE),
                            counts=not fmt & F.FMT_RULE)
    sys.stdout.write(F.list_all(svcs, fmt))
    _say_sampled(ctl, ctx)


def _say_sampled(ctl, ctx):
    """--rate without `xdplb daemon`: the listing is ipvsadm's, byte for byte,
    so where its rates came from is said on stderr."""
    if ctl is not None and ctl.rates_sampled:
        sys.stdout.flush()
        sys.stderr.write(f"{ctx.prog}: no rate estimator is running (xdplb daemon): the "
                         f"rates are the counters' change over the last second\n")


def restore_table(argv, reading_stdin, ctx):
    """-R: every line is parsed and checked first; a command-line error (fail(),
    try-help) stops with its status and NOTHING is changed (ipvsadm would have
    run the lines before it). Then the configuration lines run as one
    transaction (Control.restore; with a listing among them, one by one).
    Refused lines print their message and the rest goes on; the status is the
    last line's, as ipvsadm's."""
    if reading_stdin:
        tryhelp_exit(ctx.prog)
    # 10^5 lines make 10^6 objects that live to the end, in no cycle: the
    # collector would only walk them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _restore(argv, ctx)
    finally:
        if collecting:
            gc.enable()


def _restore(argv, ctx):
    lines = []      # per line: a listing's Cmd, or an operation (or its refusal)
    real = sys.stderr
    for line in sys.stdin:
        op = _fast_op(line)
        if op is not None:
            lines.append(op)
            continue
        toks = [t for t in re.split(r"[ \t\r\n]+", line)
                if t and t not in ("ipvsadm", "xdplbadm")]
        if not toks:
            continue
        buf = io.StringIO()
        sys.stderr = buf
        try:
            ce = checked([argv[0]] + toks, ctx.prog)
            if ce is not None and ce.cmd == CMD_RESTORE:
                tryhelp_exit(ctx.prog)      # nested -R
        except Exit:
            sys.stderr = real
            sys.stderr.write(buf.getvalue())
            raise
        finally:
            sys.stderr = real
        if ce is None:     # popt's message
            lines.append(XdplbError(buf.getvalue().rstrip("\n")))
        elif ce.cmd in (CMD_LIST, CMD_SAVE, CMD_GETLADDR):
            lines.append(ce)
        else:
            lines.append(_op_or_refusal(ce))
    if not any(isinstance(x, Cmd) for x in lines):
        return _restore_batch(lines, ctx)
    result = 0
    for x in lines:
        if isinstance(x, Cmd):
            result = _execute(x, ctx)
            continue
        try:
            _write(x, ctx)
            result = 0
        except XdplbError as e:
            result = _refused(e)
    return result


def _restore_batch(ops, ctx):
    """Every line as one transaction (Control.restore)."""
    try:
        ctl = ctx.control(create=any(_creates(op) for op in ops))
        if ctl is None:    # no state and nothing creates it: an empty table's answers
            results, _ = config.run(Tables(), ops)
        else:
            results = ctl.restore(ops)
    except XdplbError as e:
        return _refused(e)
    result = 0
    for e in results:
        result = 0 if e is None else _refused(e)
    return result


_QUAD = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP = rf"{_QUAD}(?:\.{_QUAD}){{3}}"
_END = r"[ \t\r\n]*"
_FAST_SVC = re.compile(rf"-A -([tu]) ({_IP}):([0-9]{{1,5}})(?: -s ([^- \t\r\n]\S*))?{_END}")
_FAST_DEST = re.compile(rf"-a -([tu]) ({_IP}):([0-9]{{1,5}}) -r ({_IP})(?::([0-9]{{1,5}}))?"
                        rf"(?: -([gm]))?(?: -w ([0-9]{{1,10}}))?{_END}")
_FAST_PROTO = {"t": IPPROTO_TCP, "u": IPPROTO_UDP}


def _fast_op(line):
    """The operation of a usual -R line (what -S -n writes: `-A -t|-u VIP:PORT
    [-s S]`, `-a -t|-u VIP:PORT -r RIP[:PORT] [-g|-m] [-w N]`, plain dotted
    quads) without popt: what _op makes of the full parser's command
    (tests/unit/test_fast_parse.py checks it), or None for anything else
    (then the full parser decides)."""
    m = _FAST_DEST.fullmatch(line)
    if m is not None:
        proto, vip, vport, rip, rport, fwd, weight = m.groups()
        vport = int(vport)
        fwd = IP_VS_CONN_F_MASQ if fwd == "m" else IP_VS_CONN_F_DROUTE
        weight = 1 if weight is None else int(weight)
        if not 0 < vport < 65536 or (rport and int(rport) > 65535) or weight > INT_MAX:
            return None   # (the full parser refuses a bad port even where -g ignores it)
        rport = vport if rport is None or fwd == IP_VS_CONN_F_DROUTE else int(rport)
        return config.add_dest, ((_FAST_PROTO[proto], vip, vport),
                                 Destination(rip, rport, fwd, weight))
    m = _FAST_SVC.fullmatch(line)
    if m is not None:
        proto, vip, vport, sched = m.groups()
        vport = int(vport)
        if not 0 < vport < 65536:
            return None
        try:
            return _add_service(Service(_FAST_PROTO[proto], vip, vport,
                                        sched=sched[:15] if sched else DEF_SCHED))
        except XdplbError as e:
            return e
    return None


def process_options(argv, reading_stdin, ctx):
    ce = checked(argv, ctx.prog)
    if ce is None:
        return -1
    if ce.cmd == CMD_RESTORE:
        return restore_table(argv, reading_stdin, ctx)
    return _execute(ce, ctx)


def _execute(ce, ctx):
    """Run a checked command (process_options after its checks)."""
    if ce.cmd in (CMD_LIST, CMD_GETLADDR):
        try:
            return (_list if ce.cmd == CMD_LIST else _get_laddrs)(ce, ctx)
        except XdplbError as e:
            fail(e.message, e.code)
    if ce.cmd == CMD_SAVE:
        _list_all(ce.fmt | F.FMT_RULE, ctx)
        return 0
    try:
        _write(_op_or_refusal(ce), ctx)
    except XdplbError as e:
        return _refused(e)
    return 0


def _prog():
    p = sys.argv[0] if sys.argv and sys.argv[0] else "xdplbadm"
    return p if os.path.basename(p).startswith("xdplbadm") else "xdplbadm"


def run(argv):
    """Run one ipvsadm-style command line (argv[0] = program name); returns the exit code."""
    ctx = Ctx(argv[0])
    try:
        if len(argv) == 1:
            _list_all(F.FMT_NONE, ctx)
            return 0
        return process_options(argv, False, ctx) & 0xff
    except Exit as e:
        return e.code & 0xff
    except XdplbError as e:  # e.g. a bad XDPLB_PIN_DIR met by a plain listing or -S
        sys.stdout.flush()
        sys.stderr.write(e.message + "\n")
        return e.code & 0xff
    except OSError as e:  # the state could not be opened or written
        sys.stdout.flush()
        sys.stderr.write(f"xdplb: {e}\n")
        return 255
    finally:
        ctx.close()
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass


NOT_ROOT = ("Can't initialize ipvs: Permission denied (you must be root)\n"
            "Are you sure that IP Virtual Server is built in the kernel or as module?\n")


def main():
    from .bpfsys import privileged
    if not privileged():  # ipvsadm refuses before parsing anything, with these words
        sys.stderr.write(NOT_ROOT)
        sys.exit(2)
    argv = [_prog()] + sys.argv[1:]
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
