"""The Vagrant lab and the side-by-side comparison, where no VM can run.

- `vagrant validate` on the Vagrantfile (Debian's vagrant; providers ignored:
  CI has neither libvirt nor VirtualBox), in a copy so no .vagrant/ is left;
- shellcheck on every shell script of the repository;
- the scenario scripts (vagrant/scenario.sh, bench.sh, compare.sh) run
  unchanged on the one-host netns lab through vagrant/on-netns.sh: the xdplb
  side always, the kernel-IPVS side only where this kernel has IPVS;
- opt-in (`make test-ipvs`, XDPLB_TEST_IPVS=1): scripts/qemu-ipvs.sh, kernel
  IPVS and xdplb side by side in Debian's kernel under qemu.
"""
import os
import re
import shutil
import subprocess

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAGRANT = os.path.join(ROOT, "vagrant")
SEED_ANSWERS = list("321321" "113211")
# then rs1 (pod1) calls the VIP: nothing, then #3 #2 (its own turn fails) twice,
# then with --hairpin #3 #2 #1 twice
SEED_POD_ANSWERS = list("3232" "321321")


def shell_scripts():
    """Every shell script of the repository (by extension or shebang)."""
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".vagrant", "__pycache__",
                                                 ".pytest_cache", ".hypothesis", "node_modules")]
        for name in files:
            path = os.path.join(top, name)
            if name.endswith(".sh"):
                found.append(path)
                continue
            try:
                with open(path, "rb") as f:
                    first = f.readline(100)
            except OSError:
                continue
            if re.match(rb"#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b", first):
                found.append(path)
    return sorted(found)


def test_vagrantfile_validates(tmp_path):
    vagrant = shutil.which("vagrant")
    assert vagrant, "vagrant is not installed (scripts/setup.sh installs Debian's)"
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(os.path.join(ROOT, "Vagrantfile"), work)
    shutil.copytree(VAGRANT, work / "vagrant")
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_CHECKPOINT_DISABLE="1")
    p = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout
    # the five machines of the lab
    for name in ("rs1", "rs2", "rs3", "client", "lb"):
        assert f"{name}:" in p.stdout, p.stdout


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (scripts/setup.sh installs it)"
    scripts = shell_scripts()
    assert os.path.join(VAGRANT, "scenario.sh") in scripts
    # warnings and errors everywhere; the lab's own scripts also at style level
    p = subprocess.run([shellcheck, "-x", "-S", "warning", *scripts], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    own = [s for s in scripts if s.startswith((VAGRANT + os.sep,
                                               os.path.join(ROOT, "scripts", "qemu")))]
    p = subprocess.run([shellcheck, "-x", *own], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


# -- the scenario scripts on the netns lab ---------------------------------------

@pytest.fixture(scope="module")
def netns_lab(xlab_lab):
    """The session's lab (conftest.py) and the scripts' environment for it."""
    from xdplb.compare import script_env
    return xlab_lab, script_env(xlab_lab.prefix, bench_seconds=1)


def _answers(text):
    return [m[-1] for m in re.findall(r"^This is service #\d$", text, re.M)]


def test_scenario_through_xdplb_on_the_netns_lab(netns_lab):
    lab, env = netns_lab
    p = subprocess.run(["bash", os.path.join(VAGRANT, "scenario.sh"), "xdplbadm"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _answers(p.stdout) == SEED_ANSWERS + SEED_POD_ANSWERS, p.stdout
    assert p.stdout.count("IP Virtual Server version 1.2.1 (size=4096)") == 6
    pods = p.stdout.split("Validating communication between Pod and ClusterIP\n")[1]
    assert "detached from the pods' (veth-rs1 veth-rs2 veth-rs3)" in pods
    assert "Enabling Hairpin connections" in pods
    assert re.search(r"^TCP  1\.2\.3\.4:80 wrr$", p.stdout, re.M), p.stdout
    assert re.search(r"^  -> 172\.80\.0\.2:80\s+Masq\s+3\s", p.stdout, re.M), p.stdout
    assert "every answer as in seed 000" in p.stdout
    # the scenario leaves the table empty and xdplb attached
    assert lab.adm("-L", "-n").stdout.count("\n") == 3  # the header only


def test_scenario_rejects_an_unknown_tool(netns_lab):
    _, env = netns_lab
    p = subprocess.run(["bash", os.path.join(VAGRANT, "scenario.sh"), "iptables"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "usage" in p.stderr


def test_bench_parts_through_xdplb_on_the_netns_lab(netns_lab):
    _, env = netns_lab
    p = subprocess.run(["bash", os.path.join(VAGRANT, "bench.sh"), "xdplbadm"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    cps = re.search(r"^cps (\d+)$", p.stdout, re.M)
    fwd = re.search(r"^fwd_pps (\d+)$", p.stdout, re.M)
    assert re.search(r"^sent_pps \d+$", p.stdout, re.M), p.stdout
    assert cps and int(cps.group(1)) > 0, p.stdout + p.stderr
    assert fwd and int(fwd.group(1)) > 0, p.stdout + p.stderr
    assert "failed=0" in p.stderr, p.stderr


def test_compare_side_by_side_here_when_the_kernel_has_ipvs(netns_lab):
    from xdplb.compare import kernel_has_ipvs
    if not kernel_has_ipvs():
        pytest.skip("this kernel has no IPVS: `make test-ipvs` runs the comparison in qemu")
    _, env = netns_lab
    p = subprocess.run(["bash", os.path.join(VAGRANT, "compare.sh")], env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "same answers in the same order: yes" in p.stdout


# -- opt-in: kernel IPVS under qemu -------------------------------------------------

@pytest.mark.skipif(os.environ.get("XDPLB_TEST_IPVS") != "1",
                    reason="opt-in: `make test-ipvs` (boots Debian's kernel under qemu)")
def test_ipvs_and_xdplb_side_by_side_in_qemu():
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot)")
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "qemu-ipvs.sh"),
                        "--bench-seconds", os.environ.get("XDPLB_BENCH_SECONDS", "3")],
                       capture_output=True, text=True, timeout=3600)
    print(p.stdout)
    print(p.stderr)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    out = p.stdout
    assert "same answers in the same order: yes" in out
    # both scenarios side by side, then the pods' steps through xdplb
    assert out.count("every answer as in seed 000") == 3, out
    assert "=== seed 000 to its end through xdplb" in out
    assert "connections per second" in out and "forwarded packets per second" in out
    # the benchmark's own parts ran, with kernel IPVS rows measured (not skipped)
    assert "xdplb bench failed" not in out + p.stderr
    assert len(re.findall(r"^\| kernel IPVS \(-m\) \| [\d.,]+ \|", out, re.M)) >= 2, out
