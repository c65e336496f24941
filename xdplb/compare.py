"""`xdplb lab compare`: the seed-000 scenario through kernel IPVS and through
xdplb on the same machine, side by side, then the benchmark's lab parts.

The work is vagrant/compare.sh (the script the Vagrant lab runs on its lb VM),
run here on the one-host netns lab with vagrant/on-netns.sh as the way to reach
a node. Kernel IPVS needs a kernel with IPVS: with `--where auto` (default)
this runs locally when the kernel has it, and otherwise boots Debian's stock
kernel under qemu (scripts/qemu-ipvs.sh, KVM or software emulation) and runs
`xdplb lab compare --where here` inside it.
"""
import os
import subprocess
import sys

import click

from . import lab as xlab
from .netns import NetnsError
from .state import StateError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAGRANT_DIR = os.path.join(ROOT, "vagrant")
COMPARE_SH = os.path.join(VAGRANT_DIR, "compare.sh")
QEMU_SH = os.path.join(ROOT, "scripts", "qemu-ipvs.sh")


def kernel_has_ipvs():
    """True if IPVS is in this kernel (built in, loaded, or loadable)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    subprocess.run(["modprobe", "-q", "ip_vs"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return os.path.exists("/proc/net/ip_vs")


def script_env(prefix, bench_seconds, xdp_mode="native"):
    env = xlab.child_env()
    env.update({
        "ON": os.path.join(VAGRANT_DIR, "on-netns.sh"),
        "XDPLB_LAB_PREFIX": prefix,
        "LB_IFS": " ".join(xlab.LB_IFS),
        "LB_CLIENT_IFS": " ".join(xlab.CLIENT_IFS),
        "LB_RS_IFS": " ".join(xlab.BACKEND_IFS),
        "XDP_MODE": xdp_mode,
        "BENCH_SECONDS": str(bench_seconds),
    })
    return env


class _PatientLab(xlab.Lab):
    """The netns lab with long command timeouts: under software emulation (the
    qemu guest without KVM) bcc's compilation in `xdplb attach` takes minutes."""

    def run(self, node, argv, check=True, timeout=60, **kw):
        return super().run(node, argv, check=check, timeout=max(timeout, 1800), **kw)


def run_here(prefix=xlab.PREFIX, bench_seconds=5, xdp_mode="native", say=None):
    """compare.sh on the netns lab of this kernel; returns its exit status."""
    say = say or (lambda m: click.echo(m, err=True))
    lab = _PatientLab(prefix, say=say)
    was_up = lab.is_up()
    if not was_up:
        lab.up(xdp_mode)
    try:
        return subprocess.run(["bash", COMPARE_SH], env=script_env(prefix, bench_seconds, xdp_mode),
                              check=False).returncode
    finally:
        if not was_up:
            lab.down(quiet=True)
            say(f"lab {prefix!r} torn down (it was not up before)")
        else:
            say(f"lab {prefix!r} left up (`xdplb lab down` removes it); xdplb is attached again")


@click.command("compare")
@click.option("--where", type=click.Choice(["auto", "here", "qemu"]), default="auto",
              show_default=True,
              help="here: this kernel (needs IPVS); qemu: Debian's kernel under qemu; "
                   "auto: here if this kernel has IPVS, else qemu")
@click.option("--bench-seconds", type=click.IntRange(0), default=5, show_default=True,
              help="seconds per benchmark part (0: no benchmark)")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
              show_default=True, help="qemu accelerator (auto: KVM if /dev/kvm works)")
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native",
              show_default=True, help="XDP mode on the lb's veths")
@click.pass_context
def compare_command(ctx, where, bench_seconds, accel, mode):
    """Seed-000 demo through kernel IPVS and xdplb, side by side, then benchmark both."""
    prefix = ctx.obj or xlab.PREFIX
    if where == "auto":
        where = "here" if kernel_has_ipvs() else "qemu"
        if where == "qemu":
            click.echo("this kernel has no IPVS: running the comparison in qemu "
                       "(scripts/qemu-ipvs.sh)", err=True)
    if where == "qemu":
        ctx.exit(subprocess.run(["bash", QEMU_SH, "--accel", accel,
                                 "--bench-seconds", str(bench_seconds)], check=False).returncode)
    if not kernel_has_ipvs():
        raise click.ClickException("this kernel has no IPVS (no /proc/net/ip_vs after "
                                   "modprobe ip_vs): use --where qemu")
    try:
        ctx.exit(run_here(prefix, bench_seconds, mode))
    except (NetnsError, StateError, OSError) as e:
        raise click.ClickException(str(e)) from e


if __name__ == "__main__":  # pragma: no cover
    sys.exit(compare_command.main(prog_name="xdplb lab compare"))
