"""Shared pieces of `xdplb bench`: errors, tools, bpffs, live-frame injection,
and the three-namespace topology (client -> balancer -> real server) the
forwarding, connection-rate and control-plane parts build and remove."""
import contextlib
import ctypes as C
import os
import shutil
import socket
import subprocess
import sys
import time

from .. import bpfsys
from .. import topology as T
from ..netns import NetnsError
from ..state import private_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.dirname(os.path.abspath(sys.executable))


class BenchError(Exception):
    pass


def tool(name):
    """argv prefix of one of the package's console scripts (next to this Python)."""
    path = os.path.join(BIN_DIR, name)
    if os.path.exists(path):
        return [path]
    mod = {"xdplbadm": "xdplb.adm", "xdplb": "xdplb.cli"}[name]
    return [sys.executable, "-m", mod]


def child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def bpffs():
    from ..state import bpffs_root
    return bpffs_root(create=True)


def pin_folder(tag):
    """A private xdplb state folder <bpffs>/xdplb/bench-<pid>-<tag>, removed on exit."""
    return private_folder(f"bench-{os.getpid()}-{tag}")


def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def ipvs_available():
    """Kernel IPVS is usable where /proc/net/ip_vs exists (no modules can load here)."""
    return os.path.exists("/proc/net/ip_vs") and which("ipvsadm") is not None


def inject(prog_fd, frame, count, ifindex, batch=64):
    """Run prog on count copies of frame as if received on ifindex (of the
    calling thread's netns), acting on the verdicts for real (live frames).
    Returns the wall time in seconds."""
    t0 = time.perf_counter()
    bpfsys.prog_test_run(prog_fd, frame, ingress_ifindex=ifindex, repeat=count,
                         live_frames=True, batch_size=batch)
    return time.perf_counter() - t0


def percpu_sum(table, idx=0):
    return sum(int(getattr(v, "value", v)) for v in table[C.c_int(idx)])


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def udp_frame(src, dst, sport, dport, smac, dmac, length=64):
    """Ethernet/IPv4/UDP, UDP checksum 0 (none), zero payload, `length` bytes."""
    import struct
    ulen = length - 14 - 20
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + bytes(ulen - 8)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0x4000, 64, socket.IPPROTO_UDP,
                     0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + csum(ip).to_bytes(2, "big") + ip[12:]
    return mac_bytes(dmac) + mac_bytes(smac) + b"\x08\x00" + ip + udp


# ---- topology -------------------------------------------------------------------

CL_IP, CL_MAC = "10.0.0.2", "02:00:0a:00:00:02"
LB_CL_IP, LB_CL_MAC = "10.0.0.1", "02:00:0a:00:00:01"
LB_RS_IP, LB_RS_MAC = "10.2.0.1", "02:00:0a:02:00:01"
RS_IP, RS_MAC = "10.2.0.2", "02:00:0a:02:00:02"
VIP, VPORT, RPORT = "10.96.0.10", 80, 8080


def _topology():
    """client ns (c0) --veth-- lb ns (l0 | l1) --veth-- rs ns (s0), as data
    (xdplb/topology.py). The client routes the VIP via the balancer; the
    real server routes everything back via it (Masq replies); permanent
    neighbours everywhere, ip_forward=1 and rp_filter=0 in the balancer. The
    client's and the real server's ends face the balancer's XDP (GRO on, TX
    checksum offload off: see README's lab)."""
    sysctls = [("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
               ("net.ipv4.conf.default.rp_filter", 0), ("net.ipv4.conf.l0.rp_filter", 0),
               ("net.ipv4.conf.l1.rp_filter", 0)]
    return T.Topology(
        nodes=("cl", "lb", "rs"),
        veths=(T.Veth(T.End("lb", "l0", LB_CL_MAC, (f"{LB_CL_IP}/24",)),
                      T.End("cl", "c0", CL_MAC, (f"{CL_IP}/24",), faces_xdp=True)),
               T.Veth(T.End("lb", "l1", LB_RS_MAC, (f"{LB_RS_IP}/24",)),
                      T.End("rs", "s0", RS_MAC, (f"{RS_IP}/24",), faces_xdp=True))),
        routes=(T.Route("cl", f"{VIP}/32", via=LB_CL_IP),
                T.Route("rs", "default", via=LB_RS_IP)),
        neighbours=(T.Neigh("lb", "l0", CL_IP, CL_MAC), T.Neigh("lb", "l1", RS_IP, RS_MAC),
                    T.Neigh("cl", "c0", LB_CL_IP, LB_CL_MAC),
                    T.Neigh("rs", "s0", LB_RS_IP, LB_RS_MAC)),
        sysctls=tuple(T.Sysctl("lb", k, v) for k, v in sysctls))


TOPOLOGY = _topology()


class Topo:
    """topo (TOPOLOGY or a variant of it) built under the prefix
    xb<pid><tag>; .ns[node] is a NetNs."""

    def __init__(self, tag, topo=TOPOLOGY):
        self.prefix = f"xb{os.getpid()}{tag}"
        self.topology = topo
        self.ns = {}

    def __enter__(self):
        try:
            self.net = T.build(self.topology, self.prefix)
            self.ns = self.net.ns
            # Fair to the kernel paths: real NICs hand over verified checksums
            # (absent until nf_conntrack is loaded).
            with contextlib.suppress(NetnsError):
                self.ns["lb"].sysctl("net.netfilter.nf_conntrack_checksum", 0)
            return self
        except NetnsError as e:
            raise BenchError(str(e)) from None

    def ifindex(self, node, dev):
        return self.ns[node].ifindex(dev)

    def xdp(self, node, dev, prog_fd):
        """Attach prog_fd natively to dev in node (0 = detach)."""
        if prog_fd:
            self.ns[node].xdp_attach(dev, prog_fd, bpfsys.XDP_FLAGS_DRV_MODE)
        else:
            with contextlib.suppress(NetnsError, OSError):
                self.ns[node].xdp_detach(dev, bpfsys.XDP_FLAGS_DRV_MODE)

    def run(self, node, argv, check=True, **kw):
        try:
            return self.ns[node].run(argv, check=check, **kw)
        except NetnsError as e:
            raise BenchError(str(e)) from None

    def cmd(self, node, argv):
        return self.ns[node].cmd(argv)

    def close(self):
        self.ns = {}
        self.net.close()

    def __exit__(self, *exc):
        self.close()


def leftovers(pid=None):
    """Namespaces and pins a bench of process pid (default: this one) left behind."""
    pid = pid or os.getpid()
    out = []
    with contextlib.suppress(OSError):
        out += [n for n in os.listdir("/run/netns") if n.startswith(f"xb{pid}")
                or n.startswith(f"xdplb-bench-{pid}")]
    for root in ("/sys/fs/bpf/xdplb", "/run/xdplb/bpffs/xdplb"):
        with contextlib.suppress(OSError):
            out += [os.path.join(root, n) for n in os.listdir(root)
                    if n.startswith(f"bench-{pid}")]
    return out


def run_timed(argv, stdin=None, timeout=300, env=None):
    """(seconds, CompletedProcess) of one command; stdin is text or None."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                       env=env)
    return time.perf_counter() - t0, p
