"""The host's saved configuration, restored at boot (`xdplb save`, `xdplb restore`).

Kernel IPVS loses its table at a reboot too; Debian's ipvsadm package
restores /etc/ipvsadm.rules (written by `ipvsadm-save`) when it starts, with
`ipvsadm -C` then `ipvsadm -R`. xdplb keeps two files in one folder
(/etc/xdplb unless told otherwise):

  interfaces   the interfaces running xdplb, one `IFNAME MODE` a line
               (MODE native or generic); `#` starts a comment
  rules        `xdplbadm -S -n`'s text, which `xdplbadm -R` reads back

`restore` applies the rules first (through `xdplbadm -R`, the one write
path, so a bad line gets ipvsadm's words) and then attaches, so the
services exist before the first frame meets the program. Rules equal to
the live ones are left alone: restoring twice (a restarted unit) keeps every
connection.
"""
import os
import subprocess
import sys

from . import loader
from .control import Control

ETC = "/etc/xdplb"
INTERFACES, RULES = "interfaces", "rules"
MODES = ("native", "generic")


class SavedError(Exception):
    """A saved file that cannot be used: the message names the file and line."""


def _write(path, text):
    """Replace path with text atomically (a crash leaves the old or the new file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(folder=ETC):
    """Write folder/interfaces and folder/rules from this netns's live state.
    Returns (interfaces, number of rule lines)."""
    ctl = Control.open()
    if ctl is None:
        raise SavedError("xdplb has no state in this network namespace: nothing to save")
    with ctl:
        rules = ctl.save(numeric=True)
        attached = [(name, mode) for name, _, mode in loader.attached(ctl.st)]
    os.makedirs(folder, mode=0o755, exist_ok=True)
    _write(os.path.join(folder, INTERFACES),
           "# xdplb save: the interfaces running xdplb (IFNAME MODE)\n"
           + "".join(f"{name} {mode}\n" for name, mode in attached))
    _write(os.path.join(folder, RULES), rules)
    return [name for name, _ in attached], rules.count("\n")


def read_interfaces(path):
    """[(ifname, mode)] of an interfaces file; SavedError names file:line."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) > 2 or (len(words) == 2 and words[1] not in MODES):
                raise SavedError(f"{path}:{n}: expected 'IFNAME [native|generic]', "
                                 f"got {line.strip()!r}")
            out.append((words[0], words[1] if len(words) == 2 else "native"))
    return out


def _xdplbadm(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "xdplb.adm", *args], input=stdin,
                          capture_output=True, text=True)


def restore(folder=ETC, say=print):
    """Apply folder/rules (unless they equal the live rules) and attach to
    folder/interfaces. Every interface is tried; returns the messages of
    those that failed (empty: all done). Raises SavedError for a bad file
    or refused rules."""
    ifs_path, rules_path = os.path.join(folder, INTERFACES), os.path.join(folder, RULES)
    interfaces = read_interfaces(ifs_path) if os.path.exists(ifs_path) else []
    if os.path.exists(rules_path):
        with open(rules_path) as f:
            rules = f.read()
        live = _xdplbadm(["-S", "-n"])
        if live.returncode == 0 and live.stdout == rules:
            say(f"rules: {rules_path} equals the live rules, left alone")
        else:
            for args, stdin in ((["-C"], None), (["-R"], rules)):
                done = _xdplbadm(args, stdin)
                if done.returncode != 0 or done.stderr:
                    raise SavedError(f"{rules_path}: xdplbadm {' '.join(args)} failed "
                                     f"(exit {done.returncode}): {done.stderr.strip()}")
            say(f"rules: restored {rules.count(chr(10))} lines from {rules_path}")
    failed = []
    if interfaces:
        with loader.open_state() as st:
            for name, mode in interfaces:
                try:
                    loader.attach(st, name, mode)
                    say(f"attached xdplb to {name} in {mode} mode")
                except (OSError, ValueError) as e:
                    failed.append(f"{ifs_path}: {name}: {e}")
    return failed
