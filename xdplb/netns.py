"""One network namespace: create it, configure it, enter it, run programs in it.

A namespace is created as `ip netns add` creates one, bound under /run/netns
(pyroute2's netns.attach), so `ip netns exec` and nsenter work on it. Links,
addresses, routes, neighbours and XDP state go through netlink (pyroute2's
IPRoute), device features through pyroute2's ethtool, sysctls through
/proc/sys.
Each of these is a socket or file that belongs to the netns of the thread
that opened it, so this thread opens it after entering the namespace (setns).
Nothing forks: pyroute2's netns.create and IPRoute(netns=...) would fork a
child that inherits this process's Python signal handlers and, killed with
SIGTERM, runs the parent's clean-up as its own (docs/kernel-and-lab.md §3).

Programs run inside with `nsenter --net=/run/netns/NAME`, never `ip netns
exec`: that also remounts /sys (hiding /sys/fs/bpf) and makes / a slave
mount, which fails where / is not a mount point, as in a chroot (§3). Python
3.11 has no os.setns, so entering from Python goes through libc.

pyroute2 takes about 0.25 s to import, so it is imported where a namespace is
built or inspected: `xdplb` commands that never do pay nothing for it.
"""
import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from typing import NamedTuple

CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02          # linux/if_addr.h
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


class NetnsError(Exception):
    """A namespace operation or command failed; the message says which and why."""


class Xdp(NamedTuple):
    """The XDP program on a link: `ip link`'s mode word (None, "xdp" = native,
    "xdpgeneric", "xdpoffload", "xdpmulti") and its id (0 = none)."""
    mode: str | None
    prog_id: int


def setns(fd, nstype=CLONE_NEWNET):
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def path(name):
    return os.path.join(NETNS_DIR, name)


def in_ns(name, argv):
    """argv run inside namespace name."""
    return ["nsenter", f"--net={path(name)}", *argv]


def run(argv, check=True, timeout=60, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(argv, timeout=timeout, **kw)
    if check and r.returncode:
        err = (r.stderr or "").strip() if isinstance(r.stderr, str) else ""
        raise NetnsError(f"`{' '.join(argv)}` failed ({r.returncode}): {err}")
    return r


class NetNs:
    """The namespace /run/netns/NAME (NetNs.create makes it). Holds one netlink
    socket inside it, opened on first use: close() (or delete()) releases it,
    since an open socket keeps a deleted namespace and its links alive."""

    def __init__(self, name):
        self.name = name
        self.path = path(name)
        self._saved = None
        self._ipr = None

    @classmethod
    def create(cls, name):
        """A new namespace: unshared by this thread, bound at /run/netns/NAME, left."""
        from pyroute2 import netns as pr_netns
        ns = cls(name)
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            with ns._doing("create"):
                if _libc.unshare(CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"unshare: {os.strerror(err)}")
                pr_netns.attach(ns.path, threading.get_native_id())
        finally:
            setns(saved)
            os.close(saved)
        return ns

    @contextlib.contextmanager
    def _doing(self, what):
        """Netlink and OS errors of `what` as NetnsError naming the namespace."""
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            yield
        except (NetlinkError, OSError) as e:
            raise NetnsError(f"netns {self.name}: {what}: {e}") from e

    @property
    def ipr(self):
        """pyroute2's IPRoute on a netlink socket opened inside this namespace."""
        if self._ipr is None:
            from pyroute2 import IPRoute
            with self.entered(), self._doing("open netlink"):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
            self._ipr = IPRoute(fileno=sock.detach())
        return self._ipr

    def close(self):
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # running programs inside -------------------------------------------------
    def cmd(self, argv):
        return in_ns(self.name, argv)

    def run(self, argv, check=True, **kw):
        return run(self.cmd(argv), check=check, **kw)

    # links, addresses, routes, neighbours -----------------------------------------
    def ifindex(self, dev):
        with self._doing(f"find {dev}"):
            found = self.ipr.link_lookup(ifname=dev)
        if not found:
            raise NetnsError(f"netns {self.name}: no link {dev}")
        return found[0]

    def _link(self, dev):
        with self._doing(f"read {dev}"):
            return self.ipr.link("get", index=self.ifindex(dev))[0]

    def mac(self, dev):
        return self._link(dev).get("IFLA_ADDRESS")

    def add_veth(self, dev, peer, mac=None, peer_mac=None, peer_ns=None):
        """The veth pair dev <-> peer, peer created in namespace peer_ns (a NetNs)."""
        spec = {"ifname": peer, **({"address": peer_mac} if peer_mac else {})}
        if peer_ns is not None:
            spec["net_ns_fd"] = peer_ns.path
        with self._doing(f"add veth {dev} <-> {peer}"):
            self.ipr.link("add", ifname=dev, kind="veth", peer=spec,
                          **({"address": mac} if mac else {}))

    def add_bridge(self, dev, ports):
        """The bridge dev (up) with ports (links of this namespace) enslaved.
        No STP: a port forwards as soon as it is up."""
        with self._doing(f"add bridge {dev}"):
            self.ipr.link("add", ifname=dev, kind="bridge", br_stp_state=0)
            master = self.ifindex(dev)
            for port in ports:
                self.ipr.link("set", index=self.ifindex(port), master=master)
            self.ipr.link("set", index=master, state="up")

    def link_up(self, dev):
        with self._doing(f"set {dev} up"):
            self.ipr.link("set", index=self.ifindex(dev), state="up")

    def set_mtu(self, dev, mtu):
        with self._doing(f"set the MTU of {dev} to {mtu}"):
            self.ipr.link("set", index=self.ifindex(dev), mtu=mtu)

    def addr(self, op, dev, cidr):
        """op ("add", "del", "replace") the address cidr ("10.0.0.1/24",
        "fd00:1::1/64") on dev. An IPv6 address skips duplicate address
        detection (nodad): usable at once, as the links are the test's own."""
        address, _, plen = cidr.partition("/")
        kw = {}
        if ":" in address:
            kw = {"family": socket.AF_INET6, "flags": IFA_F_NODAD}
        with self._doing(f"{op} address {cidr} on {dev}"):
            self.ipr.addr(op, index=self.ifindex(dev), address=address,
                          prefixlen=int(plen or (128 if kw else 32)), **kw)

    def route(self, op, dst, via=None, dev=None, onlink=False):
        """op ("add", "del") the route dst ("default" or a prefix; IPv6 when
        it or the gateway is) as `ip route` does: added with protocol boot,
        scope link when there is no gateway; deleted by whatever else is given
        (scope nowhere: any)."""
        from pyroute2.netlink.rtnl import rt_proto, rt_scope
        from pyroute2.netlink.rtnl.rtmsg import RTNH_F_ONLINK
        kw = {"dst": "0.0.0.0/0" if dst == "default" else dst}
        if ":" in dst or (via and ":" in via):
            kw = {"dst": "::/0" if dst == "default" else dst,
                  "family": socket.AF_INET6}
        if op == "del":
            kw["scope"] = rt_scope["nowhere"]
        else:
            kw.update(proto=rt_proto["boot"], scope=rt_scope["universe" if via else "link"])
        if via:
            kw["gateway"] = via
        if dev:
            kw["oif"] = self.ifindex(dev)
        if onlink:
            kw["flags"] = RTNH_F_ONLINK
        with self._doing(f"{op} route {dst}"):
            self.ipr.route(op, **kw)

    def neigh_permanent(self, dev, addr, mac):
        """The permanent neighbour addr -> mac on dev (replacing any entry)."""
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with self._doing(f"neighbour {addr} on {dev}"):
            self.ipr.neigh("replace", dst=addr, lladdr=mac, ifindex=self.ifindex(dev),
                           state="permanent", family=family)

    # XDP --------------------------------------------------------------------------
    def xdp(self, dev):
        """The XDP program on dev, from the link's IFLA_XDP attributes."""
        attrs = self._link(dev).get("IFLA_XDP")
        if attrs is None:
            return Xdp(None, 0)
        ids = (attrs.get(a) for a in ("IFLA_XDP_PROG_ID", "IFLA_XDP_DRV_PROG_ID",
                                      "IFLA_XDP_SKB_PROG_ID", "IFLA_XDP_HW_PROG_ID"))
        return Xdp(attrs.get("IFLA_XDP_ATTACHED"), next((i for i in ids if i), 0))

    def xdp_attach(self, dev, prog_fd, flags):
        """Attach prog_fd to dev (flags: bpfsys.XDP_FLAGS_*) with libbpf."""
        from . import bpfsys
        idx = self.ifindex(dev)
        with self.entered():  # libbpf's netlink socket is this thread's netns
            bpfsys.xdp_attach(idx, prog_fd, flags)

    def xdp_pass(self, dev):
        """A native XDP program passing every frame on dev, the end of a veth
        whose peer runs XDP: frames that XDP sends back out of the peer
        (XDP_TX) are only delivered to an end running XDP itself (veth
        kicks the receiving end's NAPI for them only then). Goes with dev."""
        from . import bpfsys
        fd = bpfsys.xdp_pass_prog()
        try:
            self.xdp_attach(dev, fd, bpfsys.XDP_FLAGS_DRV_MODE)
        finally:
            os.close(fd)

    def xdp_detach(self, dev, flags):
        from . import bpfsys
        idx = self.ifindex(dev)
        with self.entered():
            bpfsys.xdp_detach(idx, flags)

    # device features, sysctls (through this thread, entered) ---------------------
    def face_xdp(self, dev):
        """`ethtool -K dev gro on tx off` for the end of a veth whose peer runs
        XDP: frames redirected into the pair are dropped unless this end has
        GRO (or XDP), and veth leaves TCP checksums partial unless TX checksum
        offload is off, which an XDP NAT rewrite cannot complete
        (docs/kernel-and-lab.md §5)."""
        from pyroute2.ethtool import Ethtool
        with self.entered(), self._doing(f"ethtool features of {dev}"):
            et = Ethtool()     # (Debian 12's pyroute2 0.7 has no context manager for it)
            try:
                feats = et.get_features(dev)
                for name, f in feats.features.items():
                    if name.startswith("tx-checksum-") and f.available:
                        f.enable = False
                feats.features["rx-gro"].enable = True
                et.set_features(dev, feats)
            finally:
                et.close()

    def sysctl(self, key, value):
        """Write the sysctl key ("net.ipv4.ip_forward") in this namespace."""
        with self.entered(), self._doing(f"sysctl {key}={value}"):
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(f"{value}\n")

    def tcp_listening(self, port):
        """True if a TCP socket (IPv4 or IPv6) listens on port in this namespace."""
        rows = []
        with self.entered():
            for table in ("tcp", "tcp6"):
                with open(f"/proc/thread-self/net/{table}") as f:
                    rows += [line.split() for line in f.readlines()[1:]]
        return any(r[3] == "0A" and int(r[1].rpartition(":")[2], 16) == port  # 0A: LISTEN
                   for r in rows)

    # entering -----------------------------------------------------------------
    def enter(self):
        """Move the calling thread into the namespace; leave() comes back."""
        if self._saved is not None:
            return
        self._saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            setns(fd)
        except BaseException:
            os.close(self._saved)
            self._saved = None
            raise
        finally:
            os.close(fd)

    def leave(self):
        if self._saved is None:
            return
        try:
            setns(self._saved)
        finally:
            os.close(self._saved)
            self._saved = None

    @contextlib.contextmanager
    def entered(self):
        """Inside the namespace for the block (a no-op if already inside)."""
        if self._saved is not None:
            yield self
            return
        self.enter()
        try:
            yield self
        finally:
            self.leave()

    def exists(self):
        return os.path.exists(self.path)

    def delete(self):
        """Leave and close, then remove the namespace (its links go with it)."""
        from pyroute2 import netns as pr_netns
        self.leave()
        self.close()
        if self.exists():
            with self._doing("delete"):
                pr_netns.remove(self.path)
