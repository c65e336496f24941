"""Shared pytest fixtures. Data-path fixtures are prefixed `datapath_`."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xdplb import testnet, topology  # noqa: E402
from xdplb.netns import NetNs  # noqa: E402

DP_NET = testnet.TOPO


@pytest.fixture(scope="session")
def datapath_net():
    """A netns `xdplbt-<pid>-dp` with the DP_NET topology, deleted at the end.
    Tests that run packets enter it with `datapath_net["ns"].entered()`
    (PROG_TEST_RUN resolves ingress_ifindex and bpf_fib_lookup in the
    current netns); the rest of the session stays in its own netns."""
    if os.geteuid() != 0:
        pytest.skip("data-path tests need root")
    net = testnet.build(f"xdplbt-{os.getpid()}")
    try:
        yield net
    finally:
        net["ns"].delete()


@pytest.fixture(scope="session")
def datapath_state(datapath_net):
    """The real data path, compiled with bcc and pinned in a private folder
    /sys/fs/bpf/xdplb/test-<pid>-dp; unpinned at the end."""
    from xdplb import loader
    from xdplb import state as st
    with st.private_folder(f"test-{os.getpid()}-dp") as folder:
        with loader.open_state(folder) as s:
            with datapath_net["ns"].entered():  # a DEVMAP resolves ifindexes now
                for idx in (datapath_net["cli_idx"], datapath_net["srv_idx"]):
                    s.tx_ports.put(idx, s.tx_ports.value_type(idx))
            yield s


def emptied(st):
    """Control over state st, which it leaves as a fresh state is: no services,
    no connection entries, IPVS's default timeouts and settings."""
    import ctypes as C
    from xdplb import structs as T
    from xdplb.control import Control
    from xdplb.model import SETTINGS
    c = Control(st)
    c.flush()
    st.conn_table.clear()
    st.conn_table6.clear()
    st.fnat_out.clear()
    st.fnat_out6.clear()
    st.lblc.clear()
    for slot in range(64):
        st.dest_conns.put(slot, T.DestConns())
    for i in range(T.XDPLB_TMO_MAX):
        st.timeouts.put(i, C.c_uint32(0))
    for name, (_, default) in SETTINGS.items():   # the fuzzer zeroes them
        c.set_setting(name, default)
    return c


@pytest.fixture
def ctl(datapath_state, datapath_net):
    """Control (the one write path) over the data-path state, emptied before
    and after, and this test inside the data-path netns."""
    with datapath_net["ns"].entered():
        c = emptied(datapath_state)
        yield c
        emptied(datapath_state)


# --- the fuzzer (tests/fuzz/), for test_fuzz.py and test_fuzz_oracle.py ---
FUZZ_SEED = int(os.environ.get("XDPLB_FUZZ_SEED", "20261121"))


@pytest.fixture
def fuzzer(datapath_state, datapath_net):
    """A Fuzzer on the session's pinned program, inside the data-path netns;
    the maps are left empty afterwards."""
    from fuzz.runner import Fuzzer
    with datapath_net["ns"].entered():
        fz = Fuzzer(datapath_state, datapath_net, seed=FUZZ_SEED, log=print)
        try:
            yield fz
        finally:
            fz.cleanup()


# --- lab / CLI fixtures (xdplb/lab.py, xdplb/cli.py); prefixed `xlab_` / `cli_` ---
import uuid  # noqa: E402

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))


def xdplb_argv(*args):
    """argv of the `xdplb` console script of this venv."""
    exe = os.path.join(VENV_BIN, "xdplb")
    if os.access(exe, os.X_OK):
        return [exe, *args]
    return [sys.executable, "-m", "xdplb.cli", *args]


def _need_root_and_bpffs():
    if os.geteuid() != 0:
        pytest.skip("needs root (netns, XDP, bpffs)")
    if not any(line.split(" - ")[1].split()[0] == "bpf"
               for line in open("/proc/self/mountinfo") if " - " in line):
        pytest.skip("no bpffs mounted (mount -t bpf bpf /sys/fs/bpf)")
    for tool in ("nsenter", "curl", "nft"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            pytest.skip(f"{tool} is not installed")


@pytest.fixture
def xlab_prefix():
    """A lab prefix of its own (never the user's `xlab`)."""
    return f"xt{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def xlab_session():
    """A private lab (xdplb/lab.py) built once for the session (a build is a
    compile of the data path and three servers started) and always torn down."""
    _need_root_and_bpffs()
    from xdplb.lab import Lab
    lab = Lab(f"xt{uuid.uuid4().hex[:6]}", say=lambda msg: None)
    try:
        lab.up()
        yield lab
    finally:
        lab.down(quiet=True)


@pytest.fixture(scope="module")
def xlab_lab(xlab_session):
    """The session's lab as a module finds it: its xdplb state emptied as a
    fresh one (no services, no connection entries an earlier module's
    clients could meet, default timeouts and settings); built again if an
    earlier module left it broken."""
    from xdplb import loader
    from xdplb.lab import LB_IFS
    from xdplb.state import State
    lab = xlab_session
    if not (lab.is_up() and os.path.exists(lab.pin_folder())):
        lab.down(quiet=True)
        lab.up()
    with State.open(folder=lab.pin_folder()) as st, lab.node("lb").entered():
        if sorted(n for n, _, _ in loader.attached(st)) != sorted(LB_IFS):
            lab.run("lb", xdplb_argv("attach", *LB_IFS))    # the pinned state: no compile
        emptied(st)
    return lab


CLI_TOPOLOGY = topology.Topology(nodes=("ns",), veths=(
    topology.Veth(topology.End("ns", "v0"), topology.End("ns", "v1")),))


class CliNetns(NetNs):
    """A throwaway netns holding a veth pair v0 <-> v1 (both up) for `xdplb` runs."""

    def __init__(self):
        prefix = f"xtc{uuid.uuid4().hex[:6]}"
        topology.build(CLI_TOPOLOGY, prefix).ns["ns"].close()
        super().__init__(CLI_TOPOLOGY.ns_name(prefix, "ns"))

    def run(self, argv, check=False):
        env = dict(os.environ)
        env.pop("XDPLB_PIN_DIR", None)
        return super().run(argv, check=check, env=env, timeout=120)

    def xdplb(self, *args):
        return self.run(xdplb_argv(*args))

    def pin_folder(self):
        from xdplb import state
        return os.path.join(state.bpffs_root(), "xdplb", f"net{os.stat(self.path).st_ino}")

    def delete(self):
        if self.exists():
            with_state = False
            try:
                folder = self.pin_folder()
                with_state = os.path.exists(folder)
            except Exception:
                folder = None
            if with_state:
                self.xdplb("detach")
            if folder:
                from xdplb import state
                state.remove(folder)
        super().delete()


@pytest.fixture
def cli_netns():
    """A private netns with a veth pair v0/v1; its xdplb state, pins and XDP go with it."""
    _need_root_and_bpffs()
    ns = CliNetns()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="session")
def cli_attached():
    """A CliNetns whose v0 and v1 run xdplb, for the session's tests that
    need an attached state and leave it attached (an attach compiles)."""
    _need_root_and_bpffs()
    ns = CliNetns()
    try:
        assert ns.xdplb("attach", "v0", "v1").returncode == 0
        yield ns
    finally:
        ns.delete()


# A TCP echo server for a lab node (lab.start_server), and its client side.
ECHO = """
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=64)
def serve(c):
    with c:
        while (data := c.recv(65536)):
            c.sendall(data)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def lab_connect(client, addr, port, timeout=10.0):
    """A connection from the lab node client to addr:port (retried while the
    server starts)."""
    import socket
    import time
    deadline = time.monotonic() + timeout
    while True:
        with client.entered():
            try:
                return socket.create_connection((addr, port), timeout=5)
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.2)


def lab_echo(sock, data):
    """Send data and read it back from an ECHO server."""
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "connection closed by the other end"
        got += chunk
    return got


class EchoStream:
    """A connection from the lab node client to an ECHO server at addr:port,
    echoing numbered blocks of `block` bytes until closed; a reset or a
    wrong byte ends it with the error kept (`error`)."""

    def __init__(self, client, addr, port, block=32 * 1024, timeout=10):
        import threading
        self.sock = lab_connect(client, addr, port)
        self.sock.settimeout(timeout)
        self.block, self.echoed, self.error = block, 0, None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        n = 0
        try:
            while not self.stop.is_set():
                data = n.to_bytes(8, "big") * (self.block // 8)
                assert lab_echo(self.sock, data) == data, f"block {n} came back altered"
                self.echoed += len(data)
                n += 1
        except Exception as e:  # noqa: BLE001 - kept for the test to report
            self.error = e

    def wait_for(self, more, timeout=60):
        """Until `more` bytes beyond now have been echoed."""
        import time
        goal, deadline = self.echoed + more, time.monotonic() + timeout
        while self.echoed < goal:
            assert self.error is None, f"the stream broke: {self.error!r}"
            assert time.monotonic() < deadline, f"the stream stalled at {self.echoed} bytes"
            time.sleep(0.05)

    def progress(self, seconds):
        """Bytes echoed over the next `seconds`."""
        import time
        start = self.echoed
        time.sleep(seconds)
        return self.echoed - start

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)
        self.sock.close()
