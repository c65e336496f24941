"""`xdplb`: attach the data path, look at it, and run the lab.

The per-netns state is in bpffs (xdplb/state.py); the lab is xdplb/lab.py.
Configuration of services is `xdplbadm`'s (the ipvsadm drop-in).
"""
import contextlib
import ctypes as C
import errno
import os
import sys

import click

from . import bpfsys, loader, structs
from .bench import bench_command
from .compare import compare_command
from .control import Control
from .model import IPPROTO_TCP, IPPROTO_UDP, SETTINGS, XdplbError
from .lab import NODES_TWO_ARM as LAB_NODES, PREFIX as LAB_PREFIX
from .netns import NetnsError
from .state import BadPinDir, IncompatibleState, State, StateError, pin_dir, reap


def _fail(exc):
    raise click.ClickException(str(exc)) from exc


IFNAMSIZ = 16


def _ifnames(ctx, param, names):
    """Interface names as the kernel's dev_valid_name() takes them, checked
    before anything is touched."""
    for name in names:
        why = None
        if not name:
            why = "empty"
        elif len(name.encode("utf-8", "surrogateescape")) >= IFNAMSIZ:
            why = f"longer than {IFNAMSIZ - 1} bytes"
        elif name in (".", "..") or any(c in name for c in "/:") \
                or any(c.isspace() or not c.isprintable() for c in name):
            why = "not a valid interface name (no '/', ':', blanks, '.' or '..')"
        if why:
            raise click.BadParameter(f"{name!r}: {why}", ctx=ctx, param=param)
    return names


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def xdplb():
    """IPVS with an XDP data path (configure services with xdplbadm)."""


@xdplb.command()
@click.argument("ifnames", metavar="IFNAME...", nargs=-1, callback=_ifnames)
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native",
              show_default=True, help="XDP mode: driver (native) or generic (skb)")
@click.option("--replace", is_flag=True,
              help="first load this xdplb's data path over the pinned maps and swap it in "
                   "wherever xdplb runs (a hitless upgrade: connections and rules stay)")
def attach(ifnames, mode, replace):
    """Attach xdplb to interfaces (creates this netns's state if absent)."""
    if not ifnames and not replace:
        raise click.UsageError("Missing argument 'IFNAME...'.")
    try:
        for ifname in ifnames:  # every name exists before the state is made or touched
            loader.ifindex(ifname)
        existed = os.path.exists(os.path.join(pin_dir(create=True), "prog"))
        with loader.open_state() as st:
            if not existed:
                click.echo(f"created xdplb state in {st.folder}")
            elif replace:
                _replace(st)
            for ifname in ifnames:
                loader.attach(st, ifname, mode)
                click.echo(f"attached xdplb (prog id {st.prog_id()}) to {ifname} in {mode} mode")
    except (StateError, OSError, ValueError) as e:
        _fail(e)


def _replace(st):
    swapped = loader.replace(st)
    click.echo(f"loaded the data path from {loader.BPF_DIR} over the pinned maps "
               f"(prog id {st.prog_id()})")
    for ifname, old, new in swapped:
        click.echo(f"replaced xdplb on {ifname}: prog id {old} -> {new}")


@xdplb.command()
@click.argument("ifnames", metavar="[IFNAME...]", nargs=-1, callback=_ifnames)
def detach(ifnames):
    """Detach xdplb; with no IFNAME, from everywhere, and unpin this netns's state."""
    from .state import remove
    try:
        for ifname in ifnames:
            loader.ifindex(ifname)
        folder = pin_dir()
    except ValueError as e:
        _fail(e)
    except StateError as e:
        if ifnames or isinstance(e, BadPinDir):
            _fail(e)
        click.echo("xdplb has no state in this network namespace: nothing to detach")
        return
    if not os.path.exists(os.path.join(folder, "prog")):
        if ifnames:
            _fail(StateError(f"xdplb has no state in {folder}"))
        if os.path.isdir(folder):
            remove(folder)
            click.echo(f"removed incomplete state {folder}")
        else:
            reap(folder)  # pins a killed create left
            click.echo("xdplb has no state in this network namespace: nothing to detach")
        return
    try:
        try:
            with State.open(folder=folder) as st:
                if ifnames:
                    for ifname in ifnames:
                        loader.detach(st, ifname)
                        click.echo(f"detached xdplb from {ifname}")
                    return
                detached = loader.detach(st)
        except IncompatibleState:
            if ifnames:
                raise
            detached = loader.detach_program(folder)   # its maps are not ours to read
        for ifname in detached:
            click.echo(f"detached xdplb from {ifname}")
        remove(folder)
        click.echo(f"unpinned xdplb state {folder}")
    except (StateError, OSError, ValueError) as e:
        _fail(e)


@xdplb.command()
@click.argument("ifname", metavar="IFNAME",
                callback=lambda ctx, param, name: _ifnames(ctx, param, (name,))[0])
@click.option("--detach", "off", is_flag=True, help="remove it from IFNAME")
@click.option("--gue-port", "gue_ports", type=click.IntRange(1, 65535), multiple=True,
              help="a UDP port GUE arrives on (repeatable; default 6080)")
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native",
              show_default=True, help="XDP mode: driver (native) or generic (skb)")
def decap(ifname, off, gue_ports, mode):
    """On a real server: strip the ipip / GUE encapsulation of xdplb's Tunnel
    servers (-i) from frames to this host on IFNAME, for a kernel without the
    ipip / fou modules. The VIP goes on a non-ARPing interface (lo)."""
    from . import decap as dc
    try:
        if off:
            click.echo(f"detached xdplb decap (prog id {dc.detach(ifname)}) from {ifname}")
            return
        pid, addrs = dc.attach(ifname, mode, gue_ports or dc.DEFAULT_GUE_PORTS)
        click.echo(f"attached xdplb decap (prog id {pid}) to {ifname} in {mode} mode: ipip and "
                   f"GUE on UDP port {', '.join(map(str, gue_ports or dc.DEFAULT_GUE_PORTS))} "
                   f"to {', '.join(addrs) or 'no address of this host'}")
    except (dc.DecapError, OSError, ValueError) as e:
        _fail(e)


def _dest_used(key, value):
    """A dests slot in use: its flags are set (slot 0 never is)."""
    return value[structs.DestEntry.flags.offset] != 0


def count_entries(m, used=None):
    """Entries of a hash map, or the array slots for which used(key, value) holds."""
    info = bpfsys.obj_info(m.fd, bpfsys.BpfMapInfo)
    try:
        return _count_batch(m, info, used)
    except OSError:
        pass
    n = 0
    for key, value in m.items():
        kb = bytes(m.key_type(key)) if isinstance(key, int) else bytes(key)
        n += 1 if used is None else bool(used(kb, bytes(value)))
    return n


class _BatchOpts(C.Structure):
    _fields_ = [("sz", C.c_size_t), ("elem_flags", C.c_uint64), ("flags", C.c_uint64)]


_lookup_batch = bpfsys._lib.bpf_map_lookup_batch
_lookup_batch.argtypes = [C.c_int, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p,
                          C.POINTER(C.c_uint32), C.c_void_p]
_lookup_batch.restype = C.c_int


def _count_batch(m, info, used, chunk=8192):
    ks, vs = info.key_size, info.value_size
    keys = C.create_string_buffer(ks * chunk)
    values = C.create_string_buffer(vs * chunk)
    tok_in, tok_out = C.create_string_buffer(max(ks, 8)), C.create_string_buffer(max(ks, 8))
    opts = _BatchOpts(sz=C.sizeof(_BatchOpts))
    n, first = 0, True
    while True:
        count = C.c_uint32(chunk)
        ret = _lookup_batch(m.fd, None if first else tok_in, tok_out, keys, values,
                            C.byref(count), C.byref(opts))
        err = -ret if ret < -1 else (C.get_errno() if ret == -1 else 0)
        if ret < 0 and err != errno.ENOENT:
            raise OSError(err, os.strerror(err))
        got = count.value
        if used is None:
            n += got
        else:
            kraw, vraw = keys.raw, values.raw
            n += sum(bool(used(kraw[i * ks:(i + 1) * ks], vraw[i * vs:(i + 1) * vs]))
                     for i in range(got))
        if ret < 0:  # ENOENT: that was the last batch
            return n
        C.memmove(tok_in, tok_out, max(ks, 8))
        first = False


@xdplb.command()
def status():
    """Interfaces, program, map fill and counters of this netns's xdplb."""
    try:
        folder = pin_dir()
    except StateError as e:
        if isinstance(e, BadPinDir):
            _fail(e)
        click.echo(f"xdplb: not loaded ({e})")
        return
    if not os.path.exists(os.path.join(folder, "prog")):
        reap(folder)  # pins a killed create left
        click.echo(f"xdplb: not loaded in this network namespace (no state in {folder})")
        return
    try:
        with State.open(folder=folder) as st:
            click.echo(f"state:    {st.folder}")
            click.echo(f"program:  id {st.prog_id()}")
            for msg in loader.repair(st):  # what a killed attach/detach left
                click.echo(f"repaired: {msg}")
            ifs = loader.attached(st)
            click.echo("interfaces:" + ("" if ifs else " none (xdplb attach IFNAME...)"))
            for name, idx, mode in ifs:
                click.echo(f"  {name:<16} ifindex {idx:<6} {mode}")
            click.echo("maps:")
            for name, cap in (("services", structs.XDPLB_MAX_SERVICES),
                              ("dests", structs.XDPLB_MAX_DESTS),
                              ("conns", structs.XDPLB_MAX_CONNS),
                              ("conns_assured", structs.XDPLB_MAX_ASSURED),
                              ("services6", structs.XDPLB_MAX_SERVICES6),
                              ("conns6", structs.XDPLB_MAX_CONNS6),
                              ("conns6_assured", structs.XDPLB_MAX_ASSURED6),
                              ("fnat_out", structs.XDPLB_MAX_FNAT),
                              ("fnat_out6", structs.XDPLB_MAX_FNAT6)):
                info = bpfsys.obj_info(getattr(st, name).fd, bpfsys.BpfMapInfo)
                cap = info.max_entries or cap
                if name == "dests":
                    cap -= 1  # slot 0 is never used
                n = count_entries(getattr(st, name), _dest_used if name == "dests" else None)
                click.echo(f"  {name:<14} {n:>8} / {cap:<8} ({100.0 * n / cap:.1f}%)")
            click.echo("counters:")
            for i, name in enumerate(structs.COUNTERS):
                click.echo(f"  {name:<14} {st.counters.sum(i):>12}")
    except (StateError, OSError, ValueError) as e:
        _fail(e)


# the lab --------------------------------------------------------------------

@xdplb.group()
@click.option("--prefix", default=LAB_PREFIX, envvar="XDPLB_LAB_PREFIX", show_default=True,
              help="prefix of the lab's namespace names (env XDPLB_LAB_PREFIX)")
@click.pass_context
def lab(ctx, prefix):
    """Network-namespace lab: client -> xdplb -> three HTTP backends."""
    ctx.obj = prefix


def _lab(ctx):
    from . import lab as xlab
    try:
        return xlab, xlab.Lab(ctx.obj, say=click.echo)
    except NetnsError as e:
        _fail(e)


@lab.command()
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native",
              show_default=True, help="XDP mode on the lb's veths")
@click.option("--two-arm", is_flag=True,
              help="the two-armed lab: backends on their own segment behind the lb's "
                   "second interface, without a route to the client; full-NAT")
@click.pass_context
def up(ctx, mode, two_arm):
    """Build the lab (namespaces, veths, xdplb on the lb, HTTP servers)."""
    xlab, lb = _lab(ctx)
    try:
        lb.up(mode, two_arm=two_arm)
    except (NetnsError, StateError, OSError) as e:
        _fail(e)


@lab.command()
@click.pass_context
def down(ctx):
    """Remove every namespace, link, attachment, pin and server of the lab."""
    xlab, lb = _lab(ctx)
    try:
        lb.down()
    except (NetnsError, OSError) as e:
        _fail(e)


@lab.command()
@click.pass_context
def demo(ctx):
    """Replay seed 000 (rr, wrr, pods, hairpin) through xdplb; builds the lab if needed."""
    from .demo import demo as replay
    _lab(ctx)
    try:
        ctx.exit(replay(ctx.obj))
    except (NetnsError, StateError, OSError) as e:
        _fail(e)


@lab.command(name="exec", context_settings={"ignore_unknown_options": True,
                                            "allow_interspersed_args": False})
@click.argument("node", type=click.Choice(LAB_NODES))
@click.argument("argv", metavar="-- CMD...", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx, node, argv):
    """Run CMD on a lab node (lb commands see the lb's xdplb state)."""
    xlab, lb = _lab(ctx)
    try:
        lb.exec(node, list(argv))
    except (NetnsError, OSError) as e:
        _fail(e)


@xdplb.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="seconds between sweeps")
@click.option("--replace/--no-replace", default=True, show_default=True,
              help="on start, load this xdplb's data path over the pinned maps (as "
                   "xdplb attach --replace): restarting the daemon upgrades the data path")
@click.option("-f", "--use-file", "conf", metavar="FILE", type=click.Path(dir_okay=False),
              help="keepalived.conf: its virtual servers, real servers and health checks")
@click.option("-t", "--config-test", is_flag=True,
              help="with -f: check FILE and print what would change, changing nothing")
def daemon(interval, replace, conf, config_test):
    """Expire idle connections on time, estimate rates and, with -f, run
    keepalived's virtual servers and health checks (in the foreground until
    SIGTERM).

    On start it swaps this xdplb's data path in (as attach --replace).
    Without the daemon, expiry happens when a packet meets an expired entry
    and on every listing; the daemon makes ActiveConn/InActConn, and the
    schedulers that read them, drop expired connections within INTERVAL.
    Every 2 s it runs the kernel's rate estimator, which `xdplbadm -L
    --rate` shows. With -f, the services of FILE (keepalived.conf's
    virtual_server blocks) are made live and kept as its checkers say;
    SIGHUP reads FILE again."""
    import logging
    from . import daemon as xdaemon
    from .keepalived.lexer import ConfigError
    logging.basicConfig(level=logging.INFO, format="xdplb daemon: %(message)s")
    if config_test and not conf:
        raise click.UsageError("-t checks a configuration file: give it with -f FILE")
    try:
        if config_test:
            with contextlib.ExitStack() as stack:
                ctl = Control.open()
                if ctl is not None:
                    stack.enter_context(ctl)
                ok = xdaemon.test_config(conf, ctl, click.echo)
            if not ok:
                sys.exit(1)
            return
        ran = xdaemon.run(interval, conf, replaced=_replace if replace else None)
    except ConfigError as e:
        raise click.ClickException(f"{conf}: configuration refused, nothing changed:\n{e}")
    except (StateError, OSError) as e:
        _fail(e)
    if ran is None:
        _fail(StateError("xdplb has no state in this network namespace (xdplb attach or "
                         "xdplbadm -A creates it)"))


@xdplb.command()
@click.option("--dir", "folder", metavar="DIR", default="/etc/xdplb", show_default=True,
              envvar="XDPLB_ETC", help="where the saved files are")
def save(folder):
    """Save the interfaces running xdplb and the rules (xdplbadm -S -n) for `restore`."""
    from .saved import SavedError, save as save_
    try:
        ifnames, lines = save_(folder)
    except (SavedError, StateError, OSError) as e:
        _fail(e)
    click.echo(f"saved {lines} rule lines and {len(ifnames)} interfaces "
               f"({', '.join(ifnames) or 'none'}) in {folder}")


@xdplb.command()
@click.option("--dir", "folder", metavar="DIR", default="/etc/xdplb", show_default=True,
              envvar="XDPLB_ETC", help="where the saved files are")
def restore(folder):
    """Restore what `xdplb save` wrote: the rules (as ipvsadm's boot script: -C, then
    -R; left alone when they equal the live ones), then attach the interfaces."""
    from .saved import SavedError, restore as restore_
    try:
        failed = restore_(folder, say=click.echo)
    except (SavedError, StateError, OSError) as e:
        _fail(e)
    if failed:
        _fail(StateError("\n".join(failed)))


def _open_control():
    """Control over this netns's state, or a clean failure."""
    try:
        ctl = Control.open()
    except (StateError, OSError) as e:
        _fail(e)
    if ctl is None:
        _fail(StateError("xdplb has no state in this network namespace (xdplb attach or "
                         "xdplbadm -A creates it)"))
    return ctl


@xdplb.command(name="set")
@click.argument("name", type=click.Choice(list(SETTINGS)))
@click.argument("value", type=click.IntRange(0, 1))
def set_(name, value):
    """Set one of IPVS's net.ipv4.vs.* settings that the data path follows.

    \b
    conn_reuse_mode            a SYN on a closing connection makes a new one (1)
    expire_nodest_conn         a packet of a connection whose real server is gone
                               ends it instead of being dropped (0)
    expire_quiescent_template  a weight-0 server loses its persistent clients (0)
    sloppy_tcp                 any TCP packet but a RST of an unknown flow to a
                               service is scheduled, not only a SYN (0)
    (the kernel's defaults in brackets)"""
    with _open_control() as ctl:
        try:
            ctl.set_setting(name, value)
        except XdplbError as e:
            _fail(e)


@xdplb.command()
def show():
    """The settings `xdplb set` changes, one `NAME VALUE` a line."""
    with _open_control() as ctl:
        for name, value in ctl.settings().items():
            click.echo(f"{name} {value}")


def _seconds(ctx, param, value):
    units = {"s": 1, "m": 60, "h": 3600}
    text = value.strip()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        secs = float(number) * (scale or 1)
    except ValueError:
        secs = -1
    if not secs >= 0:
        raise click.BadParameter(f"{value!r}: a duration such as 30, 30s, 5m or 1h",
                                 ctx=ctx, param=param)
    return secs


@xdplb.command()
@click.option("-t", "--tcp-service", "tcp", metavar="VIP:PORT", help="the TCP virtual service")
@click.option("-u", "--udp-service", "udp", metavar="VIP:PORT", help="the UDP virtual service")
@click.option("-r", "--real-server", "real", metavar="RIP:PORT", required=True,
              help="the real server to drain")
@click.option("--over", default="0", callback=_seconds, show_default=True,
              help="ramp the weight down to 0 over this long (30s, 5m ...)")
@click.option("--deadline", default="5m", callback=_seconds, show_default=True,
              help="stop waiting for its connections to end after this long")
@click.option("--remove", is_flag=True, help="remove the real server once it has none")
def drain(tcp, udp, real, over, deadline, remove):
    """Take a real server out gracefully: weight down to 0, wait until its
    connections (ActiveConn + InActConn) are gone, optionally remove it.
    Exits 1 when the deadline passes first (the server stays at weight 0)."""
    from . import drain as drainmod
    if (tcp is None) == (udp is None):
        raise click.UsageError("give exactly one of -t/--tcp-service and -u/--udp-service")
    proto = IPPROTO_TCP if tcp else IPPROTO_UDP
    try:
        vip, vport = drainmod.parse_endpoint(tcp or udp, proto, "virtual server")
        rip, rport = drainmod.parse_endpoint(real, proto, "real server")
    except drainmod.DrainError as e:
        raise click.BadParameter(str(e)) from None
    with _open_control() as ctl:
        try:
            emptied = drainmod.drain(ctl, (proto, vip, vport), rip, rport, over=over,
                                     deadline=deadline, remove=remove, say=click.echo)
        except XdplbError as e:
            _fail(e)
    if not emptied:
        sys.exit(1)


def _listen(ctx, param, value):
    from .exporter import ListenError, parse_listen
    try:
        return parse_listen(value)
    except ListenError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


@xdplb.command()
@click.option("--listen", metavar="ADDR:PORT", default="127.0.0.1:19370", show_default=True,
              callback=_listen,
              help="address and port of /metrics (an IP address; 0.0.0.0 or [::] to listen "
                   "on every address)")
def exporter(listen):
    """Prometheus exporter of the IPVS statistics (read-only; runs until killed).

    node_exporter's IPVS metrics (node_ipvs_*) exactly, and xdplb's own:
    per service and real server connections, packets and bytes in and out
    and their estimated rates, ActiveConn, InActConn, PersistConn and
    weight, the data path's counters and the connection table's fill. The
    maps are opened read-only; with no state yet it serves empty metrics."""
    import logging
    from . import exporter as xexp
    logging.basicConfig(level=logging.INFO, format="xdplb exporter: %(message)s")
    host, port = listen
    try:
        xexp.serve(host, port)
    except StateError as e:
        _fail(e)
    except OSError as e:
        shown = f"[{host}]" if ":" in host else host
        raise click.ClickException(f"cannot listen on {shown}:{port}: "
                                   f"{e.strerror or e}") from e


lab.add_command(compare_command, "compare")
xdplb.add_command(bench_command, "bench")


READERS = ("exporter",)   # commands that only read the state (bpfsys.privileged)


def _root_only(name, callback):
    """Every command but --help needs root: say so instead of failing later
    with EACCES/EPERM (or worse, seeing no state through a 0700 folder)."""
    import functools

    @functools.wraps(callback)
    def run(*args, **kwargs):
        if not bpfsys.privileged(write=name not in READERS):
            raise click.ClickException(
                "permission denied: xdplb needs root (CAP_BPF or CAP_SYS_ADMIN, "
                "CAP_NET_ADMIN, CAP_DAC_OVERRIDE)")
        return callback(*args, **kwargs)
    return run


def _guard(group):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            _guard(cmd)
        elif cmd.callback is not None:
            cmd.callback = _root_only(name, cmd.callback)


_guard(xdplb)


def main(argv=None):
    return xdplb.main(args=argv, prog_name="xdplb")


if __name__ == "__main__":
    sys.exit(main())
