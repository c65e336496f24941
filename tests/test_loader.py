"""The text the loader hands bcc: bpf/xdplb.c with the project headers pasted
in (bcc rewrites map calls only in the text it compiles), each once, with
#line markers that keep every line attributed to its real file and line.

That the pasted headers' map calls are rewritten is shown by every test that
runs the compiled program (test_datapath.py and others): unrewritten, they
would not compile.
"""
import glob
import os
import re

import pytest

from xdplb import loader

LINE = re.compile(r'#line (\d+) "bpf/([^"]+)"')


def _lines(name):
    with open(os.path.join(loader.BPF_DIR, name)) as f:
        return f.read().splitlines()


def test_every_header_pasted_once():
    text = loader.bpf_source()
    starts = re.findall(r'^#line 1 "bpf/([^"]+)"$', text, flags=re.M)
    # bench*.h belong to the benchmark's reference programs, not the data path
    headers = {os.path.basename(p) for p in glob.glob(os.path.join(loader.BPF_DIR, "*.h"))
               if not os.path.basename(p).startswith("bench")}
    assert starts[0] == loader.ENTRY_FILE
    assert sorted(starts[1:]) == sorted(headers), "a header pasted twice, or never"
    assert not re.search(r'^\s*#\s*include\s*"', text, flags=re.M)


def test_line_markers_name_the_real_line():
    """Every line of the text is the line its last #line marker says it is,
    but for the include lines the paste replaced (by a marker, or a header)."""
    files = {}
    where = None
    for line in loader.bpf_source().splitlines():
        m = LINE.fullmatch(line)
        if m:
            where = [m.group(2), int(m.group(1))]
            continue
        name, n = where
        real = files.setdefault(name, _lines(name))[n - 1]
        assert line == real, f"bpf/{name}:{n}"
        where[1] += 1


def test_error_in_header_names_header_and_line(capfd):
    """A ring larger than the generation bit allows trips sched_ring.h's
    #error: bcc's message names that header and line, not the pasted text."""
    bcc = pytest.importorskip("bcc")
    n = next(i for i, line in enumerate(_lines("sched_ring.h"), 1) if line.startswith("#error"))
    with pytest.raises(Exception, match="Failed to compile"):
        bcc.BPF(text=loader.bpf_source().encode(),
                cflags=["-Wno-unused-function", "-DXDPLB_MAX_RING=0x100000000"])
    err = capfd.readouterr().err
    assert f"bpf/sched_ring.h:{n}:2: error: \"XDPLB_MAX_RING exceeds" in err, err
