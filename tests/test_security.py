"""Security, against the real kernel: root-only pins and files whatever the
umask, a read-only exporter (BPF_F_RDONLY fds, proven by EPERM and by the
exporter's own fdinfo), nothing listening beyond loopback unless configured
(read from /proc/<pid>/net/* of the server's own netns), input that names
interfaces, folders and addresses refused before anything is touched, and a
clear refusal for non-root users.

Every server runs in a network namespace the test makes and removes; every
pinned folder is private and removed, whatever happens.
"""
import contextlib
import ctypes as C
import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from conftest import _need_root_and_bpffs, xdplb_argv
from test_adm import CMD, create_stub_state

from xdplb import bpfsys, maps, netns, topology
from xdplb import state as statemod
from xdplb.structs import (COUNTERS, IP_VS_TCP_S_ESTABLISHED, IP_VS_TCP_S_FIN_WAIT,
                           XDPLB_DIR_IN, Conn, ConnKey, IpVsStats)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def adm_argv(*args):
    return [*CMD, *args]


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs, netns)")


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def run(argv, env=None, timeout=60, **kw):
    e = dict(os.environ)
    e.pop("XDPLB_PIN_DIR", None)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=e, timeout=timeout,
                          cwd="/", **kw)


def no_traceback(p):
    out, err = (p.out, p.err) if isinstance(p, subprocess.Popen) else (p.stdout, p.stderr)
    assert "Traceback" not in err + out, err


# --- /proc/<pid>/net: what a process's netns listens on -----------------------------

def _addr(hexaddr):
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1]
                                                      for i in range(0, 16, 4)))


def listening(pid):
    """{(proto, address, port)} of every listening TCP and bound, unconnected
    UDP socket in the network namespace of pid."""
    out = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, st = fields[1], fields[2], fields[3]
            if name.startswith("tcp") and st != "0A":      # TCP_LISTEN
                continue
            if name.startswith("udp") and int(remote.split(":")[1], 16) != 0:
                continue
            a, p = local.split(":")
            out.add((name.rstrip("6"), _addr(a), int(p, 16)))
    return out


def _in_netns(pid, ns):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(ns.path).st_ino
    except FileNotFoundError:
        return False


def wait_listening(proc, ns, want=1, timeout=15):
    """The sockets listening in ns once proc (started by nsenter: in the host's
    netns until it has entered ns) listens on `want` of them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = listening(proc.pid) if _in_netns(proc.pid, ns) else ()
        if len(got) >= want:
            time.sleep(0.1)  # a UDP socket may come with its TCP one
            return listening(proc.pid)
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}: {err}")
        time.sleep(0.05)
    raise AssertionError(f"nothing listening after {timeout}s")


@contextlib.contextmanager
def background(ns, argv, env=None):
    """argv running in netns ns; killed (and its output returned in .out/.err) at exit."""
    e = dict(os.environ)
    e.pop("XDPLB_PIN_DIR", None)
    e.update(env or {})
    proc = subprocess.Popen(ns.cmd(argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, cwd="/")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.out, proc.err = proc.communicate()


def fetch(ns, url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ns.entered():
        with opener.open(url, timeout=10) as r:
            return r.status, r.read().decode()


def samples(text):
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def ns():
    """A private netns with lo up, removed at the end."""
    _need_root_and_bpffs()
    with topology.build(topology.Topology(nodes=("ns",)), f"xts{uuid.uuid4().hex[:6]}") as net:
        yield net.ns["ns"]


# --- a state with known contents ----------------------------------------------------

VIP = "10.99.0.1"
NCPU = maps.PerCpuMap.ncpus


def _per_cpu(base):
    """One IpVsStats per CPU (distinct), and their sum."""
    vals = [IpVsStats(*(b + 7 * i for b in base)) for i in range(NCPU)]
    return vals, [sum(getattr(v, f) for v in vals) for f, _ in IpVsStats._fields_]


@pytest.fixture(scope="module")
def known_state():
    """A private state pinned under umask 000 (create_state's folders are
    watched as each pin is made), filled through xdplbadm, with known
    per-CPU stats, counters and connection entries written into its maps."""
    _need_root_and_bpffs()
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-sec"
    made = []
    real_pin = bpfsys.obj_pin

    def spy(fd, path):
        real_pin(fd, path)
        made.append((path, os.stat(os.path.dirname(path)).st_mode & 0o7777,
                     os.stat(path).st_mode & 0o7777))

    try:
        bpfsys.obj_pin = spy
        with umask(0):
            create_stub_state(folder)
    except BaseException:
        statemod.remove(folder)
        raise
    finally:
        bpfsys.obj_pin = real_pin
    try:
        env = {"XDPLB_PIN_DIR": folder}
        for args in (["-A", "-t", f"{VIP}:80", "-s", "rr"],
                     ["-a", "-t", f"{VIP}:80", "-r", "10.99.1.2:8080", "-m", "-w", "3"],
                     ["-a", "-t", f"{VIP}:80", "-r", "10.99.1.3:8080", "-m", "-w", "1"],
                     ["-A", "-u", f"{VIP}:53", "-s", "wlc"],
                     ["-a", "-u", f"{VIP}:53", "-r", "10.99.1.4", "-g", "-w", "2"]):
            p = run(["unshare", "-n", *adm_argv(*args)], env=env)
            assert p.returncode == 0, (args, p.stderr)
        from xdplb.control import Control
        expect = {}
        with statemod.State.open(folder=folder) as st:
            svcs = Control(st).services(counts=False)
            now = time.clock_gettime_ns(getattr(time, "CLOCK_MONOTONIC_COARSE", 6))
            sport = 40000
            for si, svc in enumerate(svcs):
                vals, total = _per_cpu((100 + si, 1000, 2000, 10**6, 5 * 10**9))
                st.svc_stats.put(svc.slot, vals)
                expect[("svc", svc.proto, svc.port)] = total
                for di, d in enumerate(svc.dests):
                    vals, total = _per_cpu((10 + di, 300 + si, 400, 5000, 6 * 10**9))
                    st.dest_stats.put(d.slot, vals)
                    expect[("dest", svc.port, d.addr)] = total
                    # connection entries: ESTABLISHED counts as ActiveConn, the rest as InActConn
                    states = ([IP_VS_TCP_S_ESTABLISHED] * (2 + di) + [IP_VS_TCP_S_FIN_WAIT]
                              if svc.proto == socket.IPPROTO_TCP else [0] * (1 + di))
                    for s in states:
                        sport += 1
                        k = ConnKey(saddr=(C.c_uint8 * 4)(*socket.inet_aton("10.98.0.9")),
                                    daddr=(C.c_uint8 * 4)(*socket.inet_aton(VIP)),
                                    sport=socket.htons(sport), dport=socket.htons(svc.port),
                                    proto=svc.proto)
                        c = Conn(addr=(C.c_uint8 * 4)(*socket.inet_aton(d.addr)),
                                 port=socket.htons(d.port), dir=XDPLB_DIR_IN, fwd=d.fwd,
                                 dest_slot=d.slot, svc_slot=svc.slot, state=s,
                                 dest_seq=d.seq, last_seen=now)
                        st.conns.put(k, c)
                    active = states.count(IP_VS_TCP_S_ESTABLISHED)
                    expect[("conns", svc.port, d.addr)] = (active, len(states) - active)
            for i, name in enumerate(COUNTERS):
                if name != "rx":
                    st.counters.put(i, [C.c_uint64(1000 * i + c) for c in range(NCPU)])
                    expect[("counter", name)] = sum(1000 * i + c for c in range(NCPU))
        yield {"folder": folder, "made": made, "expect": expect, "svcs": svcs}
    finally:
        statemod.remove(folder)


# --- 3: root-only state, whatever the umask ---------------------------------------

def _modes(folder):
    out = {folder: os.stat(folder).st_mode & 0o7777}
    for name in os.listdir(folder):
        out[os.path.join(folder, name)] = os.stat(os.path.join(folder, name)).st_mode & 0o7777
    return out


def test_state_is_root_only_under_umask_000(known_state):
    folder = known_state["folder"]
    # create_state's temporary folder was 0700 and every pin 0600 as it was made
    assert known_state["made"], "no pins were made"
    for path, dir_mode, pin_mode in known_state["made"]:
        assert "_tmp" in os.path.dirname(path)
        assert dir_mode == 0o700, (path, oct(dir_mode))
        assert pin_mode & 0o077 == 0, (path, oct(pin_mode))
    for path, mode in _modes(folder).items():
        assert mode & 0o077 == 0, (path, oct(mode))
    assert os.stat(os.path.dirname(folder)).st_mode & 0o077 == 0
    # the writers' lock file, made afresh by a writer running under umask 000
    lock = statemod.lock_path(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    p = run(["sh", "-c", 'umask 000; exec "$@"', "sh", *adm_argv("--set", "0", "0", "0")],
            env={"XDPLB_PIN_DIR": folder})
    assert p.returncode == 0, p.stderr
    assert os.stat(statemod.LOCK_DIR).st_mode & 0o7777 == 0o700
    assert os.stat(lock).st_mode & 0o7777 == 0o600


def test_default_state_and_run_files_root_only_under_umask_000(cli_netns):
    """The netns's own folder (<bpffs>/xdplb/net<inode>), its parent, /run/xdplb,
    the lock file and the lab's record, all made under umask 000."""
    from xdplb.lab import Lab
    with cli_netns.entered(), umask(0):
        folder = statemod.pin_dir(create=True)
        assert folder == cli_netns.pin_folder()
        create_stub_state(folder)
    p = cli_netns.run(["sh", "-c", 'umask 000; exec "$@"', "sh",
                       *adm_argv("-A", "-t", "10.0.0.1:80")])
    assert p.returncode == 0, p.stderr
    for path, mode in _modes(folder).items():
        assert mode & 0o077 == 0, (path, oct(mode))
    assert os.stat(os.path.dirname(folder)).st_mode & 0o077 == 0
    assert os.stat(statemod.LOCK_DIR).st_mode & 0o7777 == 0o700
    assert os.stat(statemod.lock_path(folder)).st_mode & 0o7777 == 0o600
    lab = Lab(f"xt{uuid.uuid4().hex[:6]}", say=lambda m: None)
    try:
        with umask(0):
            lab._save({"prefix": lab.prefix, "pids": {}})
        assert os.stat(lab.state_file).st_mode & 0o7777 == 0o600
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lab.state_file)


def test_tampered_state_folders_are_refused(known_state):
    """A state folder others can write, or that someone else owns, is refused."""
    base = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-open"
    src = statemod.State.open(folder=known_state["folder"])
    try:
        os.mkdir(base, 0o700)
        bpfsys.obj_pin(src.prog_fd, os.path.join(base, "prog"))
        env = {"XDPLB_PIN_DIR": base}
        os.chmod(base, 0o777)
        p = run(adm_argv("-L", "-n"), env=env)
        assert p.returncode != 0 and "writable by others" in p.stderr, p.stderr
        os.chmod(base, 0o700)
        os.chown(base, 65534, 65534)
        p = run(xdplb_argv("status"), env=env)
        assert p.returncode != 0 and "belongs to uid 65534" in p.stderr, p.stderr
        no_traceback(p)
    finally:
        src.close()
        shutil.rmtree(base, ignore_errors=True)


# --- 1: the exporter only reads ------------------------------------------------------

def test_read_only_open_refuses_every_write(known_state):
    folder = known_state["folder"]
    with statemod.State.open(folder=folder, readonly=True) as st:
        assert st.prog_fd == -1
        for name in maps.MAPS:
            m = getattr(st, name)
            key = m.key_type()
            value = m.value_type()
            list(m.raw_chunks(limit=1 if isinstance(key, C.c_uint32) else None))  # reads work
            with pytest.raises(OSError) as e:
                m.put(key, [value] * NCPU if isinstance(m, maps.PerCpuMap) else value)
            assert e.value.errno == errno.EPERM, name
            with pytest.raises(OSError) as e:
                m.delete(key)
            assert e.value.errno == errno.EPERM, name
        with pytest.raises(OSError) as e:
            st.services.put_many([(st.services.key_type(), st.services.value_type())])
        assert e.value.errno == errno.EPERM


def test_exporter_serves_known_stats_read_only_on_loopback(known_state, ns):
    folder = known_state["folder"]
    from xdplb.control import Control
    with statemod.State.open(folder=folder, readonly=True) as st:
        before = Control(st).snapshot()
    with background(ns, xdplb_argv("exporter"), env={"XDPLB_PIN_DIR": folder}) as proc:
        # only loopback, only the exporter's port, in its netns
        assert wait_listening(proc, ns) == {("tcp", "127.0.0.1", 19370)}
        status, text = fetch(ns, "http://127.0.0.1:19370/metrics")
        assert status == 200
        got = samples(text)
        fetch(ns, "http://127.0.0.1:19370/metrics")
        # its map fds are read-only, and it holds no program fd
        fds = {}
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                fds[fd] = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
        map_fds = [fd for fd, link in fds.items() if link == "anon_inode:bpf-map"]
        assert len(map_fds) == len(maps.MAPS), fds
        assert "anon_inode:bpf-prog" not in fds.values()
        for fd in map_fds:
            with open(f"/proc/{proc.pid}/fdinfo/{fd}") as f:
                flags = int(re.search(r"^flags:\s+([0-7]+)", f.read(), re.M).group(1), 8)
            assert flags & os.O_ACCMODE == os.O_RDONLY, (fd, oct(flags))
    assert proc.returncode == 0, proc.err      # SIGTERM: a clean exit
    no_traceback(proc)
    assert "serving http://127.0.0.1:19370/metrics" in proc.err
    assert f"reading xdplb state {folder} (read-only)" in proc.err

    with statemod.State.open(folder=folder, readonly=True) as st:
        assert Control(st).snapshot() == before   # nothing was written (no sweep)

    exp = known_state["expect"]
    assert got[("xdplb_state_loaded", ())] == 1
    names = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
             "outgoing_bytes")
    for svc in known_state["svcs"]:
        proto = {6: "TCP", 17: "UDP"}[svc.proto]
        sl = (("local_address", VIP), ("local_port", str(svc.port)), ("proto", proto))
        assert got[("xdplb_service_info", tuple(sorted(sl + (("scheduler", svc.sched),))))] == 1
        for name, value in zip(names, exp[("svc", svc.proto, svc.port)]):
            assert got[(f"xdplb_service_{name}_total", sl)] == value, name
        for d in svc.dests:
            bl = tuple(sorted(sl + (("remote_address", d.addr), ("remote_port", str(d.port)))))
            for name, value in zip(names, exp[("dest", svc.port, d.addr)]):
                assert got[(f"xdplb_backend_{name}_total", bl)] == value, name
            active, inactive = exp[("conns", svc.port, d.addr)]
            assert got[("xdplb_backend_connections_active", bl)] == active
            assert got[("xdplb_backend_connections_inactive", bl)] == inactive
            assert got[("xdplb_backend_connections_persistent", bl)] == 0
            assert got[("xdplb_backend_weight", bl)] == d.weight
    for name in COUNTERS:
        if name != "rx":
            assert got[("xdplb_datapath_packets_total", (("counter", name),))] == \
                exp[("counter", name)]
    assert {s[0] for s in got} >= {"xdplb_backend_weight", "xdplb_service_connections_total"}


def _map_fds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-map"
    return n


def test_exporter_without_state_serves_empty_metrics_and_creates_nothing(ns):
    """No state: only xdplb_state_loaded 0, a log line, nothing created. A
    state made later is picked up, and let go of when it is removed."""
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-nostate"
    url = "http://127.0.0.1:9999/metrics"
    try:
        with background(ns, xdplb_argv("exporter", "--listen", "127.0.0.1:9999"),
                        env={"XDPLB_PIN_DIR": folder}) as proc:
            assert wait_listening(proc, ns) == {("tcp", "127.0.0.1", 9999)}
            got = samples(fetch(ns, url)[1])
            assert got == {("xdplb_state_loaded", ()): 0}, got
            assert not os.path.exists(folder)
            assert not os.path.exists(statemod.lock_path(folder))
            assert _map_fds(proc.pid) == 0
            create_stub_state(folder)
            got = samples(fetch(ns, url)[1])
            assert got[("xdplb_state_loaded", ())] == 1
            assert got[("xdplb_datapath_packets_total", (("counter", "fwd"),))] == 0
            assert _map_fds(proc.pid) == len(maps.MAPS)
            statemod.remove(folder)
            assert samples(fetch(ns, url)[1]) == {("xdplb_state_loaded", ()): 0}
            assert _map_fds(proc.pid) == 0
        assert "no xdplb state in" in proc.err and "serving empty metrics" in proc.err
        assert f"reading xdplb state {folder} (read-only)" in proc.err
        no_traceback(proc)
    finally:
        statemod.remove(folder)


def test_exporter_listen_is_validated_and_only_what_is_configured(ns):
    for bad, why in (("nonsense", "not an IP address"),
                     ("localhost:19370", "not an IP address"),
                     (":19370", "no address"),
                     ("127.0.0.1:0", "1 to 65535"), ("127.0.0.1:65536", "1 to 65535"),
                     ("127.0.0.1:http", "1 to 65535"), ("127.0.0.1:", "1 to 65535"),
                     ("::1:19370", "in brackets"), ("[::1", "[IPV6]:PORT"),
                     ("[127.0.0.1]:80", "IPv6"), ("1.2.3.4.5:80", "not an IP address"),
                     (" 127.0.0.1:80", "expected ADDR:PORT")):
        p = run(ns.cmd(xdplb_argv("exporter", "--listen", bad)), timeout=20)
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        assert "--listen" in p.stderr and why in p.stderr, (bad, p.stderr)
        no_traceback(p)
    # an address this netns does not have: a clear error, not a traceback
    p = run(ns.cmd(xdplb_argv("exporter", "--listen", "10.9.9.9:19370")),
            timeout=20)
    assert p.returncode == 1 and "cannot listen on 10.9.9.9:19370" in p.stderr, p.stderr
    no_traceback(p)
    # every address, when asked for
    env = {"XDPLB_PIN_DIR": f"/sys/fs/bpf/xdplb/test-{os.getpid()}-nostate"}
    with background(ns, xdplb_argv("exporter", "--listen", "0.0.0.0:19371"), env=env) as proc:
        assert wait_listening(proc, ns) == {("tcp", "0.0.0.0", 19371)}
    if os.path.exists("/proc/net/if_inet6"):
        with background(ns, xdplb_argv("exporter", "--listen", "[::1]:19372"), env=env) as proc:
            assert wait_listening(proc, ns) == {("tcp", "::1", 19372)}
            assert fetch(ns, "http://[::1]:19372/metrics")[0] == 200


# --- 2: nothing else listens beyond loopback unless told to --------------------------

def test_httpd_listens_on_loopback_unless_told(ns):
    argv = [sys.executable, "-m", "xdplb.httpd", "7", "--port", "8080", "--udp", "8081"]
    with background(ns, argv, env={"PYTHONPATH": ROOT}) as proc:
        assert wait_listening(proc, ns, 2) == {("tcp", "127.0.0.1", 8080),
                                               ("udp", "127.0.0.1", 8081)}
        assert fetch(ns, "http://127.0.0.1:8080/")[1] == "This is service #7\n"
    with background(ns, argv + ["--bind", "0.0.0.0"], env={"PYTHONPATH": ROOT}) as proc:
        assert wait_listening(proc, ns, 2) == {("tcp", "0.0.0.0", 8080), ("udp", "0.0.0.0", 8081)}
    for bad in (["--bind", "example.com"], ["--port", "0"], ["--udp", "70000"]):
        p = run([sys.executable, "-m", "xdplb.httpd", "1", *bad], env={"PYTHONPATH": ROOT})
        assert p.returncode == 2 and "error:" in p.stderr, (bad, p.stderr)


def test_bench_cps_server_listens_on_loopback_unless_told(ns):
    argv = [sys.executable, "-m", "xdplb.bench.cps", "server", "--port", "8082", "--procs", "1"]
    with background(ns, argv, env={"PYTHONPATH": ROOT}) as proc:
        assert wait_listening(proc, ns) == {("tcp", "127.0.0.1", 8082)}


# --- 4: input validated before anything is touched -----------------------------------

def test_interface_names_are_validated_before_anything_is_touched(cli_netns):
    ns = cli_netns
    folder = ns.pin_folder()
    for bad in ("", "a" * 16, "../x", "a/b", "..", ".", "eth 0", "v0:1", "v\n0"):
        for cmd in ("attach", "detach"):
            p = ns.xdplb(cmd, bad)
            assert p.returncode == 2, (cmd, bad, p.stderr)
            assert re.search(r"Invalid value for '\[?IFNAME\.\.\.\]?'", p.stderr), p.stderr
            no_traceback(p)
    p = ns.xdplb("attach", "v0", "nosuchif0")
    assert p.returncode == 1 and "no such interface: 'nosuchif0'" in p.stderr, p.stderr
    p = ns.xdplb("detach", "nosuchif0")
    assert p.returncode == 1 and "no such interface" in p.stderr, p.stderr
    assert ns.xdp("v0").prog_id == 0
    assert not os.path.exists(folder)
    assert not os.path.exists(statemod.lock_path(folder))


def test_pin_dir_override_is_validated(ns, tmp_path):
    link = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-link"
    os.makedirs("/sys/fs/bpf/xdplb", mode=0o700, exist_ok=True)
    os.symlink(str(tmp_path), link)
    cases = (("relative/x", "not an absolute path"),
             (str(tmp_path / "state"), "not inside a mounted bpffs"),
             ("/sys/fs/bpf", "root of a bpffs"),
             ("/sys/fs/bpf/xdplb/../x", "normal absolute path"),
             ("/sys/fs/bpf//x", "normal absolute path"),
             ("/sys/fs/bpf/xdplb/a.b", "cannot contain dots"),
             (link + "/x", "symbolic link"))
    commands = (xdplb_argv("status"), xdplb_argv("detach"), xdplb_argv("daemon"),
                xdplb_argv("exporter", "--listen", "127.0.0.1:19373"),
                adm_argv(), adm_argv("-L", "-n"), adm_argv("-S"),
                adm_argv("-A", "-t", "10.0.0.1:80"))
    try:
        for value, why in cases:
            for argv in commands:
                p = run(ns.cmd(argv), env={"XDPLB_PIN_DIR": value}, timeout=20)
                assert p.returncode != 0 and why in p.stderr, (value, argv, p.stderr)
                assert "XDPLB_PIN_DIR" in p.stderr
                no_traceback(p)
        assert os.listdir(tmp_path) == []
        assert not os.path.exists("/sys/fs/bpf/xdplb/a.b")
    finally:
        os.unlink(link)


def test_addresses_and_restore_input_are_validated(ns):
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-addr"
    env = {"XDPLB_PIN_DIR": folder}
    try:
        for args in (["-A", "-t", "999.1.1.1:80"], ["-A", "-t", "1.2.3.4:99999"],
                     ["-A", "-t", "a" * 300 + ":80"], ["-A", "-t", "1.2.3.4:80/x"],
                     ["-a", "-t", "1.2.3.4:80", "-r", "1.2.3.4.5"],
                     ["-A", "-t", "../../etc:80"]):
            p = run(ns.cmd(adm_argv(*args)), env=env)
            assert p.returncode == 2, (args, p.stderr)
            no_traceback(p)
        for data in (b"\xff\xfe\x00garbage\n", b"-A -t " + b"9" * 100000 + b"\n",
                     b"-A -t 1.2.3.4:80\n-a -t 1.2.3.4:80 -r ../x\n"):
            p = subprocess.run(ns.cmd(adm_argv("-R")), input=data,
                               capture_output=True, env=dict(os.environ, **env), timeout=60)
            assert p.returncode != 0, data[:40]
            assert b"Traceback" not in p.stderr, p.stderr
        assert not os.path.exists(folder)   # nothing was created
        p = run(xdplb_argv("lab", "--prefix", "../evil", "up"))
        assert p.returncode == 1 and "bad lab prefix" in p.stderr, p.stderr
        assert not any(n.startswith("..") or "evil" in n for n in os.listdir(netns.NETNS_DIR))
    finally:
        statemod.remove(folder)


# --- non-root users --------------------------------------------------------------------

def as_nobody(module, *args):
    """argv running `python -m module args` as nobody. The checkout may sit
    where nobody cannot enter (under /root on a fresh machine): nobody keeps
    CAP_DAC_READ_SEARCH alone, enough to read the code, none of what xdplb
    needs (bpfsys.privileged)."""
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
            os.path.join(ROOT, ".venv", "bin", "python"), "-m", module, *args]


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv is not installed")
def test_non_root_gets_a_clear_refusal():
    env = {"HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"}
    for args in (["status"], ["attach", "lo"], ["detach"], ["daemon"], ["exporter"],
                 ["lab", "up"], ["lab", "down"], ["lab", "exec", "client", "--", "true"],
                 ["bench", "--quick"]):
        p = run(as_nobody("xdplb.cli", *args), env=env, timeout=30)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert "needs root" in p.stderr, (args, p.stderr)
        no_traceback(p)
    for args in (["--help"], ["status", "--help"], ["exporter", "--help"]):
        p = run(as_nobody("xdplb.cli", *args), env=env, timeout=30)
        assert p.returncode == 0 and "Usage:" in p.stdout, (args, p.stderr)
    for args in ([], ["-L", "-n"], ["-A", "-t", "1.2.3.4:80"], ["-C"], ["-R"]):
        p = run(as_nobody("xdplb.adm", *args), env=env, timeout=30,
                stdin=subprocess.DEVNULL)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("Can't initialize ipvs: Permission denied (you must be root)")
        no_traceback(p)
