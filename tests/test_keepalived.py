"""`xdplb daemon -f keepalived.conf` against real servers: a private lab
(xdplb/lab.py) whose backends also serve port 8080 from servers this module
starts and stops, the daemon running in the lb's netns.

Stopping a backend's server must remove it (or quiesce it, under
inhibit_on_failure) within keepalived's bound, delay_loop + (retry + 1) x
connect_timeout + retry x delay_before_retry, plus a second; new connections
then avoid it; starting it brings it back within the same bound. SIGHUP
reloads and changes only the difference, `-t` prints that difference, SIGTERM
stops the daemon and leaves the services.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import xdplb_argv
from xdplb.keepalived import sync

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "keepalived")
VIP = "1.2.3.4"
PORT = 8080
RS = {1: "172.80.0.2", 2: "172.80.0.3", 3: "172.80.0.4"}
# lab_nat.conf: delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 1
BOUND = 1 + (1 + 1) * 1 + 1 * 1 + 1


class Backends:
    """The servers on port 8080, one per lab backend, stopped and started by number."""

    def __init__(self, lab):
        self.lab, self.procs = lab, {}

    def start(self, n):
        self.procs[n] = self.lab.start_server(f"rs{n}", [
            sys.executable, "-m", "xdplb.httpd", str(n), "--port", str(PORT),
            "--bind", "0.0.0.0"])
        deadline = time.monotonic() + 10
        while not self.lab.node(f"rs{n}").tcp_listening(PORT):
            assert time.monotonic() < deadline, f"rs{n}'s server does not listen"
            time.sleep(0.05)

    def stop(self, n):
        proc = self.procs.pop(n)
        proc.terminate()
        proc.wait(timeout=10)

    def stop_all(self):
        for n in list(self.procs):
            self.stop(n)


class Daemon:
    def __init__(self, lab, conf, log):
        self.lab, self.conf, self.log = lab, conf, log
        self.proc = subprocess.Popen(lab.cmd("lb", xdplb_argv("daemon", "-f", conf)),
                                     stdout=subprocess.DEVNULL, stderr=open(log, "w"))

    def lines(self):
        with open(self.log) as f:
            return [line.rstrip("\n").removeprefix("xdplb daemon: ") for line in f]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def lab(xlab_lab):
    """The lab with the module's servers on port 8080, and no services."""
    xlab_lab.adm("-C")
    backends = Backends(xlab_lab)
    try:
        for n in RS:
            backends.start(n)
        yield xlab_lab, backends
    finally:
        backends.stop_all()
        xlab_lab.adm("-C")


@pytest.fixture(scope="module")
def daemon(lab, tmp_path_factory):
    """One daemon for the module (its start compiles and swaps in the data
    path): the tests using it leave every server running and in the service."""
    xlab, _ = lab
    tmp = tmp_path_factory.mktemp("keepalived")
    conf = tmp / "keepalived.conf"
    shutil.copy(os.path.join(DATA, "lab_nat.conf"), conf)
    d = Daemon(xlab, str(conf), str(tmp / "daemon.log"))
    try:
        # the bound covers the start's compile on a loaded machine
        wait_for(lambda: dests(xlab) == {RS[1]: 1, RS[2]: 1, RS[3]: 1}, 120, d)
        yield d
    finally:
        d.stop()


def dests(lab, port=PORT):
    """{real server address: weight} of the service VIP:port, as -S shows it."""
    rules = lab.adm("-S", "-n").stdout
    return {m[1]: int(m[2]) for m in re.finditer(
        rf"^-a -t {VIP}:{port} -r ([\d.]+):\d+ -m -w (\d+)$", rules, re.M)}


def wait_for(pred, bound, d=None, since=None):
    """Seconds from since (now by default) until pred() held (polled every
    0.1 s); fails after bound."""
    t0 = time.monotonic() if since is None else since
    while not pred():
        if time.monotonic() - t0 > bound:
            log = "\n".join(d.lines()) if d else ""
            pytest.fail(f"not within {bound} s; daemon log:\n{log}")
        time.sleep(0.1)
    return time.monotonic() - t0


def answers(lab, n):
    out = []
    for _ in range(n):
        m = re.fullmatch(r"This is service #(\d)\n", lab.curl(f"http://{VIP}:{PORT}/"))
        out.append(int(m[1]) if m else None)
    return out


def test_stopped_servers_are_removed_or_quiesced_and_come_back(lab, daemon):
    xlab, backends = lab
    assert sorted(answers(xlab, 6)) == [1, 1, 2, 2, 3, 3]
    t0 = time.monotonic()
    backends.stop(2)        # HTTP_GET, inhibit_on_failure: weight 0
    backends.stop(3)        # HTTP_GET with a digest: removed
    took = wait_for(lambda: dests(xlab) == {RS[1]: 1, RS[2]: 0}, BOUND, daemon, t0)
    assert answers(xlab, 6) == [1] * 6
    backends.start(2)       # each waits until its server listens: the bound
    backends.start(3)       # counts from when there is something to check
    t0 = time.monotonic()
    back = wait_for(lambda: dests(xlab) == {RS[1]: 1, RS[2]: 1, RS[3]: 1}, BOUND, daemon, t0)
    assert sorted(answers(xlab, 6)) == [1, 1, 2, 2, 3, 3]
    lines = daemon.lines()
    for line in (f"Disabling service [{RS[2]}]:{PORT} of VS [{VIP}]:{PORT}",
                 f"Removing service [{RS[3]}]:{PORT} from VS [{VIP}]:{PORT}",
                 f"Enabling service [{RS[2]}]:{PORT} of VS [{VIP}]:{PORT}",
                 f"Adding service [{RS[3]}]:{PORT} to VS [{VIP}]:{PORT}"):
        assert line in lines
    with open(sync.record_path(xlab.pin_folder(), "checks")) as f:
        counts = {c["real_server"]: c for c in json.load(f)["real_servers"]}
    assert {k: (c["up_transitions"], c["down_transitions"]) for k, c in counts.items()} == {
        f"{RS[1]}:{PORT}": (0, 0), f"{RS[2]}:{PORT}": (1, 1), f"{RS[3]}:{PORT}": (1, 1)}
    print(f"removed/quiesced after {took:.2f} s, back after {back:.2f} s (bound {BOUND} s)")


def test_reload_test_and_stop(lab, daemon):
    xlab, _ = lab
    assert daemon.proc.poll() is None, "the module's daemon is not running"
    wait_for(lambda: dests(xlab) == {RS[1]: 1, RS[2]: 1, RS[3]: 1}, BOUND, daemon)
    xlab.adm("-A", "-t", f"{VIP}:81", "-s", "wlc")          # not the daemon's
    xlab.adm("-a", "-t", f"{VIP}:81", "-r", f"{RS[1]}:81", "-m")
    with open(daemon.conf) as f:
        text = f.read()
    text = text.replace("    real_server 172.80.0.2 8080 {\n        weight 1",
                        "    real_server 172.80.0.2 8080 {\n        weight 3")
    text = text[:text.index("    real_server 172.80.0.4")] + "}\n"
    with open(daemon.conf, "w") as f:
        f.write(text)
    changes = [f"-d -t {VIP}:{PORT} -r {RS[3]}:{PORT}",
               f"-e -t {VIP}:{PORT} -r {RS[1]}:{PORT} -m -w 3"]
    p = xlab.run("lb", xdplb_argv("daemon", "-t", "-f", daemon.conf), check=False)
    assert (p.returncode, p.stdout.splitlines()) == (0, changes)
    assert dests(xlab) == {RS[1]: 1, RS[2]: 1, RS[3]: 1}           # -t changed nothing
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: dests(xlab) == {RS[1]: 3, RS[2]: 1}, 10, daemon)
    lines = daemon.lines()
    after = lines[lines.index(f"reloading {daemon.conf}") + 1:]
    assert [line for line in after if line.startswith("-")] == changes
    assert dests(xlab, 81) == {RS[1]: 1}
    p = xlab.run("lb", xdplb_argv("daemon", "-t", "-f", daemon.conf), check=False)
    assert p.stdout.splitlines() == ["no change"]
    with open(daemon.conf, "a") as f:
        f.write("virtual_server 1.2.3.4 80 {\n wieght 1\n}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused: the running configuration is kept" in daemon.lines(),
             10, daemon)
    assert f"({daemon.conf}: Line {text.count(chr(10)) + 2}) Unknown keyword 'wieght'" \
        in daemon.lines()
    assert daemon.stop() == 0
    assert dests(xlab) == {RS[1]: 3, RS[2]: 1} and dests(xlab, 81) == {RS[1]: 1}


def test_bad_file_changes_nothing(lab):
    xlab, _ = lab
    before = xlab.adm("-S", "-n").stdout
    for name in ("bad_unknown.conf", "bad_address.conf", "bad_brace.conf", "bad_loop_a.conf"):
        p = xlab.run("lb", xdplb_argv("daemon", "-f", os.path.join(DATA, name)), check=False)
        assert p.returncode == 1 and "configuration refused, nothing changed" in p.stderr
        assert re.search(r"\(\S+\.conf: Line \d+\) ", p.stderr), p.stderr
    assert xlab.adm("-S", "-n").stdout == before
