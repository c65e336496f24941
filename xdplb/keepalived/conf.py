"""keepalived.conf's load-balancing part, read as keepalived's checker reads it
(keepalived/check/check_parser.c and the checkers' keyword tables); the
blocks' keywords are xdplb/keepalived/blocks.py's.

parse(path) returns a Config: the virtual servers with their real servers
and checkers, every timer and flag resolved the way keepalived resolves them
(a checker takes what it does not set from its real server, which takes it
from its virtual server; keepalived's defaults otherwise: delay_loop 60 s,
connect_timeout 5 s, retry 1 (MISC_CHECK 0), delay_before_retry 1 s
(HTTP_GET/SSL_GET 3 s), weight 1, quorum 1, NAT forwarding, TCP).

Everything outside the load-balancing part (global_defs but for its
script_user and enable_script_security, VRRP, BFD, static addresses,
anything unknown at the top level) is skipped; Config.ignored says what, for
one log line each. Inside virtual_server blocks, an unknown keyword is an
error, as are the keepalived keywords xdplb does not implement (so a file is
never half understood). Errors name file and line, in keepalived's words
where it has them, and are all reported at once (lexer.ConfigError).
"""
import ipaddress

from .. import model
from .blocks import (BLOCK_KEYWORDS, VsDraft, _Bad, _endpoint, user_ids)
from .lexer import ConfigError, parse_file
from .model import Config


# keepalived keywords of the load-balancing part that xdplb does not implement:
# refused by name rather than as unknown words.
NOT_IMPLEMENTED = frozenset((
    "ip_family", "warmup", "ha_suspend", "smtp_alert", "snmp_name", "quorum_up",
    "quorum_down", "persistence_engine", "sorry_server_lvs_method", "bind_if", "fwmark",
    "log_all_failures", "http_protocol", "enable_sni", "sni_name", "fast_recovery",
    "tls_compliant", "regex", "regex_no_match", "regex_options", "regex_min_offset",
    "regex_max_offset", "regex_stack", "DNS_CHECK", "SMTP_CHECK", "BFD_CHECK",
    "FILE_CHECK", "PING_CHECK", "track_file", "track_bfd", "SSL", "ops"))


class Parser:
    """The statement tree (lexer.tree) into a Config, errors collected."""

    def __init__(self, files):
        self.errors = []
        self.cfg = Config([], files)
        self.groups = {}

    def error(self, s, msg):
        self.errors.append((s.where, msg))

    def run(self, stmts):
        pending = []
        for s in stmts:
            try:
                if s.keyword == "virtual_server":
                    pending.append(s)
                elif s.keyword == "virtual_server_group":
                    self._group(s)
                elif s.keyword == "global_defs":
                    self._global_defs(s)
                else:
                    self.cfg.ignored.append((s.keyword, s.where))
            except _Bad as e:
                self.error(s, str(e))
        for s in pending:    # groups may come after the virtual servers using them
            try:
                vs = self._virtual_server(s)
            except _Bad as e:
                self.error(s, str(e))
                continue
            if vs is not None:
                self.cfg.virtual_servers.append(vs)
        self._unique()
        if self.errors:
            raise ConfigError(self.errors)
        return self.cfg

    # --- blocks -----------------------------------------------------------------------

    def block(self, s):
        if s.block is None:
            raise _Bad("Missing '{' at beginning of configuration block")
        return s.block

    def each(self, s, handlers):
        """Run handlers[keyword](stmt) over a block; unknown keywords are errors."""
        for sub in self.block(s):
            h = handlers.get(sub.keyword)
            try:
                if h is not None:
                    if sub.block is not None and sub.keyword not in BLOCK_KEYWORDS:
                        raise _Bad("Unexpected '{' - ignoring")
                    h(sub)
                elif sub.keyword in NOT_IMPLEMENTED:
                    raise _Bad(f"xdplb does not implement keepalived's '{sub.keyword}'")
                else:
                    raise _Bad(f"Unknown keyword '{sub.keyword}'")
            except _Bad as e:
                self.error(sub, str(e))

    def _global_defs(self, s):
        def script_user(sub):
            self.cfg.script_user = user_ids(sub.args, "script_user")

        def security(sub):
            self.cfg.script_security = True
        for sub in self.block(s):
            handler = {"script_user": script_user, "enable_script_security": security}.get(
                sub.keyword)
            try:
                if handler:
                    handler(sub)
            except _Bad as e:
                self.error(sub, str(e))
        self.cfg.ignored.append(("global_defs (but script_user, enable_script_security)",
                                 s.where))

    def _group(self, s):
        if len(s.args) != 1:
            raise _Bad("virtual_server_group takes one name")
        entries = []
        for sub in self.block(s):
            try:
                entries += self._group_entry(sub)
            except _Bad as e:
                self.error(sub, str(e))
        if not entries:
            raise _Bad(f"virtual server group {s.args[0]} has no entries - removing")
        self.groups[s.args[0]] = entries

    def _group_entry(self, s):
        if s.keyword == "fwmark":
            raise _Bad(model.E_FWMARK)
        first, dash, last = s.keyword.partition("-")
        what = "Invalid virtual server group entry {}"
        addr, port = _endpoint([first, *s.args[:1]], what)
        if len(s.args) > 1:
            raise _Bad(what.format(" ".join(s.words)))
        if not dash:
            return [(addr, port or 0)]
        base = ipaddress.IPv4Address(addr)
        if not last.isdigit() or not int(base) & 255 <= int(last) <= 255:
            raise _Bad(what.format(s.keyword))
        return [(str(ipaddress.IPv4Address((int(base) & ~255) + i)), port or 0)
                for i in range(int(base) & 255, int(last) + 1)]

    def _unique(self):
        seen = {}
        for vs in self.cfg.virtual_servers:
            for a, p in vs.endpoints:
                key = (vs.proto, a, p)
                if key in seen:
                    self.errors.append((None, f"virtual server {model.PROTO_NAMES[vs.proto]} "
                                              f"{a}:{p} is defined twice ({seen[key]}, "
                                              f"{vs.name})"))
                seen[key] = vs.name

    # --- virtual_server ---------------------------------------------------------------

    def _virtual_server(self, s):
        if not s.args:
            raise _Bad("virtual_server needs an address and port, or group NAME")
        if s.args[0] == "fwmark":
            raise _Bad(model.E_FWMARK)
        if s.args[0] == "group":
            if len(s.args) != 2 or s.args[1] not in self.groups:
                raise _Bad(f"virtual server group {' '.join(s.args[1:])} is not defined")
            endpoints, name = self.groups[s.args[1]], f"[{s.args[1]}]"
        else:
            addr, port = _endpoint(s.args, "Invalid virtual server IP address/port {} - skipping")
            endpoints, name = [(addr, port or 0)], f"[{addr}]:{port or 0}"
        v = VsDraft(name, endpoints)
        self.each(s, v.handlers(self))
        return v.finish(self, s)


def parse(path):
    """The Config of a keepalived.conf; raises ConfigError (every error, each
    with file and line)."""
    stmts, files, notes = parse_file(path)
    parser = Parser(files)
    parser.cfg.ignored += notes
    return parser.run(stmts)
