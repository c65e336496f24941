"""Graceful drain of one real server (`xdplb drain`).

The operators' practice with IPVS (and what keepalived's inhibit_on_failure
does at once): lower the server's weight to 0 so the schedulers send it no
new connection while its own connections finish, wait until it has none
left, then remove it. xdplb does it in steps: the weight falls linearly from
its current value to 0 over `over` seconds (one `-e` a second, so weighted
schedulers shift new connections gradually), then the drain waits until
ActiveConn + InActConn is 0 (a UDP flow is always InActConn, and counts
until it idles out) or the deadline passes, and removes the server if
asked. Every step goes through the Control API, the one write path.
"""
import copy
import time

from .ipvsopts import Addr, parse_service
from .model import E_NO_DEST, XdplbError


class DrainError(Exception):
    pass


def parse_endpoint(text, proto, what):
    """`addr:port` as ipvsadm parses it (a service name for the port works too)."""
    a = Addr(proto=proto)
    if parse_service(text, a) != 3:
        raise DrainError(f"illegal {what} address:port specified: {text!r}")
    return a.addr, a.port


def _find(ctl, svc_k, addr, port):
    for d in ctl.get_service(*svc_k).dests:
        if (d.addr, d.port) == (addr, port):
            return d
    raise XdplbError(E_NO_DEST)


def _live(d):
    return d.active + d.inactive


def drain(ctl, svc_k, addr, port, over=0.0, deadline=300.0, remove=False, say=print,
          clock=time.monotonic, sleep=time.sleep):
    """Drain addr:port from the service svc_k = (proto, vip, vport).
    Returns True when it emptied before the deadline (and was removed if
    asked), False when the deadline passed first (it stays, at weight 0)."""
    d = _find(ctl, svc_k, addr, port)
    start, w0 = clock(), d.weight
    say(f"draining {addr}:{port}: weight {w0} -> 0 over {over:g} s, "
        f"{_live(d)} connections")
    weight = w0
    while weight > 0:
        elapsed = clock() - start
        weight = 0 if elapsed >= over else int(w0 * (1 - elapsed / over))
        if weight != d.weight:
            d = copy.copy(d)
            d.weight = weight
            ctl.edit_dest(svc_k, d)
            say(f"weight {weight}")
        if weight:
            sleep(min(1.0, max(0.0, over - elapsed)))
    end = start + deadline
    while True:
        ctl.sweep()      # the live counts drop as connections end, not at a listing
        d = _find(ctl, svc_k, addr, port)
        if _live(d) == 0:
            break
        if clock() >= end:
            say(f"deadline: {d.active} active and {d.inactive} inactive "
                f"connections left on {addr}:{port}; it stays at weight 0")
            return False
        sleep(1.0)
    say(f"{addr}:{port} has no connections left")
    if remove:
        ctl.delete_dest(svc_k, addr, port)
        say(f"removed {addr}:{port}")
    return True
