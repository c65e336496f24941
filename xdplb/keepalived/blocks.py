"""The blocks of a virtual_server while they are read: each keyword's
handler, keepalived's checks and words, and the inheritance of timers
(virtual server -> real server -> checker). xdplb/keepalived/conf.py drives
them; the result is xdplb/keepalived/model.py's data."""
import grp
import ipaddress
import os
import pwd
import re
import shlex

from .. import model
from ..ipvsopts import SCHED_FLAG_BITS
from ..model import IPPROTO_TCP, IPPROTO_UDP, XdplbError
from ..structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL,
                       IP_VS_SVC_F_PERSISTENT)
from .model import Check, RealServer, Script, Url, VirtualServer

DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
WEIGHT_LIMIT = 65535          # keepalived's IPVS_WEIGHT_LIMIT
LVS_MAX_TIMEOUT = 86400 * 31
CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "UDP_CHECK")
E_FULLNAT = ("xdplb: full-NAT (FNAT, laddr_group_name, local_address_group) is not "
             "supported yet: xdplb has no full-NAT forwarding")


class _Bad(Exception):
    """One statement's error (collected by the parser, which goes on)."""


def _timer(s, what):
    """keepalived's read_timer: decimal seconds, at least a microsecond."""
    try:
        v = float(s.args[0])
    except (IndexError, ValueError):
        v = -1.0
    if not (v > 0 and re.fullmatch(r"\d+(\.\d{1,6})?", s.args[0] if s.args else "")):
        raise _Bad(what.format(s.args[0] if s.args else ""))
    return v


def _uint(s, lo, hi, what):
    arg = s.args[0] if s.args else ""
    if not arg.isdigit() or not lo <= int(arg) <= hi:
        raise _Bad(what.format(arg))
    return int(arg)


def _flag(s, what):
    """A keyword alone, or followed by true/on/yes or false/off/no."""
    if not s.args:
        return True
    v = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
    if s.args[0] not in v:
        raise _Bad(what.format(s.args[0]))
    return v[s.args[0]]


def _ipv4(text, what):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise _Bad(what) from None


def _address(text, what):
    """An IPv4 or IPv6 address, IPv6 written as inet_ntop would."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Bad(what) from None


def _port(text, what):
    if text is None:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise _Bad(what)
    return int(text)


def _endpoint(args, what):
    """(addr, port) of `IP [PORT]`, with keepalived's error words."""
    addr, port = args[0], args[1] if len(args) > 1 else None
    shown = f"{addr}/{port}" if port is not None else addr
    return _address(addr, what.format(shown)), _port(port, what.format(shown))


BLOCK_KEYWORDS = frozenset(("real_server", "url", *CHECKERS))


class Defaults:
    """The timers a real server or checker inherits: None is "not set here"."""

    def __init__(self):
        self.connect_timeout = self.retry = self.delay_before_retry = None
        self.delay_loop = self.alpha = self.inhibit = self.virtualhost = None

    def handlers(self, who):
        def set_(name, fn):
            return lambda s: setattr(self, name, fn(s))
        return {
            "connect_timeout": set_("connect_timeout", lambda s: _timer(
                s, who + " connect_timeout {} invalid - ignoring")),
            "delay_loop": set_("delay_loop", lambda s: _timer(
                s, who + " delay_loop '{}' invalid - ignoring")),
            "delay_before_retry": set_("delay_before_retry", lambda s: _timer(
                s, who + " delay_before_retry '{}' invalid - ignoring")),
            "retry": set_("retry", lambda s: _uint(s, 0, 2**32 - 2, "retry value invalid - {}")),
            "alpha": set_("alpha", lambda s: _flag(s, "Invalid alpha parameter {}")),
            "inhibit_on_failure": set_("inhibit", lambda s: _flag(
                s, "Invalid inhibit_on_failure parameter {}")),
        }

    def over(self, parent):
        """These settings, each unset one taken from parent."""
        out = Defaults()
        for k, v in vars(self).items():
            setattr(out, k, v if v is not None else getattr(parent, k))
        return out


def _forwarding(s):
    kind = s.args[0] if s.args else ""
    if kind == "NAT":
        return IP_VS_CONN_F_MASQ
    if kind == "DR":
        return IP_VS_CONN_F_DROUTE
    if kind == "TUN":        # ipip, keepalived's default tunnel type
        return IP_VS_CONN_F_TUNNEL
    if kind == "FNAT":
        raise _Bad(E_FULLNAT)
    raise _Bad(f"PARSER : unknown [{kind}] routing method for real server.")


def user_ids(args, what):
    """(uid, gid) of `USER [GROUP]` (the user's group by default)."""
    if not args:
        raise _Bad(f"No user specified for {what}")
    try:
        pw = pwd.getpwnam(args[0])
        gid = grp.getgrnam(args[1]).gr_gid if len(args) > 1 else pw.pw_gid
    except KeyError:
        raise _Bad(f"Failed to set uid/gid for {what} {' '.join(args)}") from None
    return pw.pw_uid, gid


class VsDraft:
    """A virtual_server block while it is read."""

    def __init__(self, name, endpoints):
        self.name, self.endpoints = name, endpoints
        self.defaults = Defaults()
        self.defaults.connect_timeout = DEFAULT_CONNECT_TIMEOUT
        self.defaults.delay_loop = DEFAULT_DELAY_LOOP
        self.defaults.alpha = self.defaults.inhibit = False
        self.proto, self.sched, self.flags = IPPROTO_TCP, model.DEF_SCHED, 0
        v6 = any(":" in a for a, _ in endpoints)
        self.timeout, self.fwd = 0, IP_VS_CONN_F_MASQ
        self.netmask = 128 if v6 else "255.255.255.255"   # (an IPv6 one: a prefix length)
        self.quorum, self.hysteresis, self.omega, self.weight = 1, 0, False, 1
        self.sorry, self.sorry_inhibit, self.rs = None, False, []

    def handlers(self, p):
        h = self.defaults.handlers("virtual server")
        h.update({
            "lb_algo": self.sched_, "lvs_sched": self.sched_,
            "lb_kind": self.fwd_, "lvs_method": self.fwd_,
            "persistence_timeout": self.persistence, "persistence_granularity": self.granularity,
            "protocol": self.protocol, "quorum": self.quorum_, "hysteresis": self.hysteresis_,
            "omega": lambda s: setattr(self, "omega", True),
            "virtualhost": self.virtualhost, "weight": self.weight_,
            "sorry_server": self.sorry_server,
            "sorry_server_inhibit": lambda s: setattr(self, "sorry_inhibit", True),
            "real_server": lambda s: self.rs.append(RsDraft(s).read(p)),
            "laddr_group_name": self.fullnat, "local_address_group": self.fullnat,
        })
        h.update({f: self.sched_flag for f in ("hashed", *SCHED_FLAG_BITS)})
        return h

    def sched_(self, s):
        name = s.args[0] if s.args else ""
        try:
            model.check_scheduler(name)
        except XdplbError as e:
            raise _Bad(f"Invalid lvs_scheduler '{name}' - ignoring"
                       if name not in model.IPVS_SCHEDULERS else e.message) from None
        self.sched = name

    def sched_flag(self, s):
        self.flags |= SCHED_FLAG_BITS.get(s.keyword, 0)

    def fwd_(self, s):
        self.fwd = _forwarding(s)

    def fullnat(self, s):
        raise _Bad(E_FULLNAT)

    def persistence(self, s):
        self.timeout = (model.IPVS_SVC_PERSISTENT_TIMEOUT if not s.args else
                        _uint(s, 1, LVS_MAX_TIMEOUT, "persistence_timeout invalid"))
        self.flags |= IP_VS_SVC_F_PERSISTENT

    def granularity(self, s):
        if isinstance(self.netmask, int):
            self.netmask = _uint(s, 1, 128, "Invalid IPv6 persistence_granularity "
                                            "specified - {}")
        else:
            what = f"Invalid IPv4 persistence_granularity specified - {' '.join(s.args)}"
            self.netmask = _ipv4(s.args[0] if s.args else "", what)
        if not self.flags & IP_VS_SVC_F_PERSISTENT:
            self.timeout = model.IPVS_SVC_PERSISTENT_TIMEOUT
            self.flags |= IP_VS_SVC_F_PERSISTENT

    def protocol(self, s):
        name = (s.args[0] if s.args else "").upper()
        if name == "SCTP":
            raise _Bad(model.unsupported("SCTP services are").message)
        if name not in ("TCP", "UDP"):
            raise _Bad(f"Unknown protocol {' '.join(s.args)} - ignoring")
        self.proto = IPPROTO_TCP if name == "TCP" else IPPROTO_UDP

    def quorum_(self, s):
        self.quorum = _uint(s, 1, 2**32 - 1, "Quorum {} must be in [1, 4294967295].")

    def hysteresis_(self, s):
        self.hysteresis = _uint(s, 0, 2**32 - 1, "Hysteresis {} must be in [0, 4294967295]")

    def virtualhost(self, s):
        if not s.args:
            raise _Bad("virtual server virtualhost missing")
        self.defaults.virtualhost = s.args[0]

    def weight_(self, s):
        self.weight = _uint(s, 1, WEIGHT_LIMIT,
                            f"Virtual server weight {{}} is outside range 1-{WEIGHT_LIMIT}")

    def sorry_server(self, s):
        self.sorry = _endpoint(s.args, "Invalid sorry server IP address {} - skipping")

    def finish(self, p, s):
        if not self.rs:
            p.cfg.ignored.append((f"virtual server {self.name} (it has no real servers, "
                                  "as keepalived ignores it)", s.where))
            return None
        vport = self.endpoints[0][1]
        rss = tuple(r.finish(p, self, vport) for r in self.rs)
        sorry = None
        if self.sorry:
            addr, port = self.sorry
            sorry = RealServer(addr, vport if self.fwd in (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_TUNNEL) or not port
                               else port, 1, self.fwd, self.sorry_inhibit)
        return VirtualServer(self.proto, tuple(self.endpoints), self.name, self.sched,
                             self.flags, self.timeout, self.netmask, self.quorum,
                             self.hysteresis, bool(self.defaults.alpha), self.omega, sorry,
                             rss)


class RsDraft:
    """A real_server block while it is read."""

    def __init__(self, s):
        self.s = s
        self.addr, self.port = _endpoint(s.args, "Invalid real server ip address/port {}"
                                                 " - skipping")
        self.defaults = Defaults()
        self.weight = self.fwd = None
        self.u_thr = self.l_thr = 0
        self.notify = {}
        self.checks = []

    def read(self, p):
        h = self.defaults.handlers("real server")
        h.update({"weight": self.weight_, "lvs_method": self.fwd_, "lb_kind": self.fwd_,
                  "uthreshold": self.threshold("u"), "lthreshold": self.threshold("l"),
                  "notify_up": self.script("notify_up"),
                  "notify_down": self.script("notify_down")})
        h.update({k: self.checker(k) for k in CHECKERS})
        self.p = p
        p.each(self.s, h)
        return self

    def weight_(self, s):
        self.weight = _uint(s, 0, WEIGHT_LIMIT,
                            f"Real server weight {{}} is outside range 0-{WEIGHT_LIMIT}")

    def fwd_(self, s):
        self.fwd = _forwarding(s)

    def threshold(self, which):
        def h(s):
            v = _uint(s, 0, 2**32 - 1, f"Invalid real_server {which}threshold '{{}}' - ignoring")
            setattr(self, f"{which}_thr", v)
        return h

    def script(self, name):
        def h(s):
            if name in self.notify:
                raise _Bad(f"{name} script already specified - ignoring {' '.join(s.args)}")
            self.notify[name] = s
        return h

    def checker(self, kind):
        def h(s):
            c = CheckDraft(kind)
            self.p.each(s, c.handlers(self.p))
            self.checks.append((c, s))
        return h

    def finish(self, p, vs, vport):
        d = self.defaults.over(vs.defaults)
        fwd = self.fwd if self.fwd is not None else vs.fwd
        port = vport if fwd in (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_TUNNEL) or self.port is None \
            else self.port
        notify = {k: resolve_script(p, s.args, s, k) for k, s in self.notify.items()}
        checks = []
        for c, s in self.checks:
            try:
                checks.append(c.finish(p, d, self.addr, port, s))
            except _Bad as e:
                p.error(s, str(e))
        if self.l_thr > self.u_thr:
            p.error(self.s, model.E_ERANGE)
        return RealServer(self.addr, port, vs.weight if self.weight is None else self.weight,
                          fwd, bool(d.inhibit), bool(d.alpha), self.u_thr, self.l_thr,
                          notify.get("notify_up"), notify.get("notify_down"), tuple(checks))


def resolve_script(p, args, s, what, user=None):
    """A Script of a command line (a quoted string is split as keepalived's
    alloc_strvec_quoted splits it: on blanks, quotes kept together)."""
    try:
        argv = tuple(shlex.split(" ".join(args)))
    except ValueError as e:
        p.error(s, f"{what}: {e}")
        return None
    if not argv:
        p.error(s, f"No script path has been specified for {what}")
        return None
    uid, gid = user or p.cfg.script_user or default_script_user()
    return Script(argv, uid, gid, s.where)


def default_script_user():
    """keepalived's default: the user keepalived_script if it exists, else
    the daemon's own user."""
    try:
        pw = pwd.getpwnam("keepalived_script")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return os.getuid(), os.getgid()


class CheckDraft:
    """A checker block while it is read."""

    def __init__(self, kind):
        self.kind = kind
        self.defaults = Defaults()
        self.v = {}
        self.urls = []
        self.misc = None
        self.user = None

    def handlers(self, p):
        d = self.defaults.handlers("checker")
        h = {k: d[k] for k in ("retry", "delay_before_retry", "delay_loop", "alpha")}
        if self.kind != "MISC_CHECK":
            h["connect_timeout"] = lambda s: self.set("connect_timeout", _timer(
                s, "connect_timeout {} invalid - ignoring"))
            h["connect_ip"] = lambda s: self.set("addr", _address(
                s.args[0] if s.args else "", f"Invalid connect_ip address {' '.join(s.args)}"
                " - ignoring"))
            h["connect_port"] = lambda s: self.set("port", _uint(
                s, 1, 65535, "Invalid checker connect_port '{}'"))
            h["bindto"] = lambda s: self.set("bindto", _address(
                s.args[0] if s.args else "", f"Invalid bindto address {' '.join(s.args)}"
                " - ignoring"))
            h["bind_port"] = lambda s: self.set("bind_port", _uint(
                s, 1, 65535, "Invalid checker bind_port '{}'"))
        if self.kind in ("HTTP_GET", "SSL_GET"):
            h["nb_get_retry"] = d["retry"]
            h["url"] = lambda s: self.url(p, s)
            h["virtualhost"] = lambda s: self.set("virtualhost", self.host(s))
        if self.kind == "MISC_CHECK":
            h["misc_path"] = lambda s: setattr(self, "misc", (s.args, s))
            h["misc_timeout"] = lambda s: self.set("misc_timeout", float(_uint(
                s, 0, 2**32 - 1, "Invalid misc_timeout value '{}'")))
            h["misc_dynamic"] = lambda s: self.set("misc_dynamic", True)
            h["user"] = lambda s: setattr(self, "user", user_ids(s.args, "misc checker script"))
        if self.kind == "UDP_CHECK":
            h["payload"] = lambda s: self.set("payload", _hex(s, "UDP_CHECK payload"))
            h["require_reply"] = lambda s: self.set(
                "require_reply", _hex(s, "UDP_CHECK reply") if s.args else b"")
            h["min_reply_length"] = lambda s: self.set("min_reply_length", _uint(
                s, 0, 65535, "UDP_CHECK min length {} not valid - must be between 0 & 65535"))
            h["max_reply_length"] = lambda s: self.set("max_reply_length", _uint(
                s, 0, 65535, "UDP_CHECK max length {} not valid - must be between 0 & 65535"))
        return h

    def set(self, k, v):
        self.v[k] = v

    @staticmethod
    def host(s):
        if not s.args:
            raise _Bad("HTTP_GET virtualhost name missing")
        return s.args[0]

    def url(self, p, s):
        u = {"path": None, "digests": [], "status_codes": [], "virtualhost": None}

        def digest(sub):
            d = (sub.args[0] if sub.args else "").lower()
            if len(d) != 32:
                raise _Bad(f"digest '{d}' character length should be 32 rather than {len(d)}")
            if not re.fullmatch(r"[0-9a-f]{32}", d):
                raise _Bad(f"Unable to interpret hex digit in '{d}'")
            u["digests"].append(d)

        def status(sub):
            for a in sub.args:
                m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", a)
                if not m or not 100 <= int(m[1]) <= int(m[2] or m[1]) <= 599:
                    raise _Bad(f"Invalid HTTP_GET status code '{a}'")
                u["status_codes"].append((int(m[1]), int(m[2] or m[1])))

        p.each(s, {"path": lambda sub: u.update(path=sub.args[0] if sub.args else None),
                        "digest": digest, "status_code": status,
                        "virtualhost": lambda sub: u.update(virtualhost=self.host(sub))})
        if u["path"] is None:
            raise _Bad("HTTP/SSL_GET checker url has no path - ignoring")
        self.urls.append(Url(u["path"], tuple(u["digests"]), tuple(u["status_codes"]),
                             u["virtualhost"]))

    def finish(self, p, d, addr, port, s):
        d = self.defaults.over(d)
        if self.kind in ("HTTP_GET", "SSL_GET") and not self.urls:
            raise _Bad("HTTP/SSL_GET checker has no urls specified - ignoring")
        default_retry = 0 if self.kind == "MISC_CHECK" else 1
        default_dbr = 3.0 if self.kind in ("HTTP_GET", "SSL_GET") else 1.0
        script = None
        if self.kind == "MISC_CHECK":
            if self.misc is None:
                raise _Bad("No script path has been specified for MISC_CHECKER - skipping")
            script = resolve_script(p, self.misc[0], self.misc[1], "MISC_CHECK", self.user)
        v = dict(self.v)
        return Check(self.kind, v.pop("addr", addr), v.pop("port", port),
                     v.pop("connect_timeout", d.connect_timeout),
                     d.retry if d.retry is not None else default_retry,
                     d.delay_before_retry if d.delay_before_retry is not None else default_dbr,
                     d.delay_loop, bool(d.alpha), urls=tuple(self.urls), script=script,
                     virtualhost=v.pop("virtualhost", d.virtualhost), **v)


def _hex(s, what):
    text = "".join(s.args)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Bad(f"Invalid hex string for {what}") from None
