"""bpf/xdplb.h and its Python mirror xdplb/structs.py must agree exactly.

The header is compiled with the host C compiler, which reports every size,
offset and constant; the field lists and constant names come from the header
text, so a field or constant added on one side only fails too.
"""
import ctypes as C
import os
import re
import shutil
import subprocess

import pytest

from xdplb import structs as S

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "bpf", "xdplb.h")


def _header():
    with open(HEADER) as f:
        text = f.read()
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


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    """{key: value} printed by a C program built against the header."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    structs = header_structs()
    defines, enum_members = header_constants()
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{HEADER}"',
             "int main(void) {"]
    for name, fields in structs.items():
        lines.append(f'printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
        for fld in fields:
            lines.append(f'printf("offsetof {name}.{fld} %zu\\n", '
                         f'offsetof(struct {name}, {fld}));')
            lines.append(f'printf("sizeof {name}.{fld} %zu\\n", '
                         f'sizeof(((struct {name} *)0)->{fld}));')
    for const in defines + enum_members:
        lines.append(f'printf("const {const} %lld\\n", (long long)({const}));')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("structs")
    src, exe = d / "layout.c", d / "layout"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-Wall", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


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
