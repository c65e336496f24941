"""The data path and what Python repeats of it must agree exactly.

bpf/xdplb.h and its mirror xdplb/structs.py: the header is compiled with the
host C compiler, which reports every size, offset and constant; the field
lists and constant names come from the header text, so a field or constant
added on one side only fails too. The same goes for what the data path
encodes beyond structs: scheduler ids and their programs, IPVS's TCP state
numbering, default timeouts and active states (bpf/tcp_state.h), the hash
schedulers' hashes (bpf/hash.h) and which counters are verdicts.
"""
import ctypes as C
import glob
import os
import random
import re
import shutil
import subprocess

import pytest

from xdplb import loader, model, sched
from xdplb import structs as S

BPF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
HEADER = os.path.join(BPF, "xdplb.h")


def _header():
    """xdplb.h's text and its part xdplb_fwd.h's, comments removed."""
    text = ""
    for path in (HEADER, os.path.join(BPF, "xdplb_fwd.h")):
        with open(path) as f:
            text += f.read()
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def header_structs():
    """{struct name: [field names in order]} from the header text."""
    out = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", _header(), flags=re.S):
        out[name] = [re.match(r".*?(\w+)\s*(\[[^\]]*\])?\s*;", decl.strip() + ";").group(1)
                     for decl in body.split(";") if decl.strip()]
    return out


def header_constants():
    """Names of every #define with a value (but the include guard) and enum member."""
    text = _header()
    names = list(re.findall(r"^[ \t]*#define[ \t]+(\w+)[ \t]+\S", text, flags=re.M))
    enum_members = []
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\};", text, flags=re.S):
        enum_members += [m.split("=")[0].strip() for m in body.split(",") if m.strip()]
    return names, enum_members


def _c_program(tmp_path_factory, includes, body):
    """Build and run a C program including the given bpf/ headers whose main
    runs the body (printf "key value" lines); returns {key: value}."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>",  # (stdio: __always_inline)
             *(f'#include "{os.path.join(BPF, h)}"' for h in includes),
             "int main(void) {", *body, "return 0; }"]
    d = tmp_path_factory.mktemp("structs")
    src, exe = d / "prog.c", d / "prog"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    """{key: value} printed by a C program built against the header."""
    body = []
    for name, fields in header_structs().items():
        body.append(f'printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
        for fld in fields:
            body.append(f'printf("offsetof {name}.{fld} %zu\\n", '
                        f'offsetof(struct {name}, {fld}));')
            body.append(f'printf("sizeof {name}.{fld} %zu\\n", '
                        f'sizeof(((struct {name} *)0)->{fld}));')
    defines, enum_members = header_constants()
    for const in defines + enum_members:
        body.append(f'printf("const {const} %lld\\n", (long long)({const}));')
    return _c_program(tmp_path_factory, ["xdplb.h"], body)


def test_every_struct_is_mirrored():
    assert set(header_structs()) == set(S.MIRRORS)


@pytest.mark.parametrize("name", sorted(S.MIRRORS))
def test_struct_layout(c_layout, name):
    mirror = S.MIRRORS[name]
    fields = header_structs()[name]
    assert [f for f, *_ in mirror._fields_] == fields, "field names or order differ"
    assert C.sizeof(mirror) == int(c_layout[f"sizeof {name}"])
    assert C.alignment(mirror) <= 8
    for fld in fields:
        desc = getattr(mirror, fld)
        assert desc.offset == int(c_layout[f"offsetof {name}.{fld}"]), fld
        assert desc.size == int(c_layout[f"sizeof {name}.{fld}"]), fld


def test_constants(c_layout):
    defines, enum_members = header_constants()
    names = [n for n in defines if n != "XDPLB_H"] + enum_members
    assert names, "no constants found in the header"
    for name in names:
        assert hasattr(S, name) or name.startswith("XDPLB_CNT_"), f"{name} not mirrored"
        if hasattr(S, name):
            assert getattr(S, name) == int(c_layout[f"const {name}"]), name


def test_counters_match_enum(c_layout):
    _, enum_members = header_constants()
    cnt = [m for m in enum_members if m.startswith("XDPLB_CNT_") and m != "XDPLB_CNT_MAX"]
    assert [int(c_layout[f"const {m}"]) for m in cnt] == list(range(len(cnt)))
    assert tuple(m[len("XDPLB_CNT_"):].lower() for m in cnt) == S.COUNTERS
    assert S.XDPLB_CNT_MAX == int(c_layout["const XDPLB_CNT_MAX"]) == len(S.COUNTERS)


# --- what Python repeats of the data path beyond its structs ----------------

def _header_values(prefix):
    """{name without prefix: value} of the header's #defines starting with prefix."""
    return {m.group(1): int(m.group(2), 0) for m in re.finditer(
        rf"^#define[ \t]+{prefix}(\w+)[ \t]+(\w+)\s*$", _header(), flags=re.M)}


def test_scheduler_ids():
    ids = {name.lower(): v for name, v in _header_values("XDPLB_SCHED_").items()}
    assert model.SCHED_IDS == ids
    assert model.SCHED_NAMES == {v: k for k, v in ids.items()}


def _programs():
    """{program: its body} of every XDP program in bpf/xdplb.c; the
    XDPLB_NEW_CONN_PROG(name, family) pairs as the bodies the macro gives
    xdplb_new_<name> (IPv4) and xdplb_new6_<name> (IPv6)."""
    with open(os.path.join(BPF, loader.ENTRY_FILE)) as f:
        text = f.read()
    progs = dict(re.findall(r"^int (\w+)\(struct xdp_md \*ctx\)\n\{\n(.*?)^\}", text,
                            flags=re.M | re.S))
    for name, fam in re.findall(r"^XDPLB_NEW_CONN_PROG\((\w+), (\w+)\)$", text, flags=re.M):
        for prefix, af in (("xdplb_new_", "XDPLB_AF_INET"), ("xdplb_new6_", "XDPLB_AF_INET6")):
            progs[prefix + name] = f"return record_verdict(schedule_new(ctx, {fam}, {af}));"
    return progs


def _macro_body():
    with open(os.path.join(BPF, loader.ENTRY_FILE)) as f:
        text = f.read()
    return re.search(r"#define XDPLB_NEW_CONN_PROG\(name, fam\)(.*?)\n\n", text, re.S).group(1)


def test_new_conn_program_macro():
    """The macro's two programs are what _programs() says they are."""
    body = re.sub(r"\s+", " ", _macro_body().replace("\\", ""))
    assert ("int xdplb_new_##name(struct xdp_md *ctx) { return record_verdict(schedule_new("
            "ctx, fam, XDPLB_AF_INET)); }") in body
    assert ("int xdplb_new6_##name(struct xdp_md *ctx) { return record_verdict(schedule_new("
            "ctx, fam, XDPLB_AF_INET6)); }") in body


def test_new_conn_programs():
    """Every scheduler id (IPv4, and IPv6 at XDPLB_PROG_SCHED6 + id),
    XDPLB_PROG_CONN(6), XDPLB_PROG_TUNNEL, XDPLB_PROG_FRAG(6), XDPLB_PROG_ICMP(6) and
    XDPLB_PROG_MAIN6, XDPLB_PROG_REPLY6 and XDPLB_PROG_CLIENT6 have a program in new_conn, each xdplb_new_<family> and
    xdplb_new6_<family> runs its own family and address family, and no program
    is left out."""
    progs = _programs()
    ids = set(_header_values("XDPLB_SCHED_").values())
    ids6 = {S.XDPLB_PROG_SCHED6 + i for i in ids}
    extra = {S.XDPLB_PROG_CONN, S.XDPLB_PROG_TUNNEL, S.XDPLB_PROG_FRAG, S.XDPLB_PROG_ICMP,
             S.XDPLB_PROG_MAIN6, S.XDPLB_PROG_CONN6, S.XDPLB_PROG_ICMP6, S.XDPLB_PROG_TUNNEL6,
             S.XDPLB_PROG_FRAG6, S.XDPLB_PROG_REPLY6, S.XDPLB_PROG_CLIENT6}
    assert set(loader.NEW_CONN_PROGS) == ids | ids6 | extra
    assert len(ids | ids6 | extra) == 2 * len(ids) + len(extra)
    assert max(loader.NEW_CONN_PROGS) < S.XDPLB_PROG_MAX
    for idx, name in ((S.XDPLB_PROG_CONN, "xdplb_conn"), (S.XDPLB_PROG_TUNNEL, "xdplb_tunnel"),
                      (S.XDPLB_PROG_FRAG, "xdplb_frag"), (S.XDPLB_PROG_ICMP, "xdplb_icmp"),
                      (S.XDPLB_PROG_MAIN6, "xdplb_main6"), (S.XDPLB_PROG_CONN6, "xdplb_conn6"),
                      (S.XDPLB_PROG_ICMP6, "xdplb_icmp6"), (S.XDPLB_PROG_TUNNEL6, "xdplb_tunnel6"),
                      (S.XDPLB_PROG_FRAG6, "xdplb_frag6"), (S.XDPLB_PROG_REPLY6, "xdplb_reply6"),
                      (S.XDPLB_PROG_CLIENT6, "xdplb_client6")):
        assert loader.NEW_CONN_PROGS[idx] == name
    assert set(progs) == set(loader.NEW_CONN_PROGS.values()) | {loader.ENTRY}
    for name, body in progs.items():
        assert "record_verdict(" in body, f"{name} does not return through record_verdict"
        for prefix, af in (("xdplb_new_", "XDPLB_AF_INET"), ("xdplb_new6_", "XDPLB_AF_INET6")):
            if name.startswith(prefix):
                family = name[len(prefix):].upper()
                assert f"schedule_new(ctx, XDPLB_FAM_{family}, {af})" in body, name
    for sched, idx in _header_values("XDPLB_SCHED_").items():
        assert loader.NEW_CONN_PROGS[S.XDPLB_PROG_SCHED6 + idx] == \
            loader.NEW_CONN_PROGS[idx].replace("xdplb_new_", "xdplb_new6_"), sched


@pytest.fixture(scope="module")
def c_tcp(tmp_path_factory):
    """default_timeout() and tcp_state_active() of bpf/tcp_state.h, run."""
    body = [f'printf("timeout {i} %u\\n", default_timeout({i}));'
            for i in range(S.XDPLB_TMO_UDP + 1)]
    body += [f'printf("active {i} %d\\n", tcp_state_active({i}));'
             for i in range(S.IP_VS_TCP_S_LAST)]
    return {k: int(v) for k, v in _c_program(tmp_path_factory, ["tcp_state.h"], body).items()}


def test_tcp_states(c_tcp):
    states = {v: name for name, v in _header_values("IP_VS_TCP_S_").items() if name != "LAST"}
    assert model.TCP_STATE_NAMES == tuple(states[i] for i in range(S.IP_VS_TCP_S_LAST))
    assert model.TCP_TIMEOUTS == tuple(c_tcp[f"timeout {i}"] for i in range(S.IP_VS_TCP_S_LAST))
    assert model.UDP_TIMEOUT == c_tcp[f"timeout {S.XDPLB_TMO_UDP}"]
    assert model.DEFAULT_TIMEOUTS == (c_tcp[f"timeout {S.IP_VS_TCP_S_ESTABLISHED}"],
                                      c_tcp[f"timeout {S.IP_VS_TCP_S_FIN_WAIT}"],
                                      c_tcp[f"timeout {S.XDPLB_TMO_UDP}"])
    assert model.TCP_ACTIVE_STATES == {i for i in range(S.IP_VS_TCP_S_LAST)
                                       if c_tcp[f"active {i}"]}


HASH_INPUTS = [(r.getrandbits(32), r.getrandbits(16), r.randrange(sched.XDPLB_MH_TAB_SIZE))
               for r in [random.Random(10)] for _ in range(300)]


@pytest.fixture(scope="module")
def c_hashes(tmp_path_factory):
    """sh, dh, mh hash keys and hsiphash of bpf/hash.h on HASH_INPUTS, run."""
    rows = ", ".join(f"{{{a}u, {p}, {o}}}" for a, p, o in HASH_INPUTS)
    body = [f"static const struct {{ __u32 addr; __u16 port; __u32 off; }} in[] = {{{rows}}};",
            "for (unsigned i = 0; i < sizeof(in) / sizeof(in[0]); i++) {",
            'printf("sh %u %u\\n", i, sh_hashkey(in[i].addr, in[i].port, in[i].off % 256));',
            'printf("dh %u %u\\n", i, dh_hashkey(in[i].addr));',
            'printf("mh %u %u\\n", i, mh_hashkey(in[i].addr, in[i].port, in[i].off));',
            f'printf("sip %u %u\\n", i, hsiphash_u32(in[i].addr, {sched.MH_HASH2}ULL, '
            f'{sched.MH_HASH2}ULL));',
            "}"]
    return {k: int(v) for k, v in _c_program(tmp_path_factory, ["hash.h"], body).items()}


def test_hashes(c_hashes):
    """xdplb/sched.py fills the tables with the hashes the data path looks up."""
    for i, (addr, port, off) in enumerate(HASH_INPUTS):
        assert sched.sh_hashkey(addr, port, off % 256) == c_hashes[f"sh {i}"]
        assert sched.dh_hashkey(addr) == c_hashes[f"dh {i}"]
        assert (sched.mh_hashkey(addr, port, sched.MH_HASH1, off) % sched.XDPLB_MH_TAB_SIZE
                == c_hashes[f"mh {i}"])
        assert (sched.hsiphash_u32(addr, sched.MH_HASH2, sched.MH_HASH2)
                == c_hashes[f"sip {i}"])


def _bpf_text():
    """The data path's sources (not the benchmark's), comments removed."""
    text = ""
    for path in sorted(glob.glob(os.path.join(BPF, "*.h")) + [os.path.join(BPF, "xdplb.c")]):
        with open(path) as f:
            text += re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    return text


def test_verdicts_and_events():
    """The counters the data path returns as a frame's verdict are VERDICTS
    (rx, their sum, relies on it); the ones it counts as they happen, EVENTS."""
    text = _bpf_text()
    verdicts = set(re.findall(r"VERDICT\(\s*XDP_\w+\s*,\s*XDPLB_CNT_(\w+)\s*\)", text))
    verdicts |= set(re.findall(r"\bdrop\(\s*XDPLB_CNT_(\w+)\s*\)", text))
    events = set(re.findall(r"\bcount\(\s*XDPLB_CNT_(\w+)\s*\)", text))
    assert {v.lower() for v in verdicts} == set(S.VERDICTS)
    assert {e.lower() for e in events} == set(S.EVENTS)
    assert {"rx", *S.VERDICTS, *S.EVENTS} == set(S.COUNTERS)
