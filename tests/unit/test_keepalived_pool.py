"""keepalived's pool logic (xdplb/keepalived/pool.py), the diff the daemon
writes through the planner (sync.py, on the fake maps), the checkers'
schedule and probes (checkers.py, against servers on loopback)."""
import asyncio
import hashlib
import http.server
import socket
import threading

import pytest

from xdplb import ipvsfmt
from xdplb.control import Control
from xdplb.keepalived import checkers, conf, sync
from xdplb.keepalived.model import Check, Url
from xdplb.keepalived.pool import Pool

CONF = """
virtual_server 10.0.0.1 80 {
    lb_algo rr
    %(vs)s
    real_server 10.1.0.1 80 {
        weight 2
        TCP_CHECK { }
    }
    real_server 10.1.0.2 80 {
        inhibit_on_failure
        TCP_CHECK { }
        HTTP_GET { url { path / } }
    }
    real_server 10.1.0.3 8080 {
        %(rs3)s
    }
}
"""


def config(tmp_path, vs="", rs3=""):
    f = tmp_path / "k.conf"
    f.write_text(CONF % {"vs": vs, "rs3": rs3})
    return conf.parse(str(f))


def dests(pool):
    return pool.vs[0].destinations()


RS1, RS2, RS3 = ("10.1.0.1", 80), ("10.1.0.2", 80), ("10.1.0.3", 8080)


def test_removed_or_quiesced_and_back(tmp_path):
    notified = []
    pool = Pool(config(tmp_path, rs3="notify_down /bin/false\nMISC_CHECK { misc_path /x }"),
                on_notify=lambda script, rs: notified.append((script.argv, rs.addr)))
    assert dests(pool) == {RS1: 2, RS2: 1, RS3: 1}
    assert pool.report(0, RS1, 0, False) and dests(pool) == {RS2: 1, RS3: 1}   # removed
    assert pool.report(0, RS2, 1, False) and dests(pool) == {RS2: 0, RS3: 1}   # inhibit: weight 0
    assert not pool.report(0, RS2, 0, False)           # still down: one failing checker is enough
    assert not pool.report(0, RS2, 1, True)            # the TCP_CHECK still fails
    assert pool.report(0, RS2, 0, True) and dests(pool) == {RS2: 1, RS3: 1}
    assert not pool.report(0, RS3, 0, False, final=False)   # a retry is only counted
    assert pool.report(0, RS3, 0, False) and notified == [(("/bin/false",), "10.1.0.3")]
    assert pool.report(0, RS1, 0, True) and dests(pool) == {RS1: 2, RS2: 1}
    counts = {c["real_server"]: c for c in pool.counts()}
    assert {k: (c["up_transitions"], c["down_transitions"], c["checks"], c["check_failures"])
            for k, c in counts.items()} == {"10.1.0.1:80": (1, 1, 2, 1),
                                            "10.1.0.2:80": (1, 1, 4, 2),
                                            "10.1.0.3:8080": (0, 1, 2, 2)}


def test_misc_dynamic_sets_the_weight(tmp_path):
    pool = Pool(config(tmp_path, rs3="weight 5\nMISC_CHECK { misc_path /x\nmisc_dynamic }"))
    assert pool.report(0, RS3, 0, True, 7) and dests(pool)[RS3] == 7
    assert pool.report(0, RS3, 0, True, -1) and dests(pool)[RS3] == 5   # exit 0: configured


def test_alpha_starts_down(tmp_path):
    pool = Pool(config(tmp_path, vs="alpha"))
    assert dests(pool) == {RS2: 0, RS3: 1}      # no checker: alive; inhibited at weight 0
    assert pool.report(0, RS1, 0, True) and dests(pool) == {RS1: 2, RS2: 0, RS3: 1}


def test_quorum_and_sorry_server(tmp_path):
    pool = Pool(config(tmp_path, vs="quorum 3\nsorry_server 10.9.9.9 80",
                       rs3="TCP_CHECK { }"))
    assert pool.vs[0].quorum_up and dests(pool) == {RS1: 2, RS2: 1, RS3: 1}
    pool.report(0, RS3, 0, False)
    assert pool.vs[0].quorum_up                 # 2 + 1 >= 3
    pool.report(0, RS2, 0, False)               # 2 < 3: the sorry server, inhibited stay at 0
    assert not pool.vs[0].quorum_up and dests(pool) == {RS2: 0, ("10.9.9.9", 80): 1}
    pool.report(0, RS3, 0, True)
    assert pool.vs[0].quorum_up and dests(pool) == {RS1: 2, RS2: 0, RS3: 1}


def test_reload_keeps_the_state_of_unchanged_servers(tmp_path):
    pool = Pool(config(tmp_path))
    pool.report(0, RS1, 0, False)
    pool.report(0, RS2, 0, False)
    pool.reload(config(tmp_path, rs3="weight 4"))     # RS2's checkers unchanged, RS1's too
    assert dests(pool) == {RS2: 0, RS3: 4}


# --- the diff, through the planner on the fake maps -----------------------------------

@pytest.fixture
def ctl(fake_state):
    fake_state.prog_id = lambda: 7
    return Control(fake_state)


def listing(ctl):
    return ipvsfmt.list_all(ctl.services(counts=False), ipvsfmt.FMT_RULE | ipvsfmt.FMT_NUMERIC)


def test_apply_changes_only_the_difference(ctl, tmp_path):
    from xdplb.model import IPPROTO_TCP, Service
    ctl.add_service(Service(IPPROTO_TCP, "10.0.0.9", 80))        # not the daemon's
    pool = Pool(config(tmp_path))
    texts = [t for _, _, t in sync.apply(ctl, sync.want(pool))]
    assert texts == ["-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2",
                     "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1",
                     "-a -t 10.0.0.1:80 -r 10.1.0.3:8080 -m -w 1"]
    assert sync.read_owned(ctl.st) == {(IPPROTO_TCP, "10.0.0.1", 80)}
    assert sync.apply(ctl, sync.want(pool)) == []                # nothing to do twice
    pool.report(0, RS1, 0, False)
    pool.report(0, RS2, 0, False)
    assert [t for _, _, t in sync.apply(ctl, sync.want(pool))] == [
        "-d -t 10.0.0.1:80 -r 10.1.0.1:80", "-e -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 0"]
    pool.reload(config(tmp_path, vs="persistence_timeout 60"))
    assert [t for _, _, t in sync.apply(ctl, sync.want(pool))] == ["-E -t 10.0.0.1:80 -s rr -p 60"]
    pool.vs = []                                 # the file no longer names it
    assert [t for _, _, t in sync.apply(ctl, sync.want(pool))] == ["-D -t 10.0.0.1:80"]
    assert listing(ctl) == "-A -t 10.0.0.9:80 -s wlc\n"       # the other service is left alone
    assert sync.read_owned(ctl.st) == set()


def test_a_stale_ownership_record_is_not_believed(ctl, tmp_path):
    sync.write_owned(ctl.st, {(6, "10.0.0.9", 80)})
    ctl.st.prog_id = lambda: 8                   # the state was made again since
    assert sync.read_owned(ctl.st) == set()


def test_dry_run_reports_refusals_and_writes_nothing(ctl, tmp_path):
    pool = Pool(config(tmp_path))
    changes = sync.diff({}, sync.want(pool), set())
    assert sync.dry_run(ctl.st, changes) == []
    bad = changes + changes[:1]
    [(text, e)] = sync.dry_run(ctl.st, bad)
    assert (text, e.message) == ("-A -t 10.0.0.1:80 -s rr", "Service already exists")
    assert listing(ctl) == ""


# --- the checkers' schedule -----------------------------------------------------------

def run_schedule(monkeypatch, c, results, up=None):
    """The sleeps and reports of schedule() over scripted probe results."""
    log, it = [], iter(results)

    async def probe(_):
        try:
            return next(it), None
        except StopIteration:
            raise asyncio.CancelledError from None

    async def sleep(t):
        log.append(("sleep", t))
    monkeypatch.setattr(checkers, "probe", probe)
    monkeypatch.setattr(checkers.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(checkers.schedule(c, lambda ok, w, final: log.append((ok, final)), up,
                                      first_delay=0))
    return log[1:]


def check(**kw):
    args = dict(kind="TCP_CHECK", addr="127.0.0.1", port=1, connect_timeout=2.0, retry=2,
                delay_before_retry=3.0, delay_loop=10.0, alpha=False)
    args.update(kw)
    return Check(**args)


def test_schedule_is_keepalived_s(monkeypatch):
    c = check()
    assert run_schedule(monkeypatch, c, [True, False, False, False, False, True]) == [
        (True, True), ("sleep", 10.0),
        (False, False), ("sleep", 3.0), (False, False), ("sleep", 3.0),   # retry 2
        (False, True), ("sleep", 10.0),                                    # then down
        (False, False), ("sleep", 3.0),        # down: checked again after delay_before_retry
        (True, True), ("sleep", 10.0)]
    # the first check's failure counts at once (keepalived starts with retries used up)
    assert run_schedule(monkeypatch, c, [False]) == [(False, True), ("sleep", 10.0)]


def test_reaction_bound(monkeypatch):
    """From the last success to the report of the failure: at most delay_loop
    + (retry + 1) x connect_timeout + retry x delay_before_retry (each probe
    counted at its whole connect_timeout)."""
    c = check()
    log = run_schedule(monkeypatch, c, [True, False, False, False])
    between = log[1:log.index((False, True)) + 1]
    slept = sum(e[1] for e in between if e[0] == "sleep")
    probes = sum(1 for e in between if e[0] is False)
    assert slept + probes * c.connect_timeout == \
        c.delay_loop + (c.retry + 1) * c.connect_timeout + c.retry * c.delay_before_retry


# --- probes against loopback servers ---------------------------------------------------

@pytest.fixture
def web():
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"hello\n" if self.path == "/" else b"missing\n"
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def probe(c):
    return asyncio.run(checkers.probe(c))


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_and_http_probes(web):
    assert probe(check(port=web)) == (True, None)
    assert probe(check(port=free_port())) == (False, None)
    md5 = hashlib.md5(b"hello\n").hexdigest()
    http_check = check(kind="HTTP_GET", port=web, urls=(Url("/", (md5,)),))
    assert probe(http_check) == (True, None)
    assert probe(check(kind="HTTP_GET", port=web, urls=(Url("/", ("0" * 32,)),))) == (False, None)
    assert probe(check(kind="HTTP_GET", port=web, urls=(Url("/x"),))) == (False, None)
    assert probe(check(kind="HTTP_GET", port=web, urls=(Url("/x", (), ((404, 404),)),))) == \
        (True, None)


def test_udp_probe():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

        def echo():
            data, peer = s.recvfrom(100)
            s.sendto(b"\x0a\x0b" + data, peer)
        threading.Thread(target=echo, daemon=True).start()
        c = check(kind="UDP_CHECK", port=port, connect_timeout=5.0, payload=b"hi",
                  require_reply=b"\x0a\x0b", min_reply_length=2)
        assert probe(c) == (True, None)
    # nothing listens: the ICMP port unreachable fails it
    assert probe(check(kind="UDP_CHECK", port=free_port(socket.SOCK_DGRAM))) == (False, None)


def test_misc_probe(tmp_path):
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit $1\n")
    script.chmod(0o755)
    import os
    from xdplb.keepalived.model import Script

    def misc(code, dynamic=False, timeout=5.0):
        s = Script((str(script), str(code)), os.getuid(), os.getgid())
        return probe(check(kind="MISC_CHECK", script=s, misc_dynamic=dynamic,
                           misc_timeout=timeout))
    assert misc(0) == (True, None) and misc(1) == (False, None) and misc(3) == (False, None)
    assert misc(0, True) == (True, -1) and misc(12, True) == (True, 10)
    assert misc(1, True) == (False, None)
    s = Script(("/bin/sleep", "5"), os.getuid(), os.getgid())
    assert probe(check(kind="MISC_CHECK", script=s, misc_timeout=0.2)) == (False, None)
