#!/usr/bin/env python3
"""The container runtime of tests/k8s/kubelet.py: starts one container's process the way runc would, on this
machine's root filesystem (the simulated image is the host's userland plus a few files bound into it).

    python3 tests/k8s/runtime.py SPEC.json      (as root; the kubelet writes SPEC)

SPEC: {"mounts": [{"source": host path, "target": container path, "readOnly": bool}],
       "symlinks": [{"target": container path, "link": where it points}],
       "readOnlyRoot": bool, "user": {"uid", "gid", "groups"} or null (stay root),
       "noNewPrivs": bool, "dropCapabilities": bool, "argv": [...], "env": {...}, "cwd": "/",
       "scratch": an empty host directory for this container}

1. A private mount namespace (nothing done here is seen outside it). A mount point that does not exist is
   created in an overlay of its deepest existing parent (upper layer on a tmpfs at `scratch`), so the host's
   filesystem is never changed; inside a volume already mounted it is created in the volume, as runc does.
2. Each mount is a bind mount (deepest last), remounted read-only when asked; image files are bound read-only.
3. A private PID namespace: this process forks an init (PID 1, root, killed with its parent) that mounts a
   fresh /proc, makes the root filesystem (and the overlays) read-only when asked, and forks the container's
   process (PID 2) as its user: setpriv --reuid/--regid/--groups, no_new_privs, every capability dropped from
   the bounding and inheritable sets. SIGTERM is passed down; the exit code is passed up.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)


def log(message):
    print(f"podsim-runtime: {message}", file=sys.stderr, flush=True)


def sh(*argv):
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip() or out.returncode}")


def depth(path):
    return len([p for p in path.split("/") if p])


class Mounter:
    def __init__(self, scratch):
        self.scratch = scratch
        self.overlays = []  # real paths overlaid (writable layers the runtime created)
        self.mounted = []  # real paths of bind mounts made so far

    def writable_here(self, real):
        """Whether creating `real` changes only this container's view (inside a mount or overlay of ours)."""
        return any(real == m or real.startswith(m.rstrip("/") + "/") for m in self.mounted + self.overlays)

    def writable(self, real):
        """Makes the directory `real` writable in this namespace only: an overlay on it, unless it is already
        inside a mount or overlay of ours."""
        if self.writable_here(real):
            return
        if real == "/":
            raise RuntimeError("cannot create an entry in the root directory itself")
        n = len(self.overlays)
        upper, work = os.path.join(self.scratch, f"ov{n}", "upper"), os.path.join(self.scratch, f"ov{n}", "work")
        os.makedirs(upper)
        os.makedirs(work)
        st = os.stat(real)
        os.chmod(upper, st.st_mode & 0o7777)
        os.chown(upper, st.st_uid, st.st_gid)
        sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={real},upperdir={upper},workdir={work}", real)
        self.overlays.append(real)

    def make(self, path, directory):
        """Creates `path` (a directory, or an empty file) without touching the host's filesystem."""
        if os.path.lexists(path):
            return
        ancestor = os.path.dirname(path)
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        self.writable(os.path.realpath(ancestor))
        if directory:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()

    def bind(self, source, target, read_only):
        self.make(target, os.path.isdir(source))
        sh("mount", "--bind", source, target)
        if read_only:
            sh("mount", "-o", "remount,bind,ro", target)
        self.mounted.append(os.path.realpath(target))

    def symlink(self, target, link):
        parent = os.path.dirname(target)
        self.make(parent, True)
        self.writable(os.path.realpath(parent))
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(link, target)


def user_argv(spec):
    user = spec.get("user")
    if user is None:
        return []
    groups = user.get("groups") or []
    argv = ["/usr/bin/setpriv", f"--reuid={user['uid']}", f"--regid={user['gid']}",
            f"--groups={','.join(str(g) for g in groups)}" if groups else "--clear-groups"]
    if spec.get("noNewPrivs"):
        argv.append("--no-new-privs")
    if spec.get("dropCapabilities"):
        argv += ["--inh-caps=-all", "--bounding-set=-all"]
    return argv + ["--"]


def init(spec, mounter):
    """PID 1 of the container's PID namespace."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sh("mount", "-t", "proc", "proc", "/proc")
    if spec.get("readOnlyRoot"):
        for path in ["/"] + mounter.overlays:
            sh("mount", "-o", "remount,bind,ro", path)
    argv = user_argv(spec) + spec["argv"]
    child = os.fork()
    if child == 0:
        try:
            os.chdir(spec.get("cwd") or "/")
            env = spec["env"]
            if argv[0].startswith("/"):
                os.execve(argv[0], argv, env)
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            log(f"exec {argv[0]}: {e}")
        os._exit(127)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: os.kill(child, signal.SIGINT))
    while True:  # reap everything; leave with the container process's status
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if libc.unshare(CLONE_NEWNS) != 0:
        log(f"unshare(CLONE_NEWNS): errno {ctypes.get_errno()}")
        return 125
    try:
        sh("mount", "--make-rprivate", "/")
        mounter = Mounter(spec["scratch"])
        sh("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", spec["scratch"])
        for m in sorted(spec["mounts"], key=lambda m: depth(m["target"])):
            mounter.bind(m["source"], m["target"], m.get("readOnly", False))
        for s in spec.get("symlinks", []):
            mounter.symlink(s["target"], s["link"])
    except (RuntimeError, OSError) as e:
        log(f"container setup failed: {e}")
        return 125
    if libc.unshare(CLONE_NEWPID) != 0:
        log(f"unshare(CLONE_NEWPID): errno {ctypes.get_errno()}")
        return 125
    pid = os.fork()
    if pid == 0:
        try:
            init(spec, mounter)
        except Exception as e:  # noqa: BLE001 - report anything, never return into the parent's code
            log(f"container init failed: {e}")
        os._exit(125)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: os.kill(pid, signal.SIGINT))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
