"""xdplbadm's command line without a state: popt's parsing, ipvsadm's option
matrix and argument checks, byte for byte (the texts and exit codes of
ipvsadm 1.31). Every command here is refused, or answered, before the state
is opened: opening it fails the test (no_state). The commands that need a
state are tests/test_adm.py's (root tier)."""
import contextlib
import io
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xdplb import adm, ipvsopts
from xdplb.model import XdplbError

PROG = "xdplbadm"
TRY = f"Try `{PROG} -h' or '{PROG} --help' for more information.\n"


@pytest.fixture
def no_state(monkeypatch):
    def refuse(self, create=False):
        raise AssertionError("a command-line error reached the state")
    monkeypatch.setattr(adm.Ctx, "control", refuse)


def xdplbadm(capsys, *args):
    """(exit code, stdout, stderr) of one command line."""
    code = adm.run([PROG, *args])
    out, err = capsys.readouterr()
    return code, out, err


# (args, exit code, stderr)
COMMAND_LINE_ERRORS = [
    # popt
    (["--foo"], 255, TRY),
    (["-t", "10.0.0.1:80"], 255, TRY),
    (["-L", "--foo"], 255, "--foo: unknown option\n"),
    (["-L", "-q"], 255, "-q: unknown option\n"),
    (["-A", "-t"], 255, "-t: missing argument\n"),
    (["-L", "--stats=1"], 255, "--stats=1: option does not take an argument\n"),
    (["-A", "-t", "10.0.0.1:80", "-A"], 2, "invalid option `-A'\n"),
    (["-Ln", "-L"], 2, "invalid option `-L'\n"),
    (["-A", "-t", "10.9.0.1:80", "-s", "rr", "foo"], 2, "unexpected argument foo\n"),
    # option matrix
    (["-A", "-t", "10.9.0.1:80", "-u", "10.9.0.1:80"], 2,
     "multiple 'service-address' options specified\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "1.1.1.1", "-m", "-g"], 2,
     "multiple 'forwarding-method' options specified\n"),
    (["-A", "-s", "rr"], 2,
     "You need to supply the 'service-address' option for the 'add-service' command\n"),
    (["-a", "-t", "10.0.0.1:80"], 2,
     "You need to supply the 'real-server' option for the 'add-server' command\n"),
    (["-A", "-t", "10.9.0.1:80", "-r", "1.1.1.1"], 2,
     "Illegal 'real-server' option with the 'add-service' command\n"),
    (["-D", "-t", "10.0.0.1:80", "-s", "rr"], 2,
     "Illegal 'scheduler' option with the 'delete-service' command\n"),
    (["-C", "-n"], 2, "Illegal 'numeric' option with the 'flush' command\n"),
    (["-S", "-c"], 2, "Illegal 'connection' option with the 'save' command\n"),
    (["-Z", "-n"], 2, "Illegal 'numeric' option with the 'zero' command\n"),
    (["-L", "-c", "-t", "10.0.0.1:80"], 2,
     "The option 'service-address' conflicts with the 'connection' option in the 'list' command\n"),
    (["-L", "--timeout", "--daemon"], 2,
     "The option 'daemon' conflicts with the 'timeout' option in the 'list' command\n"),
    (["-L", "-c", "--stats"], 2, "options conflicts in the list command\n"),
    (["-L", "--timeout", "--persistent-conn"], 2, "options conflicts in the list command\n"),
    # argument parsing
    (["-A", "-t", "1234", "-s", "rr"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "10.9.0.1:", "-s", "rr"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "10.9.0.1:70000", "-s", "rr"], 2,
     "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "[2001:db8::1]", "-s", "rr"], 2,
     "illegal virtual server address[:port] specified\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9:nosuchport", "-m"], 2,
     "illegal real server address[:port] specified\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-w", "2147483648"], 2, "illegal weight specified\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-x", "-1"], 2, "illegal u_threshold specified\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-y", "x"], 2, "illegal l_threshold specified\n"),
    (["-A", "-t", "10.9.0.1:80", "-p", "0"], 2, "invalid timeout value `0' specified\n"),
    (["-A", "-t", "10.9.0.1:80", "-p", "2678401"], 2, "invalid timeout value `2678401' specified\n"),
    (["-A", "-t", "10.9.0.1:80", "-M", "x.y"], 2,
     "illegal virtual server persistent mask specified\n"),
    (["-A", "-t", "10.9.0.1:0", "-s", "rr"], 2, "Zero port specified for non-persistent service\n"),
    (["-A", "-t", "10.9.0.1:80", "-s", "rr", "-o"], 2,
     "One-Packet Scheduling is only for UDP virtual services\n"),
    (["-A", "-6", "-f", "1"], 2, "-6 used before -f\n\n"),
    (["-A", "-f", "0"], 2, "invalid fwmark value `0' specified\n"),
    (["-A", "-t", "10.9.0.1:80", "-b", "foo"], 2, "invalid scheduler flag `foo'\n"),
    (["-A", "-t", "10.9.0.1:80", "-s", "rr", "-b", "sh-port"], 2,
     "incompatible scheduler flag `sh-port'\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "[2001:db8::2]:80", "-m"], 2,
     "Different address family is allowed only for tunneling servers\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "--tun-type", "gue"], 2,
     "Tunnel options conflict with forward method\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-i", "--tun-type", "gue"], 2,
     "You need to supply the 'tun-port' option for the 'gue' tunnel type\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-i", "--tun-type", "foo"], 2,
     "illegal tunnel type specified\n"),
    (["--set", "1", "2"], 2, "--set option requires 3 timeout values\n"),
    (["--set", "1", "2", "x"], 2, "invalid timeout value `x' specified\n"),
    (["--start-daemon", "foo"], 2, "illegal start-daemon parameter specified\n"),
    (["--stop-daemon", "foo"], 2, "illegal start_daemon specified\n"),
]


@pytest.mark.parametrize("args,code,err", COMMAND_LINE_ERRORS,
                         ids=[" ".join(args) for args, _, _ in COMMAND_LINE_ERRORS])
def test_command_line_errors(no_state, capsys, args, code, err):
    assert xdplbadm(capsys, *args) == (code, "", err)


def test_help_and_version(no_state, capsys):
    code, out, err = xdplbadm(capsys, "-h")
    assert code == 0 and out.startswith("Usage:\n  xdplbadm -A|E virtual-service") and err == ""
    assert xdplbadm(capsys, "-v") == (
        0, "xdplbadm v0.1.0 2026/11/21 (compiled with popt and IPVS v1.2.1)\n", "")
    assert xdplbadm(capsys, "--version")[0] == 0


def checked(*args):
    return ipvsopts.checked([PROG, *args], PROG)


def test_option_forms():
    """popt: bundled short options, attached arguments, long options with '='."""
    ce = checked("-At10.9.0.1:80", "-srr")
    assert (ce.cmd, ce.svc.proto, ce.svc.addr, ce.svc.port, ce.sched) == (
        ipvsopts.CMD_ADD, ipvsopts.IPPROTO_TCP, "10.9.0.1", 80, "rr")
    ce = checked("--add-server", "--tcp-service=10.9.0.1:80", "--real-server", "10.9.1.1:8080",
                 "--masquerading", "--weight=4")
    assert (ce.cmd, ce.dest.addr, ce.dest.port, ce.fwd, ce.weight) == (
        ipvsopts.CMD_ADDDEST, "10.9.1.1", 8080, ipvsopts.IP_VS_CONN_F_MASQ, 4)
    ce = checked("-Ln", "--stats", "--exact")
    assert ce.cmd == ipvsopts.CMD_LIST
    assert ce.fmt == ipvsopts.F.FMT_NUMERIC | ipvsopts.F.FMT_STATS | ipvsopts.F.FMT_EXACT


def test_direct_routing_forces_the_service_port():
    assert checked("-a", "-t", "10.9.0.1:80", "-r", "10.9.1.1:8080").dest.port == 80
    assert checked("-a", "-t", "10.9.0.1:80", "-r", "10.9.1.1:8080", "-m").dest.port == 8080
    assert checked("-a", "-t", "10.9.0.1:80", "-r", "10.9.1.1", "-m").dest.port == 80


# --- the -R fast path against the full parser --------------------------------------

_QUAD = st.tuples(*[st.integers(0, 255)] * 4).map(lambda o: "%d.%d.%d.%d" % o)
_PORT = st.integers(0, 65536)
_VIP = st.tuples(_QUAD, _PORT).map(lambda t: "%s:%d" % t)
_RIP = _QUAD | st.tuples(_QUAD, _PORT).map(lambda t: "%s:%d" % t)
_WEIGHT = st.integers(0, 2**32).map(str)
_SERVICE = st.tuples(st.sampled_from(["-t", "-u"]), _VIP, st.sampled_from(
    [(), ("-s", "rr"), ("-s", "wrr"), ("-s", "mh"), ("-s", "averyveryverylongname")])).map(
    lambda t: ["-A", t[0], t[1], *t[2]])
_SERVER_OPTIONS = st.tuples(_RIP, st.sampled_from([(), ("-g",), ("-m",), ("-i",)]),
                            st.none() | _WEIGHT).flatmap(lambda t: st.permutations(
                                [("-r", t[0])] + ([t[1]] if t[1] else [])
                                + ([("-w", t[2])] if t[2] is not None else [])))
_SERVER = st.tuples(st.sampled_from(["-t", "-u"]), _VIP, _SERVER_OPTIONS).map(
    lambda t: ["-a", t[0], t[1], *(tok for opt in t[2] for tok in opt)])
# one token replaced or added: what the fast path must leave to the full parser
_ODD = st.sampled_from(["-r", "-g", "-m", "-w", "-s", "-f", "-6", "-x", "--weight=3", "", "foo",
                        "010.0.0.1", "1.2.3", "0x7f.0.0.1", "1.2.3.4:", "1.2.3.4:http",
                        "1.2.3.4:0", "1.2.3.4:65536", "+5", "-1", "1_0", "\u0663", "007"])
_EDIT = st.none() | st.tuples(st.integers(0, 7), st.booleans(), _ODD)


def _edited(line, edit):
    if edit is None:
        return line
    i, insert, tok = edit
    i %= len(line) + insert
    return line[:i] + [tok] + line[i + (not insert):]


# as a line of -R input: words apart by one space (or other blanks), an end
_SPACING = st.sampled_from([" ", " ", " ", "  ", "\t", "\x0b"])
_END = st.sampled_from(["\n", "", " \n", "\r\n", "\x0b\n", "\x0c"])
_LINE = st.builds(lambda toks, sep, end: sep.join(toks) + end,
                  st.builds(_edited, _SERVICE | _SERVER, _EDIT), _SPACING, _END)
# what -S -n writes: the fast path's business
_SAVED = st.one_of(
    st.builds(lambda p, q, vp, s: f"-A {p} {q}:{vp} -s {s}\n", st.sampled_from(["-t", "-u"]),
              _QUAD, st.integers(1, 65535), st.sampled_from(["rr", "wlc", "nosuch"])),
    st.builds(lambda p, q, vp, r, rp, f, w: f"-a {p} {q}:{vp} -r {r}:{rp} {f} -w {w}\n",
              st.sampled_from(["-t", "-u"]), _QUAD, st.integers(1, 65535), _QUAD,
              st.integers(0, 65535), st.sampled_from(["-m", "-g"]),
              st.integers(0, ipvsopts.INT_MAX)))


def full(line):
    """The operation (or refusal) popt and process_options' checks make of an
    -R line, as restore_table splits it; None when they refuse the line."""
    toks = [t for t in re.split(r"[ \t\r\n]+", line) if t and t not in ("ipvsadm", "xdplbadm")]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            ce = checked(*toks)
        except ipvsopts.Exit:
            return None
    return None if ce is None else adm._op_or_refusal(ce)


def same(a, b):
    if isinstance(a, XdplbError) or isinstance(b, XdplbError):
        return type(a) is type(b) and (a.message, a.code) == (b.message, b.code)
    return a == b


@settings(max_examples=1500, database=None, deadline=None)
@given(_LINE | _SAVED.flatmap(lambda text: st.builds(
    lambda sep, end: text.rstrip("\n").replace(" ", sep) + end, _SPACING, _END)))
@example("-A -t 10.0.0.1:80\x0b\n")
@example("-a -t 10.0.0.1:80 -r 10.1.0.1 -g -w 2147483648\n")
def test_fast_restore_lines_parse_as_the_full_parser(text):
    """adm._fast_op (the usual -R lines, without popt) answers either nothing
    or exactly the operation (or refusal) the full parser leads to."""
    fast = adm._fast_op(text)
    if fast is None:
        return
    slow = full(text)
    assert slow is not None, f"{text!r}: the full parser refuses it"
    assert same(fast, slow), text


@settings(max_examples=300, database=None, deadline=None)
@given(_SAVED)
def test_fast_restore_takes_what_save_writes(text):
    """-S -n's lines never need popt."""
    fast = adm._fast_op(text)
    assert fast is not None and same(fast, full(text))
