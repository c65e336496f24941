"""`pip install .`, not editable, gives working commands (issue 10).

A fresh venv in a tmp folder sees Debian's bcc the way scripts/setup.sh links
it; the checkout is installed from a copy (pip builds in the source tree, and
the checkout stays clean), its dependencies from the package registry or
pip's cache. Then, inside a private netns, the installed xdplbadm adds a
service and a real server, which compiles the data path from the installed
copy of bpf/ (xdplb/bpf/ in site-packages), and lists them as ipvsadm would.
Neither command may import matplotlib: it is the bench extra, and `xdplb
bench` without it says how to install it. About 20-40 s.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the wheel is built from: pyproject.toml's packages, package-dir and readme.
SOURCES = ("pyproject.toml", "README.md", "xdplb", "bpf")

LISTING = ("IP Virtual Server version 1.2.1 (size=4096)\n"
           "Prot LocalAddress:Port Scheduler Flags\n"
           "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
           "TCP  10.0.0.1:80 rr\n"
           + "  -> %-28s %-7s %-6d %-10d %-10d\n" % ("10.0.0.2:80", "Masq", 1, 0, 0))


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the checkout installed non-editably; removed afterwards."""
    bcc = importlib.util.find_spec("bcc")
    if bcc is None:
        pytest.skip("no bcc (Debian's python3-bpfcc)")
    tmp = tmp_path_factory.mktemp("install")
    src, env_dir = tmp / "src", tmp / "venv"
    try:
        src.mkdir()
        for name in SOURCES:
            path = os.path.join(ROOT, name)
            if os.path.isdir(path):
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, src / name)
        made = _run([sys.executable, "-m", "venv", str(env_dir)])
        assert made.returncode == 0, made.stderr
        purelib = _run([str(env_dir / "bin" / "python"), "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
        # Only Debian's bcc package, as scripts/setup.sh links it into .venv.
        os.symlink(os.path.dirname(os.path.realpath(bcc.origin)),
                   os.path.join(purelib.strip(), "bcc"))
        pip = _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", str(src)], cwd=tmp)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        yield env_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def outside_checkout(monkeypatch, tmp_path):
    """Commands run where neither the working directory nor PYTHONPATH
    reaches the checkout's xdplb."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)


def test_commands_start_without_matplotlib():
    """Even where matplotlib is installed (this venv), starting the commands
    does not import it."""
    code = ("import sys, xdplb.adm, xdplb.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    r = _run([sys.executable, "-c", code], cwd=ROOT)
    assert (r.returncode, r.stdout) == (0, "[]\n"), r.stderr


def test_installed_commands_write_and_list(venv, cli_netns, outside_checkout):
    """The installed copy, not the checkout, compiles and answers."""
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import os, xdplb.loader as l; print(os.path.dirname(l.__file__), l.BPF_DIR)"])
    package, bpf_dir = where.stdout.split()
    assert package.startswith(f"{venv}/") and bpf_dir == os.path.join(package, "bpf")

    def installed(cmd, *args):
        r = cli_netns.run([str(venv / "bin" / cmd), *args])
        assert r.returncode == 0, f"{cmd} {' '.join(args)}: {r.stderr}"
        return r.stdout

    folder = cli_netns.pin_folder()
    try:
        assert installed("xdplbadm", "-A", "-t", "10.0.0.1:80", "-s", "rr") == ""
        assert os.path.isdir(folder)  # the write compiled and pinned this netns's state
        assert installed("xdplbadm", "-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2:80", "-m") == ""
        assert installed("xdplbadm", "-L", "-n") == LISTING
        status = installed("xdplb", "status")
        assert os.path.basename(folder) in status and "services              1 /" in status
        bench = cli_netns.run([str(venv / "bin" / "xdplb"), "bench", "--quick"])
        assert bench.returncode != 0 and "pip install 'xdplb[bench]'" in bench.stderr
    finally:
        from xdplb import state
        state.remove(folder)
    assert not os.path.exists(folder)
