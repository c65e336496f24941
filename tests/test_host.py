"""xdplb on a real host (issue 15): `make install`'s script into a temporary
root, the systemd units checked by systemd-analyze, and the boot unit's
`xdplb restore` of what `xdplb save` wrote, run in a fresh netns (a reboot
empties bpffs and detaches XDP; `xdplb detach` does the same here), each
under the capability set its unit grants."""
import configparser
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import xdplb_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = ("xdplb.service", "xdplb-daemon.service", "xdplb-exporter.service")
ADM = [sys.executable, "-m", "xdplb.adm"]


def _unit(name):
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(os.path.join(ROOT, "scripts", "systemd", name))
    return p


def _caps(unit):
    """setpriv's view of a unit's CapabilityBoundingSet: as root, with no
    inheritable capabilities, a process runs with exactly that set."""
    caps = _unit(unit)["Service"]["CapabilityBoundingSet"].split()
    return ["setpriv", "--bounding-set",
            "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps),
            "--inh-caps", "-all", "--"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    env = dict(os.environ, XDPLB_OPT=str(root / "opt" / "xdplb"), XDPLB_SBIN=str(root / "sbin"),
               XDPLB_UNITDIR=str(root / "units"), XDPLB_COMPLETIONS=str(root / "completions"))
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh"), "install"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    yield root, env
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh"), "uninstall"], env=env,
                   capture_output=True, timeout=120)


def test_install_puts_everything_where_it_says(installed):
    root, _ = installed
    opt = root / "opt" / "xdplb"
    for cmd in ("xdplb", "xdplbadm"):
        link = root / "sbin" / cmd
        assert os.readlink(link) == str(opt / "bin" / cmd)
    assert subprocess.run([root / "sbin" / "xdplb", "--help"], capture_output=True,
                          text=True).stdout.startswith("Usage: xdplb")
    # the installed copy, not the checkout, is what runs
    where = subprocess.run([opt / "bin" / "python", "-c", "import xdplb; print(xdplb.__file__)"],
                           capture_output=True, text=True, cwd="/")
    assert where.stdout.startswith(str(opt)), where
    assert "_xdplb_completion" in (root / "completions" / "xdplb").read_text()
    for unit in UNITS:
        text = (root / "units" / unit).read_text()
        assert f"ExecStart={root}/sbin/xdplb " in text and "@SBIN@" not in text
    verify = subprocess.run(["systemd-analyze", "verify",
                             *(str(root / "units" / u) for u in UNITS)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    listed = (opt / "installed").read_text().split()
    assert sorted(listed) == sorted([str(root / "sbin" / "xdplb"), str(root / "sbin" / "xdplbadm"),
                                     *(str(root / "units" / u) for u in UNITS),
                                     str(root / "completions" / "xdplb")])


def test_uninstall_removes_all_of_it_and_install_guards_other_folders(installed, tmp_path):
    """The module's installation removed (the test after the one that
    checks it), and an install refused over a folder that is not one."""
    root, env = installed
    script = ["bash", os.path.join(ROOT, "scripts", "install.sh")]
    gone = subprocess.run(script + ["uninstall"], env=env, capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr
    left = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    assert left == [] and not (root / "opt" / "xdplb").exists()
    again = subprocess.run(script + ["uninstall"], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "no xdplb installation" in again.stderr
    other = dict(env, XDPLB_OPT=str(tmp_path / "opt"))
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "data").write_text("someone else's\n")
    refused = subprocess.run(script + ["install"], env=other, capture_output=True, text=True)
    assert refused.returncode == 1 and "not an xdplb installation" in refused.stderr
    assert (tmp_path / "opt" / "data").read_text() == "someone else's\n"
    assert not (root / "opt" / "xdplb").exists()


RULES = ("-A -t 10.0.0.1:80 -s rr\n"
         "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 1\n"
         "-A -u 10.0.0.1:53 -s sh\n"
         "-a -u 10.0.0.1:53 -r 10.0.0.3:53 -g -w 2\n")


def _adm(ns, *args, stdin=None):
    return ns.run(ADM + list(args), check=False) if stdin is None else \
        subprocess.run(ns.cmd(ADM + list(args)), input=stdin, capture_output=True, text=True,
                       timeout=120)


def test_save_then_restore_after_a_reboot_then_the_daemon_and_exporter(cli_netns, tmp_path):
    """The boot unit's restore, then the daemon and the exporter on what it
    restored (one netns: each attach and daemon start compiles)."""
    etc = str(tmp_path / "etc")
    assert cli_netns.xdplb("attach", "v0", "--mode", "generic").returncode == 0
    assert _adm(cli_netns, "-R", stdin=RULES).returncode == 0
    saved = cli_netns.xdplb("save", "--dir", etc)
    assert saved.returncode == 0, saved.stderr
    assert "saved 4 rule lines and 1 interfaces (v0)" in saved.stdout
    rules = open(os.path.join(etc, "rules")).read()
    assert rules == _adm(cli_netns, "-S", "-n").stdout and rules.count("\n") == 4
    assert open(os.path.join(etc, "interfaces")).read().splitlines()[1:] == ["v0 generic"]

    assert cli_netns.xdplb("detach").returncode == 0      # the reboot
    assert _adm(cli_netns, "-S", "-n").stdout == ""
    restored = cli_netns.run(_caps("xdplb.service") + xdplb_argv("restore", "--dir", etc))
    assert restored.returncode == 0, restored.stderr
    assert "restored 4 lines" in restored.stdout
    assert "attached xdplb to v0 in generic mode" in restored.stdout
    assert _adm(cli_netns, "-S", "-n").stdout == rules
    status = cli_netns.xdplb("status").stdout
    assert "v0" in status and "generic" in status

    again = cli_netns.run(_caps("xdplb.service") + xdplb_argv("restore", "--dir", etc))
    assert again.returncode == 0 and "equals the live rules, left alone" in again.stdout
    _daemon_and_exporter_run_with_their_units_capabilities(cli_netns)


def test_restore_refuses_bad_files_and_changes_nothing(cli_netns, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "interfaces").write_text("# comment\nv0 native\nv1 turbo\n")
    bad = cli_netns.xdplb("restore", "--dir", str(etc))
    assert bad.returncode == 1
    assert f"{etc}/interfaces:3: expected 'IFNAME [native|generic]', got 'v1 turbo'" in bad.stderr
    assert not os.path.exists(cli_netns.pin_folder())
    (etc / "interfaces").write_text("v0\n")
    (etc / "rules").write_text("-A -t 10.0.0.1:80 -s nosuch\n")
    refused = cli_netns.xdplb("restore", "--dir", str(etc))
    assert refused.returncode == 1 and "Scheduler or persistence engine not found" in refused.stderr
    assert _adm(cli_netns, "-S", "-n").stdout == ""
    missing = cli_netns.xdplb("restore", "--dir", str(etc / "none"))
    assert missing.returncode == 0      # nothing saved: nothing to do


def _daemon_and_exporter_run_with_their_units_capabilities(cli_netns):
    """On cli_netns's state (v0 attached, RULES), each under its unit's set."""
    sweep = subprocess.Popen(cli_netns.cmd(_caps("xdplb-daemon.service")
                                           + xdplb_argv("daemon", "--interval", "0.2")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exporter = subprocess.Popen(cli_netns.cmd(_caps("xdplb-exporter.service")
                                              + xdplb_argv("exporter", "--listen",
                                                           "127.0.0.1:19371")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = None
        for _ in range(100):
            got = cli_netns.run(["curl", "-sf", "http://127.0.0.1:19371/metrics"], check=False)
            if got.returncode == 0:
                metrics = got.stdout
                break
            assert exporter.poll() is None, exporter.communicate()
            time.sleep(0.2)
        assert metrics is not None and "10.0.0.2" in metrics
        # the daemon's start swaps the data path in again: load and attach under its set
        assert sweep.stdout.readline().startswith("loaded the data path from ")
        assert sweep.stdout.readline().startswith("replaced xdplb on v0: prog id ")
        assert sweep.poll() is None, sweep.communicate()
        # the exporter's set cannot change anything
        attach = cli_netns.run(_caps("xdplb-exporter.service") + xdplb_argv("attach", "v1"))
        assert attach.returncode == 1 and "permission denied" in attach.stderr
    finally:
        for proc in (sweep, exporter):
            proc.terminate()
            proc.wait(timeout=30)
