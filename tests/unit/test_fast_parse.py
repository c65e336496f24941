"""xdplbadm -R parses the usual lines (what -S -n writes) without popt
(adm._fast_op); whatever it accepts, the full parser (ipvsopts.checked,
then adm._op) must turn into the same operation (or refusal), and whatever
the full parser rejects, the fast one must leave to it. No root needed."""
import contextlib
import io
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xdplb import adm, ipvsopts
from xdplb.model import XdplbError


@pytest.fixture(autouse=True)
def no_lookups(monkeypatch):
    """Names never reach the resolver (both parsers see the same answers)."""
    monkeypatch.setattr(ipvsopts, "host_to_addr", lambda name: None)
    monkeypatch.setattr(ipvsopts, "service_to_port", lambda name, proto: -1)


def full(line):
    """The operation popt and process_options' checks make of an -R line (as
    restore_table splits it), or None when they refuse it (a message and an
    exit status)."""
    toks = [t for t in re.split(r"[ \t\r\n]+", line) if t and t not in ("ipvsadm", "xdplbadm")]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            ce = ipvsopts.checked(["xdplbadm", *toks], "xdplbadm")
    except ipvsopts.Exit:
        return None
    return None if ce is None else adm._op_or_refusal(ce)


def same(a, b):
    if isinstance(a, XdplbError) or isinstance(b, XdplbError):
        return type(a) is type(b) and (a.message, a.code) == (b.message, b.code)
    return a == b


octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["256", "300", "010", "00", "-1",
                                                                   "1e2", "", " 1"]))
port = st.one_of(st.integers(0, 65535).map(str), st.sampled_from(
    ["0", "65536", "99999", "080", "+80", " 80", "http", "", "8o", "123456"]))
quad = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", octet, octet, octet, octet)
addr = st.one_of(
    st.builds(lambda q, p: f"{q}:{p}", quad, port), quad,
    st.sampled_from(["[2001:db8::1]:80", "2001:db8::1", "localhost:80", "1.2.3:80", "1.2.3.4:",
                     ":80", "1.2.3.4:80:90", "1.2.3.4.5:80", "", "-m"]))
number = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(
    ["-1", "+5", "007", "00000001", "2147483647", "2147483648", "1e3", " 1", "abc", "", "-m"]))
option = st.one_of(
    st.tuples(st.just("-s"), st.sampled_from(["rr", "wrr", "wlc", "x" * 20, "", "-m", "--rr"])),
    st.tuples(st.just("-r"), addr), st.just(("-m",)), st.just(("-g",)), st.just(("-i",)),
    st.tuples(st.sampled_from(["-w", "-x", "-y", "-p"]), number),
    st.sampled_from([("-p",), ("-M", "255.255.255.0"), ("-b", "sh-port"), ("--weight=3",),
                     ("-n",), ("extra",), ("-t", "1.2.3.4:80"), ("--",), ("-w",), ("-r",)]))
spacing = st.sampled_from([" ", " ", " ", "  ", "\t", "\x0b", ""])
line = st.builds(
    lambda cmd, proto, a, opts, sep, end: sep.join([cmd, proto, a] + [t for o in opts for t in o])
    + end,
    st.sampled_from(["-A", "-a", "-E", "-e", "-d", "-D", "-L", "-Z", "--add-server", "-Ln"]),
    st.sampled_from(["-t", "-u", "-f", "--tcp-service", "-T", "-r"]), addr,
    st.lists(option, max_size=5), spacing, st.sampled_from(["\n", "", " \n", "\r\n", "\x0b\n"]))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(line, st.builds(lambda c, sep, end: c.rstrip("\n").replace(" ", sep) + end,
                                 st.deferred(lambda: canonical), spacing,
                                 st.sampled_from(["\n", "\x0b\n", "\x0c", " -m\n", ":"]))))
@example("-A -t 10.0.0.1:80\x0b\n")
@example("-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3\n")
@example("-a -t 10.0.0.1:80 -r 10.1.0.1 -g -w 65536\n")
@example("-A -u 10.0.0.1:53 -s rr\n")
@example("-A -u 10.0.0.1:53 -s nosuch\n")
def test_fast_parse_agrees_with_popt(text):
    fast = adm._fast_op(text)
    if fast is not None:
        slow = full(text)
        assert slow is not None, "the fast parser accepts what the full one refuses"
        assert same(fast, slow)


canonical = st.one_of(
    st.builds(lambda p, q, vp, s: f"-A {p} {q}:{vp} -s {s}\n", st.sampled_from(["-t", "-u"]),
              st.ip_addresses(v=4).map(str), st.integers(1, 65535), st.sampled_from(["rr", "wlc"])),
    st.builds(lambda p, q, vp, r, rp, f, w: f"-a {p} {q}:{vp} -r {r}:{rp} {f} -w {w}\n",
              st.sampled_from(["-t", "-u"]), st.ip_addresses(v=4).map(str),
              st.integers(1, 65535), st.ip_addresses(v=4).map(str), st.integers(0, 65535),
              st.sampled_from(["-m", "-g"]), st.integers(0, 65535)))


@settings(max_examples=500, deadline=None)
@given(canonical)
def test_fast_parse_takes_what_save_writes(text):
    """-S -n's lines never need popt (and mean what popt makes of them)."""
    fast = adm._fast_op(text)
    assert fast is not None
    assert same(fast, full(text))
