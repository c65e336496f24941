"""ipvsadm 1.31's command line: its commands and options, the option matrix,
its parsing functions and the checks process_options() makes, with ipvsadm's
messages and exit codes (fail(): 2; tryhelp_exit(): 255). xdplb/adm.py runs
the commands.
"""
import re
import socket
import sys

from . import ipvsfmt as F
from .ipvshelp import USAGE, version_text
from .model import (AF_INET, AF_INET6, DEF_SCHED, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
                    IPVS_SVC_PERSISTENT_TIMEOUT, MAX_TIMEOUT)
from .popt import NONE, OPT, REQ, Popt, PoptError
from .structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL,
                      IP_VS_CONN_F_TUNNEL_TYPE_GRE, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                      IP_VS_CONN_F_TUNNEL_TYPE_IPIP, IP_VS_SVC_F_ONEPACKET,
                      IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2,
                      IP_VS_SVC_F_SCHED3, IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
                      IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM, IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
                      XDPLB_CONN_F_FULLNAT, XDPLB_SVC_F_HAIRPIN)

# Debian 12's ipvsadm (1:1.31-1) takes -w, -x and -y up to INT_MAX (docs/ipvs-behaviour.md).
INT_MAX = 2147483647

# --- commands and options (ipvsadm.c 1.31) -------------------------------------

(CMD_ADD, CMD_EDIT, CMD_DEL, CMD_FLUSH, CMD_LIST, CMD_ADDDEST, CMD_DELDEST, CMD_EDITDEST,
 CMD_TIMEOUT, CMD_STARTDAEMON, CMD_STOPDAEMON, CMD_RESTORE, CMD_SAVE, CMD_ZERO) = range(1, 15)
# DPVS's ipvsadm numbers its local-address commands on after ipvsadm's.
CMD_ADDLADDR, CMD_DELLADDR, CMD_GETLADDR = range(15, 18)
CMDNAMES = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server",
            "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore",
            "save", "zero", "add-laddr", "del-laddr", "get-laddr")

OPTNAMES = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
            "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
            "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
            "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
            "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
            "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
            # xdplb's: DPVS's names for -z and -F, then --hairpin
            "local-address", "ifname", "hairpin")
O = {name: i for i, name in enumerate(OPTNAMES)}

# commands_v_options, verbatim (rows in command order, columns in OPTNAMES
# order), then xdplb's columns (-z, -F, --hairpin) and DPVS's three rows
MATRIX = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx" "xx ",   # ADD
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx" "xx ",   # EDIT
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # DEL
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # FLUSH
    " 11xxxxxxxxx11       xxxxxxx xxxxx" "xxx",   # LIST
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     " "xxx",   # ADDSRV
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # DELSRV
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     " "xxx",   # EDITSRV
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # TIMEOUT
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx" "xxx",   # STARTD
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx" "xxx",   # STOPD
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # RESTORE
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # SAVE
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # ZERO
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "+ x",   # ADDLADDR (DPVS: -F compulsory)
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "+xx",   # DELLADDR (DPVS: -F compulsory)
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "xxx",   # GETLADDR
)
assert all(len(r) == len(OPTNAMES) for r in MATRIX)

# long name, short, argument, tag
TABLE = (
    ("add-service", "A", NONE, "A"), ("edit-service", "E", NONE, "E"),
    ("delete-service", "D", NONE, "D"), ("clear", "C", NONE, "C"), ("list", "L", NONE, "L"),
    (None, "l", NONE, "l"), ("zero", "Z", NONE, "Z"), ("add-server", "a", NONE, "a"),
    ("edit-server", "e", NONE, "e"), ("delete-server", "d", NONE, "d"),
    ("set", None, NONE, "set"), ("help", "h", NONE, "h"), ("version", "v", NONE, "v"),
    ("restore", "R", NONE, "R"), ("save", "S", NONE, "S"),
    ("start-daemon", None, REQ, "start-daemon"), ("stop-daemon", None, REQ, "stop-daemon"),
    ("tcp-service", "t", REQ, "t"), ("udp-service", "u", REQ, "u"),
    ("sctp-service", None, REQ, "sctp"), ("fwmark-service", "f", REQ, "f"),
    ("scheduler", "s", REQ, "s"), ("persistent", "p", OPT, "p"), ("netmask", "M", REQ, "M"),
    ("real-server", "r", REQ, "r"), ("masquerading", "m", NONE, "m"), ("ipip", "i", NONE, "i"),
    ("gatewaying", "g", NONE, "g"), ("weight", "w", REQ, "w"), ("u-threshold", "x", REQ, "x"),
    ("l-threshold", "y", REQ, "y"), ("numeric", "n", NONE, "n"), ("connection", "c", NONE, "c"),
    ("mcast-interface", None, REQ, "mcast-interface"), ("syncid", None, REQ, "syncid"),
    ("timeout", None, NONE, "timeout"), ("daemon", None, NONE, "daemon"),
    ("stats", None, NONE, "stats"), ("rate", None, NONE, "rate"),
    ("thresholds", None, NONE, "thresholds"), ("persistent-conn", None, NONE, "persistent-conn"),
    ("nosort", None, NONE, "nosort"), ("sort", None, NONE, "sort"), ("exact", "X", NONE, "X"),
    ("ipv6", "6", NONE, "6"), ("ops", "o", NONE, "o"), ("pe", None, REQ, "pe"),
    ("sched-flags", "b", REQ, "b"), ("mcast-group", None, REQ, "mcast-group"),
    ("mcast-port", None, REQ, "mcast-port"), ("mcast-ttl", None, REQ, "mcast-ttl"),
    ("sync-maxlen", None, REQ, "sync-maxlen"), ("tun-info", None, NONE, "tun-info"),
    ("tun-type", None, REQ, "tun-type"), ("tun-port", None, REQ, "tun-port"),
    ("tun-nocsum", None, NONE, "tun-nocsum"), ("tun-csum", None, NONE, "tun-csum"),
    ("tun-remcsum", None, NONE, "tun-remcsum"),
    # xdplb's own: DPVS's local-address commands and options (its -b for
    # full-NAT would be ipvsadm's --sched-flags: --fullnat has no short form)
    ("add-laddr", "P", NONE, "P"), ("del-laddr", "Q", NONE, "Q"), ("get-laddr", "G", NONE, "G"),
    ("laddr", "z", REQ, "z"), ("ifname", "F", REQ, "F"), ("fullnat", None, NONE, "fullnat"),
    ("hairpin", None, NONE, "hairpin"),
)
LONG = {t[0]: t for t in TABLE if t[0]}
SHORT = {t[1]: t for t in TABLE if t[1]}
FIRST = {"A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST,
         "d": CMD_DELDEST, "C": CMD_FLUSH, "L": CMD_LIST, "l": CMD_LIST, "Z": CMD_ZERO,
         "set": CMD_TIMEOUT, "R": CMD_RESTORE, "S": CMD_SAVE, "start-daemon": CMD_STARTDAEMON,
         "stop-daemon": CMD_STOPDAEMON, "P": CMD_ADDLADDR, "Q": CMD_DELLADDR,
         "G": CMD_GETLADDR}

class Exit(Exception):
    """Leave the program with this status (ipvsadm's exit() calls)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


# --- helpers (ipvsadm's parsing functions) -------------------------------------------

def fail(msg, code=2):
    sys.stdout.flush()
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    raise Exit(code)


def tryhelp_exit(prog, code=255):
    sys.stdout.flush()
    sys.stderr.write(f"Try `{prog} -h' or '{prog} --help' for more information.\n")
    raise Exit(code)


_NUM = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+")


def string_to_number(s, lo, hi):
    if s is None or not _NUM.fullmatch(s):
        return -1
    n = int(s)
    return n if lo <= n <= hi else -1


def _inet_aton(s):
    try:
        return socket.inet_aton(s)
    except (OSError, ValueError, UnicodeError):
        return None


def host_to_addr(name):
    try:
        return socket.inet_aton(socket.gethostbyname(name))
    except (OSError, UnicodeError, ValueError):
        return None


def service_to_port(name, proto):
    pname = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if not pname:
        return -1
    try:
        return socket.getservbyname(name, pname)
    except (OSError, UnicodeError):
        return -1


class Addr:
    """Mutable copy of the address part of an ipvs_service_t."""

    def __init__(self, af=0, addr=None, port=0, proto=0, netmask=None):
        self.af, self.addr, self.port, self.proto, self.netmask = af, addr, port, proto, netmask


def parse_service(buf, svc):
    """1 = address set, 3 = address and port set, 0 = invalid (svc updated in place)."""
    if buf is None or all(ch.isdigit() for ch in buf):
        return 0
    portp = None
    if buf.startswith("["):
        inner, sep, rest = buf[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return 0
        buf, portp = inner, rest[1:]
    try:
        raw = socket.inet_pton(socket.AF_INET6, buf)   # (written as inet_ntop would)
        svc.addr, svc.af, svc.netmask = socket.inet_ntop(socket.AF_INET6, raw), AF_INET6, 128
    except (OSError, ValueError, UnicodeError):
        host, sep, port = buf.rpartition(":")
        if sep:
            buf, portp = host, port
        else:
            portp = None
        b = _inet_aton(buf) or host_to_addr(buf)
        if b is None:
            return 0
        svc.addr, svc.af = socket.inet_ntoa(b), AF_INET
    if portp is None:
        return 1
    n = string_to_number(portp, 0, 65535)
    if n == -1:
        n = service_to_port(portp, svc.proto)
    if n == -1:
        return 0
    svc.port = n
    return 3


def parse_timeout(buf, lo, hi):
    if buf is None:
        return IPVS_SVC_PERSISTENT_TIMEOUT
    n = string_to_number(buf, lo, hi)
    if n == -1:
        fail(f"invalid timeout value `{buf}' specified")
    return n


SCHED_FLAG_BITS = {"flag-1": IP_VS_SVC_F_SCHED1, "flag-2": IP_VS_SVC_F_SCHED2,
                   "flag-3": IP_VS_SVC_F_SCHED3, "sh-fallback": IP_VS_SVC_F_SCHED1,
                   "sh-port": IP_VS_SVC_F_SCHED2, "mh-fallback": IP_VS_SVC_F_SCHED1,
                   "mh-port": IP_VS_SVC_F_SCHED2}


def parse_sched_flags(sched, arg):
    sched = sched or DEF_SCHED
    flags = 0
    for flag in [f for f in arg.split(",") if f] or [arg]:
        if flag not in SCHED_FLAG_BITS:
            fail(f"invalid scheduler flag `{flag}'")
        flags |= SCHED_FLAG_BITS[flag]
        for pre in ("sh", "mh"):
            if flag.startswith(pre + "-") and sched != pre:
                fail(f"incompatible scheduler flag `{flag}'")
    return flags


class Cmd:
    def __init__(self):
        self.cmd = 0
        self.svc = Addr(netmask="255.255.255.255")
        self.fwmark = 0
        self.sched = ""
        self.flags = 0
        self.timeout = 0
        self.pe = ""
        self.dest = Addr()
        self.fwd = IP_VS_CONN_F_DROUTE
        self.weight = 1
        self.u_thr = self.l_thr = 0
        self.tun_type = "ipip"
        self.tun_port = 0
        self.tun_flags = IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM
        self.options = set()
        self.fmt = 0
        self.timeouts = [0, 0, 0]
        self.laddr = None       # -z (text, in its own family)
        self.ifname = None      # -F


def set_option(ce, col):
    if col in ce.options:
        fail(f"multiple '{OPTNAMES[col]}' options specified")
    ce.options.add(col)


def parse_options(argv, ce, prog):
    ctx = Popt(argv, SHORT, LONG)
    try:
        first = ctx.get()
    except PoptError:
        first = None
    if first is None:
        tryhelp_exit(prog)
    tag, arg = first
    if tag == "h":
        sys.stdout.write(USAGE.format(p=prog))
        raise Exit(0)
    if tag == "v":
        sys.stdout.write(version_text())
        raise Exit(0)
    if tag not in FIRST:
        tryhelp_exit(prog)
    ce.cmd = FIRST[tag]
    if tag in ("start-daemon", "stop-daemon") and arg not in ("master", "backup"):
        fail("illegal start-daemon parameter specified" if tag == "start-daemon"
             else "illegal start_daemon specified")
    sched_flags_arg = None
    while True:
        try:
            got = ctx.get()
        except PoptError as e:
            sys.stdout.flush()
            sys.stderr.write(f"{e.bad}: {e.text}\n")
            return -1
        if got is None:
            break
        tag, arg = got
        if tag in ("t", "u", "sctp"):
            set_option(ce, O["service-address"])
            ce.svc.proto = {"t": IPPROTO_TCP, "u": IPPROTO_UDP, "sctp": IPPROTO_SCTP}[tag]
            if not parse_service(arg, ce.svc) & 1:
                fail("illegal virtual server address[:port] specified")
        elif tag == "f":
            set_option(ce, O["service-address"])
            ce.svc.af, ce.svc.proto = AF_INET, IPPROTO_TCP
            n = string_to_number(arg, 1, 0xffffffff)
            if n == -1 or n <= 0:
                fail(f"invalid fwmark value `{arg}' specified")
            ce.fwmark = n
        elif tag == "s":
            set_option(ce, O["scheduler"])
            ce.sched = arg[:15]
        elif tag == "p":
            set_option(ce, O["persistent"])
            ce.flags |= IP_VS_SVC_F_PERSISTENT
            ce.timeout = parse_timeout(arg, 1, MAX_TIMEOUT)
        elif tag == "M":
            set_option(ce, O["netmask"])
            if ce.svc.af != AF_INET6:
                b = _inet_aton(arg) or host_to_addr(arg)
                if b is None:
                    fail("illegal virtual server persistent mask specified")
                ce.svc.netmask = socket.inet_ntoa(b)
            else:
                m = re.match(r"\s*[+-]?\d+", arg)
                n = int(m.group()) if m else 0
                if n < 1 or n > 128:
                    fail("illegal ipv6 netmask specified")
                ce.svc.netmask = n
        elif tag == "r":
            set_option(ce, O["real-server"])
            t = Addr(ce.svc.af, ce.svc.addr, ce.svc.port, ce.svc.proto, ce.svc.netmask)
            parse = parse_service(arg, t)
            ce.dest.af, ce.dest.addr, ce.dest.port = t.af, t.addr, t.port
            if not parse & 1:
                fail("illegal real server address[:port] specified")
            if parse == 1:
                ce.dest.port = ce.svc.port
        elif tag in ("i", "g", "m"):
            set_option(ce, O["forwarding-method"])
            ce.fwd = {"i": IP_VS_CONN_F_TUNNEL, "g": IP_VS_CONN_F_DROUTE,
                      "m": IP_VS_CONN_F_MASQ}[tag]
        elif tag == "w":
            set_option(ce, O["weight"])
            ce.weight = string_to_number(arg, 0, INT_MAX)
            if ce.weight == -1:
                fail("illegal weight specified")
        elif tag == "x":
            set_option(ce, O["u-threshold"])
            ce.u_thr = string_to_number(arg, 0, INT_MAX)
            if ce.u_thr == -1:
                fail("illegal u_threshold specified")
        elif tag == "y":
            set_option(ce, O["l-threshold"])
            ce.l_thr = string_to_number(arg, 0, INT_MAX)
            if ce.l_thr == -1:
                fail("illegal l_threshold specified")
        elif tag == "c":
            set_option(ce, O["connection"])
        elif tag == "n":
            set_option(ce, O["numeric"])
            ce.fmt |= F.FMT_NUMERIC
        elif tag == "mcast-interface":
            set_option(ce, O["mcast-interface"])
        elif tag == "syncid":
            set_option(ce, O["syncid"])
            if string_to_number(arg, 0, 255) == -1:
                fail("illegal syncid specified")
        elif tag in ("timeout", "daemon"):
            set_option(ce, O[tag])
        elif tag in ("stats", "rate", "thresholds", "persistent-conn", "nosort", "tun-info"):
            set_option(ce, O[tag])
            ce.fmt |= {"stats": F.FMT_STATS, "rate": F.FMT_RATE,
                       "thresholds": F.FMT_THRESHOLDS, "persistent-conn": F.FMT_PERSISTENTCONN,
                       "nosort": F.FMT_NOSORT, "tun-info": F.FMT_TUN_INFO}[tag]
        elif tag == "sort":
            pass
        elif tag == "X":
            set_option(ce, O["exact"])
            ce.fmt |= F.FMT_EXACT
        elif tag == "6":
            if ce.fwmark:
                ce.svc.af, ce.svc.netmask = AF_INET6, 128
            else:
                fail("-6 used before -f\n")
        elif tag == "o":
            set_option(ce, O["ops"])
            ce.flags |= IP_VS_SVC_F_ONEPACKET
        elif tag == "pe":
            set_option(ce, O["pe"])
            ce.pe = arg[:15]
        elif tag == "b":
            set_option(ce, O["sched-flags"])
            sched_flags_arg = arg
        elif tag == "mcast-group":
            set_option(ce, O["mcast-group"])
        elif tag == "mcast-port":
            set_option(ce, O["mcast-port"])
            if string_to_number(arg, 1, 65535) == -1:
                fail("illegal mcast-port specified")
        elif tag == "mcast-ttl":
            set_option(ce, O["mcast-ttl"])
            if string_to_number(arg, 1, 255) == -1:
                fail("illegal mcast-ttl specified")
        elif tag == "sync-maxlen":
            set_option(ce, O["sync-maxlen"])
            if string_to_number(arg, 1, 65535 - 20 - 8) == -1:
                fail("illegal sync-maxlen specified")
        elif tag == "tun-type":
            set_option(ce, O["tun-type"])
            if arg not in ("ipip", "gue", "gre"):
                fail("illegal tunnel type specified")
            ce.tun_type = arg
        elif tag == "tun-port":
            set_option(ce, O["tun-port"])
            ce.tun_port = string_to_number(arg, 1, 65535)
            if ce.tun_port == -1:
                fail("illegal tunnel port specified")
        elif tag in ("tun-nocsum", "tun-csum", "tun-remcsum"):
            set_option(ce, O[tag])
            ce.tun_flags |= TUN_FLAG_IDS[tag]
        elif tag in XDPLB_TAGS:
            xdplb_option(ce, tag, arg)
        else:
            fail(f"invalid option `{ctx.bad()}'")

    if ce.cmd == CMD_TIMEOUT:
        if len(ctx.args) >= 3:
            ce.timeouts = [parse_timeout(a, 0, MAX_TIMEOUT) for a in ctx.args[:3]]
            ctx.args = ctx.args[3:]
        else:
            fail("--set option requires 3 timeout values")
    if ctx.args:
        fail(f"unexpected argument {ctx.args[0]}")
    if sched_flags_arg is not None:
        ce.flags &= ~(IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3)
        ce.flags |= parse_sched_flags(ce.sched, sched_flags_arg)
    return 0


XDPLB_TAGS = ("fullnat", "hairpin", "z", "F")


def xdplb_option(ce, tag, arg):
    """xdplb's own options (DPVS's -z and -F; --fullnat, --hairpin)."""
    if tag == "fullnat":
        set_option(ce, O["forwarding-method"])
        ce.fwd = XDPLB_CONN_F_FULLNAT
    elif tag == "hairpin":
        set_option(ce, O["hairpin"])
        ce.flags |= XDPLB_SVC_F_HAIRPIN
    elif tag == "z":
        set_option(ce, O["local-address"])
        t = Addr()     # parsed as DPVS parses it: a service address, any port ignored
        if not parse_service(arg, t) & 1:
            fail("illegal local address")
        ce.laddr = t.addr
    else:
        set_option(ce, O["ifname"])
        ce.ifname = arg


def generic_opt_check(cmd, options):
    row = MATRIX[cmd - 1]
    name = CMDNAMES[cmd - 1]
    last = None
    for j, kind in enumerate(row):
        if j not in options:
            if kind == "+":
                fail(f"You need to supply the '{OPTNAMES[j]}' option for the '{name}' command")
        else:
            if kind == "x":
                fail(f"Illegal '{OPTNAMES[j]}' option with the '{name}' command")
            if kind == "1":
                if last is None:
                    last = j
                    continue
                fail(f"The option '{OPTNAMES[j]}' conflicts with the '{OPTNAMES[last]}' "
                     f"option in the '{name}' command")


TUN_OPTS = ("tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
TUN_TYPE_IDS = {"ipip": IP_VS_CONN_F_TUNNEL_TYPE_IPIP, "gue": IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                "gre": IP_VS_CONN_F_TUNNEL_TYPE_GRE}
TUN_FLAG_IDS = {"tun-nocsum": IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
                "tun-csum": IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
                "tun-remcsum": IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM}
# ipvsadm's tunnel_types_v_options: per tunnel type, its options in this
# order: '+' compulsory, 'x' illegal, '1' at most one of them, ' ' optional.
TUN_CHECKED = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
TUN_MATRIX = {"ipip": "xxxx", "gue": "+111", "gre": "x11x"}


def tunnel_check(ce):
    """process_options' tunnel checks: options only with -i, then
    tunnel_opt_check's walk of TUN_MATRIX (first failure wins)."""
    used = {n for n in TUN_OPTS if O[n] in ce.options}
    if not used:
        return
    if ce.fwd != IP_VS_CONN_F_TUNNEL:
        fail("Tunnel options conflict with forward method")
    last = None
    for n, kind in zip(TUN_CHECKED, TUN_MATRIX[ce.tun_type]):
        if n not in used:
            if kind == "+":
                fail(f"You need to supply the '{n}' option for the '{ce.tun_type}' tunnel type")
        elif kind == "x":
            fail(f"Illegal '{n}' option with the '{ce.tun_type}' tunnel type")
        elif kind == "1":
            if last is not None:
                fail(f"The option '{n}' conflicts with the '{last}' option in the "
                     f"'{ce.tun_type}' tunnel type")
            last = n


def checked(argv, prog):
    """process_options' parsing and checks: the command, or None after a popt
    error (printed). fail() raises Exit."""
    ce = Cmd()
    if parse_options(argv, ce, prog):
        return None
    generic_opt_check(ce.cmd, ce.options)
    if ce.cmd in (CMD_ADD, CMD_EDIT):
        if not ce.fwmark and not ce.svc.port and not ce.flags & IP_VS_SVC_F_PERSISTENT:
            fail("Zero port specified for non-persistent service")
        if ce.flags & IP_VS_SVC_F_ONEPACKET and not ce.fwmark and ce.svc.proto != IPPROTO_UDP:
            fail("One-Packet Scheduling is only for UDP virtual services")
        if not ce.sched:
            ce.sched = DEF_SCHED
    if ce.cmd in (CMD_ADDDEST, CMD_EDITDEST):
        if not ce.fwmark and ce.fwd in (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_DROUTE):
            ce.dest.port = ce.svc.port
        if ce.dest.af != ce.svc.af and ce.fwd != IP_VS_CONN_F_TUNNEL:
            fail("Different address family is allowed only for tunneling servers")
        tunnel_check(ce)
    o = ce.options
    if ce.cmd == CMD_LIST:
        if ((o & {O["connection"], O["timeout"], O["daemon"]}
             and o & {O["stats"], O["rate"], O["thresholds"]})
                or (o & {O["timeout"], O["daemon"]} and O["persistent-conn"] in o)):
            fail("options conflicts in the list command")
    return ce
