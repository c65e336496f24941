"""keepalived.conf's load-balancing part as data: what xdplb/keepalived/conf.py
reads, every setting resolved, for the pool, the checkers and the diff."""
from dataclasses import dataclass, field

from .. import model
from ..structs import IP_VS_CONN_F_MASQ


@dataclass(frozen=True)
class Script:
    """A command keepalived would run: argv, and the user and group it runs as."""
    argv: tuple
    uid: int
    gid: int
    where: object = field(default=None, compare=False)   # lexer.Where of its statement


@dataclass(frozen=True)
class Url:
    path: str
    digests: tuple = ()              # lowercase hex MD5s of accepted bodies
    status_codes: tuple = ()         # ((lo, hi), ...); none: 2xx
    virtualhost: str | None = None


@dataclass(frozen=True)
class Check:
    """One checker of a real server, every setting resolved."""
    kind: str
    addr: str                         # connect_ip, else the real server's
    port: int                         # connect_port, else the real server's
    connect_timeout: float
    retry: int
    delay_before_retry: float
    delay_loop: float
    alpha: bool
    bindto: str | None = None
    bind_port: int = 0
    urls: tuple = ()
    virtualhost: str | None = None
    script: Script | None = None
    misc_timeout: float | None = None
    misc_dynamic: bool = False
    payload: bytes = b""
    require_reply: bytes | None = None
    min_reply_length: int = 0
    max_reply_length: int = 65535


@dataclass(frozen=True)
class RealServer:
    addr: str
    port: int
    weight: int = 1
    fwd: int = IP_VS_CONN_F_MASQ
    inhibit: bool = False
    alpha: bool = False
    u_threshold: int = 0
    l_threshold: int = 0
    notify_up: Script | None = None
    notify_down: Script | None = None
    checks: tuple = ()


@dataclass(frozen=True)
class VirtualServer:
    """A virtual_server block: one service per endpoint (a group has several)."""
    proto: int
    endpoints: tuple                  # ((addr, port), ...)
    name: str                         # as keepalived's logs name it
    sched: str = model.DEF_SCHED
    flags: int = 0
    timeout: int = 0                  # persistence_timeout
    netmask: str = "255.255.255.255"
    quorum: int = 1
    hysteresis: int = 0
    alpha: bool = False
    omega: bool = False
    sorry_server: RealServer | None = None
    real_servers: tuple = ()

    def services(self):
        """model.Service of each endpoint (without destinations)."""
        return [model.Service(self.proto, a, p, sched=self.sched, flags=self.flags,
                              timeout=self.timeout, netmask=self.netmask)
                for a, p in self.endpoints]


@dataclass
class Config:
    virtual_servers: list
    files: list
    ignored: list = field(default_factory=list)   # [(keyword, Where)] skipped sections
    script_user: tuple | None = None               # (uid, gid) of global_defs
    script_security: bool = False
