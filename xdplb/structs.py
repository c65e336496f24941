"""ctypes mirrors of bpf/xdplb.h: the one place Python spells out a layout.

tests/test_structs.py compiles the header with the C compiler and fails if a
size, an offset or a constant here differs from it. A mirror is named after
its C struct, but for the values of the services and dests maps:
SvcEntry and DestEntry, never to be confused with model.Service and
model.Destination, the control plane's view of the same things.
"""
import ctypes as C
import struct

XDPLB_MAX_SERVICES = 16384
XDPLB_MAX_DESTS = 131072
XDPLB_MAX_CONNS = 262144
XDPLB_MAX_ASSURED = 262144
XDPLB_MAX_RING = 1048576
XDPLB_MAX_PORTS = 256
XDPLB_LIST_MAX = 64
XDPLB_MAX_LBLC = 65536
XDPLB_MAX_SERVICES6 = 4096
XDPLB_MAX_CONNS6 = 65536
XDPLB_MAX_ASSURED6 = 65536

XDPLB_AF_INET = 2
XDPLB_AF_INET6 = 10

IP_VS_CONN_F_MASQ = 0
IP_VS_CONN_F_LOCALNODE = 1
IP_VS_CONN_F_TUNNEL = 2
IP_VS_CONN_F_DROUTE = 3
XDPLB_CONN_F_FULLNAT = 5

IP_VS_CONN_F_TUNNEL_TYPE_IPIP = 0
IP_VS_CONN_F_TUNNEL_TYPE_GUE = 1
IP_VS_CONN_F_TUNNEL_TYPE_GRE = 2
IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM = 0
IP_VS_TUNNEL_ENCAP_FLAG_CSUM = 1 << 0
IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM = 1 << 1

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002
IP_VS_SVC_F_ONEPACKET = 0x0004
IP_VS_SVC_F_SCHED1 = 0x0008
IP_VS_SVC_F_SCHED2 = 0x0010
IP_VS_SVC_F_SCHED3 = 0x0020
XDPLB_SVC_F_HAIRPIN = 0x00010000

XDPLB_SCHED_RR = 1
XDPLB_SCHED_WRR = 2
XDPLB_SCHED_LC = 3
XDPLB_SCHED_WLC = 4
XDPLB_SCHED_SED = 5
XDPLB_SCHED_NQ = 6
XDPLB_SCHED_FO = 7
XDPLB_SCHED_OVF = 8
XDPLB_SCHED_SH = 9
XDPLB_SCHED_DH = 10
XDPLB_SCHED_MH = 11
XDPLB_SCHED_LBLC = 12
XDPLB_SCHED_LBLCR = 13

XDPLB_SH_TAB_SIZE = 256
XDPLB_DH_TAB_SIZE = 256
XDPLB_MH_TAB_SIZE = 4093
XDPLB_MH_FALLBACK_PROBES = 256

XDPLB_LIST_F_SKIP_ZERO = 0x01
XDPLB_LIST_F_SKIP_OVER = 0x02
XDPLB_LIST_F_UNIT = 0x04
XDPLB_LIST_F_IDLE = 0x08

XDPLB_LBLCR_SET = 8
XDPLB_LBLCR_EXPIRATION_NS = 24 * 3600 * 1000000000

XDPLB_DEST_F_AVAILABLE = 0x01

IP_VS_TCP_S_NONE = 0
IP_VS_TCP_S_ESTABLISHED = 1
IP_VS_TCP_S_SYN_SENT = 2
IP_VS_TCP_S_SYN_RECV = 3
IP_VS_TCP_S_FIN_WAIT = 4
IP_VS_TCP_S_TIME_WAIT = 5
IP_VS_TCP_S_CLOSE = 6
IP_VS_TCP_S_CLOSE_WAIT = 7
IP_VS_TCP_S_LAST_ACK = 8
IP_VS_TCP_S_LISTEN = 9
IP_VS_TCP_S_SYNACK = 10
IP_VS_TCP_S_LAST = 11

XDPLB_DIR_IN = 0
XDPLB_DIR_TEMPLATE = 2

XDPLB_TMO_UDP = 11
XDPLB_TMO_MAX = 16

XDPLB_SYSCTL_CONN_REUSE_MODE = 0
XDPLB_SYSCTL_EXPIRE_NODEST_CONN = 1
XDPLB_SYSCTL_EXPIRE_QUIESCENT_TEMPLATE = 2
XDPLB_SYSCTL_SLOPPY_TCP = 3
XDPLB_SYSCTL_MAX = 8

XDPLB_LAYOUT_VERSION = 7

XDPLB_RS_SVC_MAX = 32
XDPLB_MAX_RS = XDPLB_MAX_DESTS
XDPLB_RS_FILTER_BITS = 16
XDPLB_RS_FILTER_WORDS = 1 << (XDPLB_RS_FILTER_BITS - 6)

XDPLB_RING_GEN_BIT = 0x80000000

XDPLB_MAX_FRAGS = 16384
XDPLB_FRAG_TTL_NS = 1000000000

XDPLB_TUN_SRC_SLOTS = XDPLB_MAX_PORTS * 16
XDPLB_LADDR_MAX = 16

XDPLB_MAX_FNAT = XDPLB_MAX_CONNS + XDPLB_MAX_ASSURED
XDPLB_MAX_FNAT6 = XDPLB_MAX_CONNS6 + XDPLB_MAX_ASSURED6
XDPLB_FNAT_PORT_MIN = 1024
XDPLB_FNAT_PORT_MAX = 65535
XDPLB_FNAT_PROBES = 8

# enum xdplb_counter
COUNTERS = ("rx", "pass", "fwd", "to_stack", "no_dest", "conn_full",
            "dest_gone", "no_route", "tail_call", "assure_full", "frag_untracked",
            "frag_overlap", "tun_too_big", "tun_no_src", "frag_needed", "too_big",
            "icmp_xlate", "icmp_limited", "fnat_no_port")
# counted as they happen, not as a frame's verdict
EVENTS = ("assure_full", "icmp_xlate", "icmp_limited")
# the verdicts: every frame ends in exactly one (rx is their sum)
VERDICTS = tuple(c for c in COUNTERS[1:] if c not in EVENTS)
XDPLB_CNT_MAX = len(COUNTERS)

XDPLB_ICMP_RATE = 1000
XDPLB_ICMP_BURST = 50

XDPLB_PROG_TUNNEL = 14
XDPLB_PROG_ICMP = 17
XDPLB_PROG_CONN = 15
XDPLB_PROG_FRAG = 16
XDPLB_PROG_MAIN6 = 18
XDPLB_PROG_CONN6 = 19
XDPLB_PROG_ICMP6 = 20
XDPLB_PROG_TUNNEL6 = 21
XDPLB_PROG_SCHED6 = 32
XDPLB_PROG_MAX = 48


class SvcKey(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 4), ("port", C.c_uint16), ("proto", C.c_uint8),
                ("pad", C.c_uint8)]


class SvcEntry(C.Structure):
    _fields_ = [("ring_base", C.c_uint64), ("slot", C.c_uint32), ("seq", C.c_uint32),
                ("flags", C.c_uint32), ("timeout", C.c_uint32), ("netmask", C.c_uint8 * 4),
                ("ring_len", C.c_uint32), ("ring_prefix", C.c_uint32),
                ("ring_gen", C.c_uint32), ("sched_cl", C.c_uint32), ("sched_cw", C.c_int32),
                ("sched", C.c_uint8), ("list_flags", C.c_uint8), ("list_b", C.c_uint8),
                ("list_c", C.c_uint8), ("list_a", C.c_uint16), ("pad", C.c_uint8 * 2)]


class DestEntry(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 4), ("port", C.c_uint16), ("fwd", C.c_uint8),
                ("flags", C.c_uint8), ("svc_slot", C.c_uint32), ("seq", C.c_uint32),
                ("weight", C.c_uint32), ("u_threshold", C.c_uint32),
                ("l_threshold", C.c_uint32), ("last_weight", C.c_uint32), ("next", C.c_uint32),
                ("tun_port", C.c_uint16), ("tun_type", C.c_uint8), ("tun_flags", C.c_uint8),
                ("addr6", C.c_uint8 * 16), ("af", C.c_uint8), ("pad", C.c_uint8 * 3)]


class DestConns(C.Structure):
    _fields_ = [("active", C.c_int64), ("inactive", C.c_int64), ("persist", C.c_int64),
                ("overload", C.c_uint64)]


class SvcDestEnt(C.Structure):
    _fields_ = [("slot", C.c_uint32), ("weight", C.c_uint32)]


class SvcDests(C.Structure):
    _fields_ = [("n", C.c_uint32), ("pad", C.c_uint32), ("d", SvcDestEnt * XDPLB_LIST_MAX)]


class Alloc(C.Structure):
    _fields_ = [("dest_seq", C.c_uint32), ("dest_top", C.c_uint32), ("dest_free", C.c_uint32),
                ("ring_used", C.c_uint32)]


class LblcKey(C.Structure):
    _fields_ = [("svc_slot", C.c_uint32), ("addr", C.c_uint8 * 4)]


class LblcEnt(C.Structure):
    _fields_ = [("n", C.c_uint32), ("pad", C.c_uint32), ("slot", C.c_uint32 * XDPLB_LBLCR_SET),
                ("last_used", C.c_uint64), ("last_mod", C.c_uint64)]


class RsKey(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 4), ("port", C.c_uint16), ("proto", C.c_uint8),
                ("pad", C.c_uint8)]


class RsSvcs(C.Structure):
    _fields_ = [("n", C.c_uint32), ("pad", C.c_uint32), ("svc", SvcKey * XDPLB_RS_SVC_MAX)]


class SvcKey6(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 16), ("port", C.c_uint16), ("proto", C.c_uint8),
                ("pad", C.c_uint8)]


class RsKey6(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 16), ("port", C.c_uint16), ("proto", C.c_uint8),
                ("pad", C.c_uint8)]


class RsSvcs6(C.Structure):
    _fields_ = [("n", C.c_uint32), ("pad", C.c_uint32), ("svc", SvcKey6 * XDPLB_RS_SVC_MAX)]


class RingKey(C.Structure):
    _fields_ = [("svc_slot", C.c_uint32), ("index", C.c_uint32)]


class SchedPos(C.Structure):
    _fields_ = [("pos", C.c_uint64)]


class ConnKey(C.Structure):
    _fields_ = [("saddr", C.c_uint8 * 4), ("daddr", C.c_uint8 * 4), ("sport", C.c_uint16),
                ("dport", C.c_uint16), ("proto", C.c_uint8), ("pad", C.c_uint8 * 3)]


class Conn(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 4), ("port", C.c_uint16), ("dir", C.c_uint8),
                ("fwd", C.c_uint8), ("dest_slot", C.c_uint32), ("svc_slot", C.c_uint32),
                ("ifindex", C.c_uint32), ("smac", C.c_uint8 * 6), ("dmac", C.c_uint8 * 6),
                ("state", C.c_uint8), ("timeout_hi", C.c_uint8), ("timeout_lo", C.c_uint16),
                ("dest_seq", C.c_uint32), ("last_seen", C.c_uint64),
                ("laddr", C.c_uint8 * 4), ("lport", C.c_uint16), ("pad", C.c_uint8 * 2)]

    @property
    def timeout(self):
        """Seconds the entry may idle (24 bits; 0 = the state's default)."""
        return self.timeout_hi << 16 | self.timeout_lo

    @timeout.setter
    def timeout(self, t):
        t = min(t, 0xffffff)
        self.timeout_hi, self.timeout_lo = t >> 16, t & 0xffff


class TunSrc6(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 16)]


class ConnKey6(C.Structure):
    _fields_ = [("saddr", C.c_uint8 * 16), ("daddr", C.c_uint8 * 16), ("sport", C.c_uint16),
                ("dport", C.c_uint16), ("proto", C.c_uint8), ("pad", C.c_uint8 * 3)]


class Conn6(C.Structure):
    _fields_ = [("c", Conn), ("addr6", C.c_uint8 * 16), ("laddr6", C.c_uint8 * 16)]


class FragKey(C.Structure):
    _fields_ = [("saddr", C.c_uint8 * 4), ("daddr", C.c_uint8 * 4), ("id", C.c_uint16),
                ("proto", C.c_uint8), ("pad", C.c_uint8)]


class FragRec(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 4), ("ifindex", C.c_uint32), ("smac", C.c_uint8 * 6),
                ("dmac", C.c_uint8 * 6), ("svc_slot", C.c_uint32), ("dest_slot", C.c_uint32),
                ("addr2", C.c_uint8 * 4), ("out", C.c_uint8), ("l4_len", C.c_uint8),
                ("pad", C.c_uint8 * 2), ("stamp", C.c_uint64)]


class Laddr(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 16), ("ifindex", C.c_uint32), ("af", C.c_uint8),
                ("pad", C.c_uint8 * 3)]


class LaddrSet(C.Structure):
    _fields_ = [("n", C.c_uint32), ("pad", C.c_uint32), ("a", Laddr * XDPLB_LADDR_MAX)]


class IpVsStats(C.Structure):
    _fields_ = [("conns", C.c_uint64), ("inpkts", C.c_uint64), ("outpkts", C.c_uint64),
                ("inbytes", C.c_uint64), ("outbytes", C.c_uint64)]


def packer(cls):
    """A fast constructor of a mirror from all its field values in order (a
    uint8 array given as bytes): ctypes' own __init__ takes microseconds for
    ten fields, packing them and copying the bytes a quarter of it. The
    format is derived from _fields_ (integers and uint8 arrays) and checked
    against the mirror's size."""
    codes = {C.c_uint8: "B", C.c_uint16: "H", C.c_uint32: "I", C.c_int32: "i",
             C.c_uint64: "Q", C.c_int64: "q"}
    fmt = "@" + "".join(f"{t._length_}s" if issubclass(t, C.Array) else codes[t]
                        for _, t in cls._fields_)
    packed = struct.Struct(fmt)
    assert packed.size == C.sizeof(cls), cls
    return lambda *values: cls.from_buffer_copy(packed.pack(*values))


# Structures checked against the header: C name -> mirror.
MIRRORS = {
    "svc_key": SvcKey, "service": SvcEntry, "dest": DestEntry, "ring_key": RingKey,
    "sched_pos": SchedPos, "conn_key": ConnKey, "conn": Conn, "ip_vs_stats": IpVsStats,
    "dest_conns": DestConns, "svc_dest_ent": SvcDestEnt, "svc_dests": SvcDests,
    "alloc": Alloc, "lblc_key": LblcKey, "lblc_ent": LblcEnt, "rs_key": RsKey,
    "rs_svcs": RsSvcs, "frag_key": FragKey, "frag_rec": FragRec, "laddr": Laddr,
    "laddr_set": LaddrSet,
    "svc_key6": SvcKey6, "rs_key6": RsKey6, "rs_svcs6": RsSvcs6, "conn_key6": ConnKey6,
    "conn6": Conn6, "tun_src6": TunSrc6,
}
