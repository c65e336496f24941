"""A network-namespace lab on the local host: client -> xdplb -> three backends.

    client (10.0.0.2/24) --veth-- lb (10.0.0.1/24, 172.80.0.1/32 towards each rs)
                                   +--veth-- rs1 172.80.0.2  "This is service #1"
                                   +--veth-- rs2 172.80.0.3  "This is service #2"
                                   +--veth-- rs3 172.80.0.4  "This is service #3"

The client routes the VIP 1.2.3.4 via the lb; the backends route everything
via the lb (onlink), so Masq replies come back through it. xdplb is attached
natively to the lb's four veths, inside the lb netns. Two lab-only settings on
the peer ends (client and backends), both because of veth, not xdplb, made as
`ethtool -K eth0 gro on tx off` makes them (NetNs.face_xdp):

- GRO on: frames XDP redirects into a veth are dropped unless the peer runs
  XDP or has GRO on;
- TX checksum offload off: veth leaves TCP checksums partial, which an XDP
  NAT rewrite cannot complete; real NICs deliver full checksums.

The backends' ends also run an XDP_PASS program (NetNs.xdp_pass): a frame the
lb's XDP sends back out of the veth it came in by (XDP_TX: a backend calling
the VIP and given itself) reaches only an end that runs XDP.

The network itself is TOPOLOGY (xdplb/topology.py), built through netlink.

`up(two_arm=True)` builds TOPOLOGY_TWO_ARM instead, a two-armed balancer:

    client (10.0.0.2/24) --veth-- lb veth-client (10.0.0.1/24)
                                  lb veth-rs (172.80.0.1/24, local address 172.80.0.10)
                                   --veth-- sw: bridge br0 --veth-- rs1, rs2, rs3 (172.80.0.2-4/24)

The backends have no route to the client, only their segment: xdplb (attached
to veth-client and veth-rs) serves TCP and UDP VIP:80 by full-NAT, its source
the local address, and redirects between the two interfaces (DEVMAP).

Every name carries a prefix (default `xlab`, tests use their own), so a user's
lab and parallel test labs never meet. Nothing is created in the root netns
except the namespaces' names; the pids of the backend servers are kept in
/run/xdplb/lab-<prefix>.json. xdplb's state is per netns: commands for the lb
run under `nsenter --net=/run/netns/<prefix>-lb`, which (unlike `ip netns
exec`) keeps /sys/fs/bpf, where the state is pinned.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from . import netns
from . import state as xstate
from . import topology as T

PREFIX = "xlab"
RUN_DIR = "/run/xdplb"

VIP = "1.2.3.4"
CLIENT_IP = "10.0.0.2"
LB_CLIENT_IP = "10.0.0.1"
LB_RS_IP = "172.80.0.1"
# rsN is "service #N"; the seed's kernel answers #3 #2 #1 for rr over .2 .3 .4.
BACKENDS = {"rs1": "172.80.0.2", "rs2": "172.80.0.3", "rs3": "172.80.0.4"}
# IPv6, the same roles and routes
VIP6 = "fd00:4::4"
CLIENT_IP6 = "fd00:1::2"
LB_CLIENT_IP6 = "fd00:1::1"
LB_RS_IP6 = "fd00:80::1"
BACKENDS6 = {"rs1": "fd00:80::2", "rs2": "fd00:80::3", "rs3": "fd00:80::4"}
NODES = ("client", "lb", *BACKENDS)
PEER_IF = "eth0"  # the interface of the client and of each backend


def lb_if(node):
    """The lb's veth towards node."""
    return f"veth-{node}"


CLIENT_IFS = (lb_if("client"),)
BACKEND_IFS = tuple(lb_if(n) for n in BACKENDS)
LB_IFS = CLIENT_IFS + BACKEND_IFS

# The two-armed lab: the backends on one segment (a bridge in node "sw") behind
# the lb's second interface, with no route to the client: full-NAT.
SW = "sw"
NODES_TWO_ARM = (*NODES, SW)
LB_RS_IF = "veth-rs"
LB_IFS_TWO_ARM = CLIENT_IFS + (LB_RS_IF,)
LADDR = "172.80.0.10"   # the service's local address, on LB_RS_IF


def _client(lb_end, peer_end, routes):
    """The client's side, the same in both labs."""
    lb_end["client"] = T.End("lb", lb_if("client"),
                             addrs=(f"{LB_CLIENT_IP}/24", f"{LB_CLIENT_IP6}/64"))
    peer_end["client"] = T.End("client", PEER_IF, addrs=(f"{CLIENT_IP}/24", f"{CLIENT_IP6}/64"),
                               faces_xdp=True)
    routes += [T.Route("client", f"{VIP}/32", via=LB_CLIENT_IP),
               T.Route("client", f"{VIP6}/128", via=LB_CLIENT_IP6)]


def _lb_sysctls(ifs):
    sysctls = [("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
               ("net.ipv4.conf.default.rp_filter", 0), ("net.ipv6.conf.all.forwarding", 1)]
    sysctls += [(f"net.ipv4.conf.{dev}.rp_filter", 0) for dev in ifs]
    return sysctls


def _topology():
    """The lab as data (xdplb/topology.py): the lb forwards without reverse-path
    filtering (Masq replies come back on another veth than the request left
    by); the client's and the backends' ends face the lb's XDP. The lb answers
    ARP for one backend on another's veth (proxy_arp), as a node does for its
    pods: a backend calling the VIP gets its answer from another backend,
    which, on the same /24, asks for the caller's address by ARP. A backend
    calling the VIP and choosing itself (hairpin) gets its packet back by
    XDP_TX, which veth delivers only to an end running XDP: the backends'
    ends run an XDP_PASS program."""
    lb_end, peer_end, routes = {}, {}, []
    _client(lb_end, peer_end, routes)
    for node, addr in BACKENDS.items():
        addr6 = BACKENDS6[node]
        lb_end[node] = T.End("lb", lb_if(node), addrs=(f"{LB_RS_IP}/32", f"{LB_RS_IP6}/128"))
        peer_end[node] = T.End(node, PEER_IF, addrs=(f"{addr}/24", f"{addr6}/64"),
                               faces_xdp=True, gets_xdp_tx=True)
        routes += [T.Route("lb", f"{addr}/32", dev=lb_if(node)),
                   T.Route(node, "default", via=LB_RS_IP, dev=PEER_IF, onlink=True),
                   T.Route("lb", f"{addr6}/128", dev=lb_if(node)),
                   T.Route(node, "default", via=LB_RS_IP6, dev=PEER_IF, onlink=True)]
    sysctls = _lb_sysctls(LB_IFS) + [(f"net.ipv4.conf.{dev}.proxy_arp", 1)
                                      for dev in BACKEND_IFS]
    return T.Topology(nodes=NODES, veths=tuple(T.Veth(lb_end[n], peer_end[n]) for n in lb_end),
                      routes=tuple(routes),
                      sysctls=tuple(T.Sysctl("lb", k, v) for k, v in sysctls))


def _topology_two_arm():
    """client -- lb -- one segment (a bridge in node sw) -- rs1..3. The backends
    have their subnet's route only, none to the client: the lb's full-NAT
    makes every reply come back to its local address LADDR. The lb's end
    towards sw faces XDP (frames are redirected into it); the backends' ends
    have TX checksum offload off, as their frames reach XDP unchanged; the
    segment's end runs XDP_PASS for frames XDP sends back to it (XDP_TX: a
    backend calling the VIP)."""
    lb_end, peer_end, routes = {}, {}, []
    _client(lb_end, peer_end, routes)
    veths = [T.Veth(lb_end["client"], peer_end["client"]),
             T.Veth(T.End("lb", LB_RS_IF, addrs=(f"{LB_RS_IP}/24", f"{LADDR}/32")),
                    T.End(SW, "port-lb", faces_xdp=True, gets_xdp_tx=True))]
    for node, addr in BACKENDS.items():
        veths.append(T.Veth(T.End(SW, f"port-{node}"),
                            T.End(node, PEER_IF, addrs=(f"{addr}/24",), faces_xdp=True)))
    return T.Topology(nodes=NODES_TWO_ARM, veths=tuple(veths),
                      bridges=(T.Bridge(SW, "br0", ("port-lb", *(f"port-{n}" for n in BACKENDS))),),
                      routes=tuple(routes),
                      sysctls=tuple(T.Sysctl("lb", k, v) for k, v in _lb_sysctls(LB_IFS_TWO_ARM)))


TOPOLOGY = _topology()
TOPOLOGY_TWO_ARM = _topology_two_arm()

BIN_DIR = os.path.dirname(os.path.abspath(sys.executable))


class LabError(netns.NetnsError):
    """The lab could not be built or used; the message says why."""


def tool(name):
    """argv prefix of one of our console scripts (the venv's, else -m)."""
    path = os.path.join(BIN_DIR, name)
    if os.access(path, os.X_OK):
        return [path]
    module = {"xdplb": "xdplb.cli", "xdplbadm": "xdplb.adm"}[name]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def child_env():
    """Environment for lab commands: our scripts on PATH, the netns's own state."""
    env = dict(os.environ)
    env.pop("XDPLB_PIN_DIR", None)
    path = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if BIN_DIR not in path.split(":"):
        path = f"{BIN_DIR}:{path}"
    for extra in ("/usr/sbin", "/sbin"):
        if extra not in path.split(":"):
            path = f"{path}:{extra}"
    env["PATH"] = path
    return env


def _run(argv, check=True, timeout=60, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(argv, text=True, timeout=timeout, env=kw.pop("env", child_env()), **kw)
    if check and p.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({p.returncode}): {(p.stderr or '').strip()}")
    return p


class Lab:
    def __init__(self, prefix=PREFIX, say=None):
        if not prefix or len(prefix) > 20 or not all(c.isalnum() or c in "-_" for c in prefix):
            raise LabError(f"bad lab prefix {prefix!r}")
        self.prefix = prefix
        self.say = say or (lambda msg: print(msg, flush=True))
        self._nodes = {}
        self._two_arm = None     # which lab: up() says, else its record

    # names -----------------------------------------------------------------
    @property
    def two_arm(self):
        """True for the two-armed lab (`up --two-arm`)."""
        if self._two_arm is None:
            return bool((self._record() or {}).get("two_arm"))
        return self._two_arm

    @property
    def topology(self):
        return TOPOLOGY_TWO_ARM if self.two_arm else TOPOLOGY

    @property
    def lb_ifs(self):
        """The lb's interfaces running xdplb."""
        return LB_IFS_TWO_ARM if self.two_arm else LB_IFS

    @property
    def mode(self):
        """The XDP mode the lab was built with."""
        return (self._record() or {}).get("mode", "native")

    def ns(self, node):
        nodes = self.topology.nodes
        if node not in nodes:
            raise LabError(f"no node {node!r} in the lab (nodes: {', '.join(nodes)})")
        return self.topology.ns_name(self.prefix, node)

    def node(self, node):
        """The NetNs of node, to change or inspect its network (down() closes it)."""
        if node not in self._nodes:
            self._nodes[node] = netns.NetNs(self.ns(node))
        return self._nodes[node]

    def ns_path(self, node):
        return netns.path(self.ns(node))

    @property
    def state_file(self):
        return os.path.join(RUN_DIR, f"lab-{self.prefix}.json")

    def existing(self):
        return [n for n in self.topology.nodes if os.path.exists(self.ns_path(n))]

    def _any_existing(self):
        """Namespaces of either lab under this prefix (half built, or the other kind)."""
        return [n for n in TOPOLOGY_TWO_ARM.nodes
                if os.path.exists(netns.path(TOPOLOGY_TWO_ARM.ns_name(self.prefix, n)))]

    def _record(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def is_up(self):
        rec = self._record()
        return (rec is not None and len(self.existing()) == len(self.topology.nodes)
                and all(_alive_httpd(pid) for pid in rec.get("pids", {}).values()))

    # running things in nodes -----------------------------------------------
    def cmd(self, node, argv):
        return netns.in_ns(self.ns(node), argv)

    def run(self, node, argv, check=True, timeout=60, **kw):
        """Run argv in node (subprocess.run, text, output captured by default)."""
        if not os.path.exists(self.ns_path(node)):
            raise LabError(f"the lab {self.prefix!r} is not up (no netns {self.ns(node)})")
        return _run(self.cmd(node, argv), check=check, timeout=timeout, **kw)

    def exec(self, node, argv):
        """Replace this process with argv running in node."""
        if not argv:
            raise LabError("no command given (xdplb lab exec NODE -- CMD...)")
        if not os.path.exists(self.ns_path(node)):
            raise LabError(f"the lab {self.prefix!r} is not up (no netns {self.ns(node)})")
        argv = self.cmd(node, argv)
        os.execvpe(argv[0], argv, child_env())

    def adm(self, *args, check=True):
        """xdplbadm in the lb; returns the CompletedProcess."""
        return self.run("lb", [*tool("xdplbadm"), *args], check=check)

    def xdplb(self, *args, check=True):
        """xdplb in the lb; returns the CompletedProcess."""
        return self.run("lb", [*tool("xdplb"), *args], check=check)

    def attached(self):
        """The lb's interfaces running an XDP program."""
        lb = self.node("lb")
        return [dev for dev in self.lb_ifs if lb.xdp(dev).prog_id]

    def curl(self, url=f"http://{VIP}/", *extra, timeout=5, node="client"):
        """One HTTP GET from node (the client by default); body text ('' on failure)."""
        p = self.run(node, ["curl", "-s", "--max-time", str(timeout), *extra, url],
                     check=False, timeout=timeout + 10)
        return p.stdout if p.returncode == 0 else ""

    def pin_folder(self):
        """The xdplb state folder of the lb netns (None if no bpffs)."""
        try:
            root = xstate.bpffs_root()
        except xstate.StateError:
            return None
        return os.path.join(root, "xdplb", f"net{os.stat(self.ns_path('lb')).st_ino}")

    # building --------------------------------------------------------------
    def up(self, mode="native", two_arm=False):
        """Build the lab (the two-armed one if two_arm); False if it was already up."""
        if self.is_up():
            if self.two_arm != two_arm:
                raise LabError(f"lab {self.prefix!r} is up as the "
                               f"{'two' if self.two_arm else 'one'}-armed lab: "
                               "`xdplb lab down` first")
            self.say(f"lab {self.prefix!r} is already up")
            return False
        if self._any_existing() or self._record():
            self.say(f"lab {self.prefix!r} is half built: tearing it down first")
            self.down(quiet=True)
        self._two_arm = two_arm
        try:
            self._build(mode)
        except BaseException:
            self.say(f"lab {self.prefix!r}: build failed, cleaning up")
            with contextlib.suppress(Exception):
                self.down(quiet=True)
            raise
        return True

    def _build(self, mode):
        self._nodes = T.build(self.topology, self.prefix).ns
        self.say(f"namespaces: {' '.join(self.ns(n) for n in self.topology.nodes)}")
        if self.two_arm:
            self.say(f"client {CLIENT_IP} routes {VIP} via the lb {LB_CLIENT_IP} "
                     f"({lb_if('client')}); backends "
                     + ", ".join(f"{n} {a}" for n, a in BACKENDS.items())
                     + f" on one segment (bridge br0 in {self.ns(SW)}) with the lb's "
                     f"{LB_RS_IF} {LB_RS_IP}/24 and local address {LADDR}, no route to "
                     "the client; ip_forward=1 in the lb")
            self.say(f"veth ends facing xdplb ({PEER_IF} of client, {', '.join(BACKENDS)}; "
                     f"port-lb of {SW}): GRO on, TX checksum offload off; port-lb runs "
                     "XDP_PASS (frames sent back by XDP_TX need it)")
        else:
            self.say(f"client {CLIENT_IP} routes {VIP} via the lb {LB_CLIENT_IP}; backends "
                     + ", ".join(f"{n} {a}" for n, a in BACKENDS.items())
                     + f" route via {LB_RS_IP}; ip_forward=1 in the lb")
            self.say(f"veth peer ends ({PEER_IF} of client, {', '.join(BACKENDS)}): GRO on "
                     "(redirected frames need it), TX checksum offload off (XDP rewrites "
                     "need full checksums); the backends' run XDP_PASS (frames sent back "
                     "by XDP_TX need it)")
        # backend servers: every address of their own namespace (explicitly; the
        # default is loopback), which holds only lo and the lab's veth, because
        # under direct routing (-g) they must also answer on a VIP added to lo
        pids = {}
        for i, node in enumerate(BACKENDS, 1):
            proc = subprocess.Popen(
                self.cmd(node, [sys.executable, "-m", "xdplb.httpd", str(i), "--port", "80",
                                "--udp", "80", "--bind", "::"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, env=child_env(), cwd="/")
            pids[node] = proc.pid
        self._save({"prefix": self.prefix, "pids": pids, "mode": mode,
                    "two_arm": self.two_arm, "created": time.time()})
        for node in BACKENDS:
            self._wait_listening(node, pids[node])
        self.say("backends: " + ", ".join(
            f"{n} {a} 'This is service #{i}' (pid {pids[n]})"
            for i, (n, a) in enumerate(BACKENDS.items(), 1))
            + " on TCP and UDP port 80")
        # resolve neighbours both ways, as on a director that has seen traffic
        # (no ping on a minimal Debian: a refused TCP connection does it too)
        self.run("client", ["curl", "-s", "-m", "2", f"http://{LB_CLIENT_IP}:9/"], check=False)
        for addr in BACKENDS.values():
            self.run("lb", ["curl", "-s", "-m", "2", "-o", "/dev/null", f"http://{addr}/"],
                     check=False)
            if self.two_arm:  # the backends learn the local address's MAC
                self.run("lb", ["curl", "-s", "-m", "2", "-o", "/dev/null", "--interface",
                                LADDR, f"http://{addr}/"], check=False)
        # xdplb in the lb netns: its own pinned state
        p = self.xdplb("attach", "--mode", mode, *self.lb_ifs)
        for line in p.stdout.splitlines():
            self.say(f"lb: {line}")
        if self.two_arm:
            self._full_nat_services()
        self.say(f"lab {self.prefix!r} is up: `xdplb lab exec client -- curl -s http://{VIP}/`")

    def _full_nat_services(self):
        """TCP and UDP VIP:80, rr over the three backends by full-NAT, through
        the local address LADDR on the backends' side."""
        for proto in ("-t", "-u"):
            self.adm("-A", proto, f"{VIP}:80", "-s", "rr")
            self.adm("-P", proto, f"{VIP}:80", "-z", LADDR, "-F", LB_RS_IF)
            for addr in BACKENDS.values():
                self.adm("-a", proto, f"{VIP}:80", "-r", f"{addr}:80", "--fullnat")
        for line in self.adm("-L", "-n").stdout.splitlines():
            self.say(f"lb: {line}")

    def _wait_listening(self, node, pid, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.node(node).tcp_listening(80):
                return
            if not _alive_httpd(pid):
                raise LabError(f"the HTTP server of {node} (pid {pid}) died")
            time.sleep(0.1)
        raise LabError(f"the HTTP server of {node} is not listening after {timeout}s")

    def _save(self, rec):
        xstate.private_dir(RUN_DIR)
        tmp = self.state_file + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # root-only, whatever the umask: O_EXCL|O_NOFOLLOW never reuse what is there
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, self.state_file)

    def start_server(self, node, argv):
        """Start a long-running helper in node; its pid is recorded and killed on down."""
        proc = subprocess.Popen(self.cmd(node, argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=child_env(), cwd="/")
        rec = self._record() or {"prefix": self.prefix, "pids": {}}
        rec.setdefault("extra_pids", []).append(proc.pid)
        self._save(rec)
        return proc

    # tearing down ----------------------------------------------------------
    def down(self, quiet=False):
        """Remove everything the lab made; idempotent. Returns what it removed."""
        removed = []
        rec = self._record() or {}
        pids = list((rec.get("pids") or {}).values()) + list(rec.get("extra_pids") or [])
        killed = _kill([p for p in pids if _alive_httpd(p) or p in rec.get("extra_pids", [])
                        and _alive(p)])
        if killed:
            removed.append(f"servers (pids {' '.join(map(str, killed))})")
        if os.path.exists(self.ns_path("lb")):
            folder = self.pin_folder()
            p = self.xdplb("detach", check=False)
            if p.returncode == 0 and p.stdout.strip():
                removed.append("xdplb: " + "; ".join(p.stdout.strip().splitlines()))
            if folder:
                if os.path.exists(folder):
                    removed.append(f"pins {folder}")
                xstate.remove(folder)
        for ns in self._nodes.values():
            ns.close()
        self._nodes = {}
        # either lab's namespaces: the two-armed one holds the other's and sw
        removed += [f"netns {name}" for name in T.remove(TOPOLOGY_TWO_ARM, self.prefix)]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)
        self._two_arm = None
        if not quiet:
            if removed:
                for what in removed:
                    self.say(f"removed {what}")
                self.say(f"lab {self.prefix!r} is down")
            else:
                self.say(f"lab {self.prefix!r} is not up: nothing to remove")
        return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _alive_httpd(pid):
    """pid is alive and is one of our servers (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"xdplb" in f.read()
    except OSError:
        return False


def _kill(pids, timeout=3):
    pids = [p for p in pids if p and _alive(p)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) and not _zombie(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid) and not _zombie(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for pid in pids:  # reap our own children (tests start servers from this process)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    return pids


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
