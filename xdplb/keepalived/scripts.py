"""Running keepalived's scripts (MISC_CHECK's misc_path, notify_up /
notify_down) under keepalived's script-security rules (keepalived/core/notify.c):

* a script runs as its `user` (MISC_CHECK), else global_defs' `script_user`,
  else the user `keepalived_script` if it exists, else the daemon's user
  (root), with that user's group unless one is named;
* a name without a slash is looked up in PATH, as execvp does;
* the script must be a regular file executable by that user, else it is
  disabled ("is not executable for uid:gid");
* when it would run as root (uid or gid 0), every part of its path must be
  safe: owned by root, and not writable by a non-root group or by others
  (directories with the sticky bit excepted). An unsafe path is logged,
  and with global_defs' `enable_script_security` the script is disabled.

Disabling is an error of the configuration here (file and line), so
`xdplb daemon -t` says so before anything runs. Not implemented:
keepalived's symlink resolution option (`use_symlinks`) and libmagic's
shebang test.
"""
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat

log = logging.getLogger("xdplb.daemon")


def resolve(argv0):
    """The path of a script (PATH lookup without a slash), or None."""
    if "/" in argv0:
        return argv0
    return shutil.which(argv0, mode=os.F_OK)


def _executable_by(st, uid, gid):
    if uid == 0:
        return bool(st.st_mode & 0o111)
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _unsafe(path):
    """The first part of path that a non-root user could change, or None."""
    parts = os.path.abspath(path).split("/")[1:]
    for i in range(len(parts) + 1):
        p = "/" + "/".join(parts[:i])
        st = os.lstat(p)
        is_dir = stat.S_ISDIR(st.st_mode)
        group_or_world = (st.st_gid and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH
        if st.st_uid or ((not is_dir or not st.st_mode & stat.S_ISVTX) and group_or_world):
            return p
    return None


def check(script, security):
    """Why script may not run (keepalived's words), or None; logs an unsafe
    path that is run anyway (no enable_script_security)."""
    name = script.argv[0]
    path = resolve(name)
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return f"Script {name} cannot be accessed - disabling"
    if not _executable_by(st, script.uid, script.gid):
        return (f"WARNING - script '{name}' is not executable for uid:gid "
                f"{script.uid}:{script.gid} - disabling.")
    if script.uid == 0 or script.gid == 0:
        bad = _unsafe(path)
        if bad is not None:
            if security:
                return f"Unsafe permissions found for script '{name}' - disabling."
            log.warning("Unsafe permissions found for script '%s'.", name)
    return None


async def run(script, timeout=None, env=None):
    """Run script; its exit status, or None if it was killed at timeout (it
    runs in a session of its own, which is killed whole)."""
    kw = {}
    if script.uid != os.getuid():
        kw.update(user=script.uid, extra_groups=[])
    if script.gid != os.getgid():
        kw["group"] = script.gid
    proc = await asyncio.create_subprocess_exec(
        resolve(script.argv[0]) or script.argv[0], *script.argv[1:],
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True, env=env, cwd="/", **kw)
    try:
        async with asyncio.timeout(timeout):      # not wait_for: see checkers.within
            return await proc.wait()
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        return None
    except asyncio.CancelledError:
        _kill(proc)
        raise


def _kill(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
