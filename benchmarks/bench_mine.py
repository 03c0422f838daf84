#!/usr/bin/env python3
"""Benchmark repolm's miner against `git log` and PyDriller on the same repositories.

    python benchmarks/bench_mine.py REPO [REPO...] [--runs N] [--jobs J] [--no-pydriller]
                                    [--pydriller-seconds S | --pydriller-full] [--json FILE]

For every repository, one after another (never in parallel), it times:

  floor       git log --all -p -M                               > /dev/null
  same work   git log --all -p -M --diff-merges=first-parent    > /dev/null
              (repolm diffs merge commits against their first parent by default)
  repolm      mine(open_repo(repo), fresh_tmp_dir, MineConfig(jobs=J), full=True), in a
              fresh Python subprocess: interpreter start, imports, git, parsing and Parquet
              writing all included; peak RSS of the Python process and of its git children;
              then again with MineConfig(merge_diff="none"): the floor's own work
  PyDriller   Repository(repo, include_refs=True, include_remotes=True).traverse_commits(),
              reading every modified file's diff, added_lines and deleted_lines, in a fresh
              subprocess; by default stopped after --pydriller-seconds and extrapolated to the
              full history from its commits/s (the table says so); --pydriller-full runs it all

Each git/repolm figure is the median of --runs runs, after one untimed warm-up run of each
floor (which also counts the bytes of diff text they write). PyDriller runs --pydriller-runs
times (default 1). Output is Markdown (machine, one table per repository, a summary table);
--json FILE writes every number. Every git process runs under repolm's own git environment
(`repolm.gitrepo.git_env`: no pager, no lazy fetch, C locale), so the floors and the miner read
the repository under the same settings. Apart from that standard-library module, repolm and
PyDriller are imported in the subprocesses only.

Exit status: 0, or 2 when a commit count disagrees with `git rev-list --all --count`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repolm.gitrepo import git_env

RESULT_MARK = "BENCH_RESULT "
MB = 1e6  # MB = 10^6 bytes throughout
MIB = 1024 * 1024

FLOOR_ARGS = ["log", "--all", "-p", "-M"]
SAME_WORK_ARGS = ["log", "--all", "-p", "-M", "--diff-merges=first-parent"]


# --------------------------------------------------------------------------------------------
# Subprocess side: these run in a fresh interpreter (`python bench_mine.py --_child-... ARGS`).
# --------------------------------------------------------------------------------------------


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def _rusage_mib() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "python_peak_rss_mib": me.ru_maxrss / 1024,  # Linux: ru_maxrss is in KiB
        "python_cpu_s": me.ru_utime + me.ru_stime,
        "children_cpu_s": kids.ru_utime + kids.ru_stime,
    }


def child_mine(repo: str, stage_dir: str, jobs: int, merge_diff: str) -> None:
    t0 = time.perf_counter()
    from repolm.config import MineConfig
    from repolm.gitrepo import open_repo
    from repolm.mine.miner import mine

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = MineConfig(jobs=jobs, merge_diff=merge_diff)
    stats = mine(open_repo(repo), Path(stage_dir), cfg, full=True)
    t_mine = time.perf_counter() - t1
    _emit({"import_s": t_import, "mine_s": t_mine, "stats": stats, **_rusage_mib()})


def child_pydriller(repo: str, budget_s: float) -> None:
    """Traverse with PyDriller; stop after budget_s seconds of traversal (0: never)."""
    t0 = time.perf_counter()
    from pydriller import Repository

    t_import = time.perf_counter() - t0
    commits = files = merges = diff_chars = added = deleted = 0
    stopped = False
    start = time.perf_counter()
    for c in Repository(repo, include_refs=True, include_remotes=True).traverse_commits():
        for m in c.modified_files:
            diff_chars += len(m.diff)
            added += m.added_lines
            deleted += m.deleted_lines
            files += 1
        merges += c.merge
        commits += 1
        if budget_s and time.perf_counter() - start >= budget_s:
            stopped = True
            break
    loop_s = time.perf_counter() - start
    _emit(
        {
            "import_s": t_import,
            "loop_s": loop_s,
            "commits": commits,
            "merges": merges,
            "file_changes": files,
            "diff_chars": diff_chars,
            "added_lines": added,
            "deleted_lines": deleted,
            "stopped_early": stopped,
            **_rusage_mib(),
        }
    )
    if stopped:
        # Don't wait for PyDriller/GitPython to wind down a half-read `git rev-list`.
        os._exit(0)


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------


def note(msg: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True, env=git_env()
    ).stdout.strip()


class TreeRSS:
    """Sample the summed RSS of a process and all its descendants, every `every` seconds.

    ru_maxrss of a child is no good for this: an exec'd child inherits the high-water mark of
    the process that forked it, and concurrent git processes would not be summed anyway.
    """

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every, self.peak_bytes = pid, every, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * self._page
            except OSError:
                pass
            todo.extend(children.get(pid, ()))
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / MIB


def timed(
    cmd: list[str],
    *,
    stdout: Any = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    sample_rss: bool = False,
) -> dict[str, Any]:
    """Run cmd to completion; wall seconds, exit status, rusage of it and its waited children.

    stdout=subprocess.PIPE captures stdout (text), and with sample_rss also samples the peak
    summed RSS of the process tree; other stdout values are passed to Popen.
    """
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=env, start_new_session=True)
        out = b""
        timed_out = False
        tree_rss = None
        try:
            if stdout is subprocess.PIPE:
                sampler = TreeRSS(proc.pid) if sample_rss else None
                try:
                    out, _ = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, _ = proc.communicate()
                wall = time.perf_counter() - t0
                if sampler is not None:
                    tree_rss = sampler.stop()
                ru = None
            else:
                deadline = None if timeout is None else t0 + timeout
                while True:
                    pid, status, ru = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
                    if pid:
                        break
                    if time.perf_counter() > deadline:
                        timed_out = True
                        os.killpg(proc.pid, signal.SIGKILL)
                        pid, status, ru = os.wait4(proc.pid, 0)
                        break
                    time.sleep(0.05)
                wall = time.perf_counter() - t0
                proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:  # Ctrl-C: the child is in its own session, so end it here
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    res = {
        "wall_s": wall,
        "rc": proc.returncode,
        "stderr": stderr,
        "timed_out": timed_out,
        "tree_peak_rss_mib": tree_rss,
        "stdout": out.decode(errors="replace") if isinstance(out, bytes) else out,
    }
    if ru is not None:
        res["peak_rss_mib"] = ru.ru_maxrss / 1024
        res["cpu_s"] = ru.ru_utime + ru.ru_stime
    return res


def count_output(repo: str, args: list[str]) -> dict[str, Any]:
    """Run git, counting the bytes it writes (this is the untimed warm-up run)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["git", "-C", repo, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=git_env()
    )
    n = 0
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 1 << 20):
        n += len(chunk)
    rc = proc.wait()
    proc.stdout.close()
    if rc != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {repo} (exit {rc})")
    return {"bytes": n, "warmup_wall_s": time.perf_counter() - t0}


def child_result(res: dict[str, Any], what: str) -> dict[str, Any]:
    for line in reversed(res["stdout"].splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = "\n".join(res["stderr"].splitlines()[-30:])
    raise RuntimeError(f"{what} failed (exit {res['rc']}, timed out: {res['timed_out']}):\n{tail}")


def bench_git(repo: str, args: list[str], runs: int, label: str) -> dict[str, Any]:
    walls, rss, cpu = [], [], []
    for i in range(runs):
        r = timed(["git", "-C", repo, *args], env=git_env())
        if r["rc"] != 0:
            raise SystemExit(f"git {' '.join(args)} failed in {repo}: {r['stderr'][-2000:]}")
        walls.append(r["wall_s"])
        rss.append(r["peak_rss_mib"])
        cpu.append(r["cpu_s"])
        note(f"  {label} run {i + 1}/{runs}: {r['wall_s']:.2f} s")
    return {
        "command": "git " + " ".join(args),
        "wall_s": statistics.median(walls),
        "wall_s_runs": walls,
        "cpu_s": statistics.median(cpu),
        "peak_rss_mib": max(rss),
    }


def bench_repolm(
    repo: str, runs: int, jobs: int, tmp_root: str | None, merge_diff: str = "first-parent"
) -> dict[str, Any]:
    walls, results = [], []
    for i in range(runs):
        stage = tempfile.mkdtemp(prefix="bench-repolm-", dir=tmp_root)
        try:
            r = timed(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--_child-mine",
                    repo,
                    stage,
                    str(jobs),
                    merge_diff,
                ],
                stdout=subprocess.PIPE,
                sample_rss=True,
            )
            res = child_result(r, "repolm mine")
            # The sampler can miss a short peak; the tree is never below its Python process.
            res["tree_peak_rss_mib"] = max(r["tree_peak_rss_mib"], res["python_peak_rss_mib"])
            res["output_bytes"] = {
                p.name: p.stat().st_size for p in Path(stage).iterdir() if p.is_file()
            }
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if r["stderr"].strip():
            note(
                "  repolm stderr (last lines):\n    "
                + "\n    ".join(r["stderr"].strip().splitlines()[-5:])
            )
        walls.append(r["wall_s"])
        results.append(res)
        note(
            f"  repolm ({merge_diff}) run {i + 1}/{runs}: {r['wall_s']:.2f} s "
            f"(imports {res['import_s']:.2f} s, mine() {res['mine_s']:.2f} s, "
            f"peak RSS {res['python_peak_rss_mib']:.0f} MiB Python, "
            f"{res['tree_peak_rss_mib']:.0f} MiB with git processes)"
        )
    last = results[-1]
    stats = last["stats"]
    return {
        "wall_s": statistics.median(walls),
        "wall_s_runs": walls,
        "import_s": statistics.median(r["import_s"] for r in results),
        "mine_s": statistics.median(r["mine_s"] for r in results),
        "python_peak_rss_mib": max(r["python_peak_rss_mib"] for r in results),
        "tree_peak_rss_mib": max(r["tree_peak_rss_mib"] for r in results),
        "python_cpu_s": statistics.median(r["python_cpu_s"] for r in results),
        "git_cpu_s": statistics.median(r["children_cpu_s"] for r in results),
        "commits": stats.get("commits"),
        "commits_each_run": [r["stats"].get("commits") for r in results],
        "jobs": stats.get("jobs"),
        "output_bytes": last["output_bytes"],
        "stats": stats,
    }


def bench_pydriller(repo: str, total_commits: int, budget_s: float, runs: int) -> dict[str, Any]:
    walls, estimates, results = [], [], []
    for i in range(runs):
        timeout = None if not budget_s else budget_s + 300
        r = timed(
            [sys.executable, os.path.abspath(__file__), "--_child-pydriller", repo, str(budget_s)],
            stdout=subprocess.PIPE,
            timeout=timeout,
            sample_rss=True,
        )
        res = child_result(r, "PyDriller")
        # The sampler can miss a short peak; the tree is never below its Python process.
        res["tree_peak_rss_mib"] = max(r["tree_peak_rss_mib"], res["python_peak_rss_mib"])
        overhead = max(r["wall_s"] - res["loop_s"], 0.0)  # interpreter start, imports, exit
        if res["stopped_early"] and res["commits"]:
            est = overhead + res["loop_s"] * total_commits / res["commits"]
        else:
            est = r["wall_s"]
        walls.append(r["wall_s"])
        estimates.append(est)
        results.append(res)
        how = (
            f"{res['commits']} commits in {res['loop_s']:.1f} s, extrapolated to {est:.1f} s"
            if res["stopped_early"]
            else f"all {res['commits']} commits"
        )
        note(f"  PyDriller run {i + 1}/{runs}: {r['wall_s']:.2f} s ({how})")
    extrapolated = any(r["stopped_early"] for r in results)
    return {
        "wall_s": statistics.median(estimates),  # full-history seconds (measured or estimated)
        "extrapolated": extrapolated,
        "measured_wall_s_runs": walls,
        "estimated_full_wall_s_runs": estimates,
        "measured_commits": statistics.median(r["commits"] for r in results),
        "measured_loop_s": statistics.median(r["loop_s"] for r in results),
        "budget_s": budget_s,
        "commits_seen_full_run": None if extrapolated else results[-1]["commits"],
        "merges_seen": results[-1]["merges"],
        "file_changes_seen": results[-1]["file_changes"],
        "diff_chars_seen": results[-1]["diff_chars"],
        "python_peak_rss_mib": max(r["python_peak_rss_mib"] for r in results),
        "tree_peak_rss_mib": max(r["tree_peak_rss_mib"] for r in results),
        "runs": results,
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    except OSError:
        pass

    def version_of(dist: str) -> str | None:
        from importlib import metadata

        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": mem,
        "os": f"{platform.system()} {platform.release()}",
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "repolm": version_of("repolm"),
        "pydriller": version_of("PyDriller"),
        "gitpython": version_of("GitPython"),
        "pyarrow": version_of("pyarrow"),
    }


def bench_repo(path: str, args: argparse.Namespace) -> dict[str, Any]:
    repo = str(Path(path).expanduser().resolve())
    name = Path(repo).name
    note(f"{name}: {repo}")
    expected = int(git(repo, "rev-list", "--all", "--count"))
    merges = int(git(repo, "rev-list", "--all", "--merges", "--count"))
    note(f"  {expected} commits ({merges} merges); warm-up runs of both floors, counting bytes")
    floor_out = count_output(repo, FLOOR_ARGS)
    same_out = count_output(repo, SAME_WORK_ARGS)
    out: dict[str, Any] = {
        "name": name,
        "path": repo,
        "head": git(repo, "rev-parse", "HEAD"),
        "commits_rev_list": expected,
        "merges_rev_list": merges,
        "floor_bytes": floor_out["bytes"],
        "same_work_bytes": same_out["bytes"],
    }
    out["floor"] = bench_git(repo, FLOOR_ARGS, args.runs, "floor")
    out["same_work"] = bench_git(repo, SAME_WORK_ARGS, args.runs, "same-work floor")
    out["repolm"] = bench_repolm(repo, args.runs, args.jobs, args.tmp_dir)
    # The floor diffs no merge: this run does exactly its work, so it measures repolm itself.
    out["repolm_floor_work"] = bench_repolm(repo, args.runs, args.jobs, args.tmp_dir, "none")
    mismatches = []
    for got in out["repolm"]["commits_each_run"]:
        if got != expected:
            mismatches.append(
                f"repolm mined {got} commits, git rev-list --all --count says {expected}"
            )
    if not args.no_pydriller:
        budget = 0 if args.pydriller_full else args.pydriller_seconds
        try:
            out["pydriller"] = bench_pydriller(repo, expected, budget, args.pydriller_runs)
            seen = out["pydriller"]["commits_seen_full_run"]
            if seen is not None and seen != expected:
                out["pydriller"]["count_note"] = (
                    f"PyDriller traversed {seen} commits, "
                    f"git rev-list --all --count says {expected}"
                )
                note("  " + out["pydriller"]["count_note"])
        except RuntimeError as e:
            note(f"  PyDriller skipped: {e}")
            out["pydriller"] = {"error": str(e)}
    out["mismatches"] = mismatches
    for m in mismatches:
        banner = "!" * 78
        print(
            f"\n{banner}\n!!! COMMIT COUNT MISMATCH in {name}: {m}\n{banner}\n",
            file=sys.stderr,
            flush=True,
        )
    fw, sw, rw = out["floor"]["wall_s"], out["same_work"]["wall_s"], out["repolm"]["wall_s"]
    ratios = {"repolm/floor": rw / fw, "repolm/same_work": rw / sw}
    pw = out.get("pydriller", {}).get("wall_s")
    if pw:
        ratios["pydriller/floor"] = pw / fw
        ratios["pydriller/repolm"] = pw / rw
    out["ratios"] = ratios
    return out


# ---------------------------------------------------------------------------- formatting


def fs(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fr(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def fmib(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def render(machine: dict[str, Any], settings: dict[str, Any], repos: list[dict[str, Any]]) -> str:
    L: list[str] = []
    ram = f"{machine['ram_bytes'] / 2**30:.1f} GiB" if machine["ram_bytes"] else "?"
    cores = machine["cores"]
    if machine.get("cores_usable") and machine["cores_usable"] != cores:
        cores = f"{cores} ({machine['cores_usable']} usable)"
    L.append(f"## repolm mine benchmark ({settings['date']})")
    L.append("")
    L.append(f"- Machine: {machine['cpu']}, {cores} cores, {ram} RAM, {machine['os']}")
    L.append(
        f"- {machine['git']}; Python {machine['python']}; repolm {machine['repolm']}; "
        f"PyDriller {machine['pydriller']} (GitPython {machine['gitpython']}); "
        f"pyarrow {machine['pyarrow']}"
    )
    runs = settings["pydriller_runs"]
    if settings["no_pydriller"]:
        pyd = "not run"
    elif settings["pydriller_full"]:
        pyd = f"{runs} run(s), full history"
    else:
        pyd = (
            f"{runs} run(s), time-limited to {settings['pydriller_seconds']:g} s of traversal; "
            "if it has not finished by then, its full-history time is extrapolated"
        )
    L.append(
        f"- Timings: median of {settings['runs']} run(s) after one warm-up run of each floor; "
        f"repolm jobs={settings['jobs'] or 'default'}; PyDriller: {pyd}"
    )
    L.append(f"- Command: `{settings['command']}`")
    L.append("")
    for r in repos:
        L.append(f"### {r['name']}")
        L.append("")
        rl = r["repolm"]
        ok = "✓ equal" if not r["mismatches"] else "**MISMATCH**"
        L.append(
            f"- Commits: {r['commits_rev_list']} (`git rev-list --all --count`, "
            f"{r['merges_rev_list']} merges); repolm mined {rl['commits']} — {ok}"
        )
        L.append(
            f"- Diff text: {r['floor_bytes'] / MB:.1f} MB from the floor, "
            f"{r['same_work_bytes'] / MB:.1f} MB with merges diffed against their first "
            f"parent; repolm kept {rl['stats'].get('patch_bytes', 0) / MB:.1f} MB of patch "
            f"text in {rl['stats'].get('file_changes')} file changes "
            f"({rl['stats'].get('truncated_patches')} truncated); Parquet written: "
            f"{sum(rl['output_bytes'].values()) / MB:.1f} MB"
        )
        L.append("")
        L.append("| | wall s | commits/s | MB/s | × floor | × same-work floor | peak RSS MiB |")
        L.append("|---|--:|--:|--:|--:|--:|--:|")
        n, mb = r["commits_rev_list"], r["floor_bytes"] / MB
        fw, sw = r["floor"]["wall_s"], r["same_work"]["wall_s"]

        def row(
            label: str,
            w: float,
            rss: str,
            n: int = n,
            mb: float = mb,
            fw: float = fw,
            sw: float = sw,
        ) -> str:
            return (
                f"| {label} | {fs(w)} | {n / w:,.0f} | {mb / w:.1f} | {fr(w / fw)} | "
                f"{fr(w / sw)} | {rss} |"
            )

        L.append(row("floor: `git log --all -p -M`", fw, fmib(r["floor"]["peak_rss_mib"])))
        L.append(
            row(
                "same-work floor: `… --diff-merges=first-parent`",
                sw,
                fmib(r["same_work"]["peak_rss_mib"]),
            )
        )
        L.append(
            row(
                f"repolm mine, jobs={rl['jobs']} (end to end, Parquet included)",
                rl["wall_s"],
                f"{fmib(rl['python_peak_rss_mib'])} ({fmib(rl['tree_peak_rss_mib'])} with git)",
            )
        )
        rn = r["repolm_floor_work"]
        L.append(
            row(
                "repolm mine, `merge_diff: none` (the floor's work)",
                rn["wall_s"],
                f"{fmib(rn['python_peak_rss_mib'])} ({fmib(rn['tree_peak_rss_mib'])} with git)",
            )
        )
        p = r.get("pydriller")
        if p and "error" not in p:
            label = "PyDriller"
            if p["extrapolated"]:
                label += (
                    f" (**extrapolated** from {p['measured_commits']:.0f} commits "
                    f"measured in {p['measured_loop_s']:.1f} s)"
                )
            else:
                label += f" (measured over all {p['commits_seen_full_run']} commits)"
            L.append(
                row(
                    label,
                    p["wall_s"],
                    f"{fmib(p['python_peak_rss_mib'])} ({fmib(p['tree_peak_rss_mib'])} with git)",
                )
            )
        elif p:
            L.append("| PyDriller | failed | | | | | |")
        L.append("")
        L.append(
            f"repolm: {fs(rl['import_s'])} s interpreter start and imports, "
            f"{fs(rl['mine_s'])} s in `mine()`; CPU {rl['python_cpu_s']:.1f} s Python + "
            f"{rl['git_cpu_s']:.1f} s git."
        )
        if p and "error" not in p and p["extrapolated"]:
            L.append(
                f"PyDriller traverses oldest commits first, so the sample is the "
                f"{p['measured_commits']:.0f} oldest; the estimate assumes the rest cost the "
                "same per commit."
            )
        L.append("")

    L.append("### Summary")
    L.append("")
    L.append(
        "| repository | commits | merges | diff MB | floor s | same-work s | repolm s "
        "| repolm no-merge-diff s | PyDriller s | repolm/floor | repolm/same-work "
        "| repolm no-merge-diff/floor | PyDriller/floor | PyDriller/repolm "
        "| repolm peak RSS MiB (with git) |"
    )
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in repos:
        p = r.get("pydriller") or {}
        pw = p.get("wall_s")
        ps = "–" if pw is None else (f"~{fs(pw)}*" if p.get("extrapolated") else fs(pw))
        q = r["ratios"]
        L.append(
            f"| {r['name']} | {r['commits_rev_list']}"
            f"{'' if not r['mismatches'] else ' (**MISMATCH**)'} | {r['merges_rev_list']} | "
            f"{r['floor_bytes'] / MB:.1f} | {fs(r['floor']['wall_s'])} | "
            f"{fs(r['same_work']['wall_s'])} | {fs(r['repolm']['wall_s'])} | "
            f"{fs(r['repolm_floor_work']['wall_s'])} | {ps} | "
            f"{fr(q['repolm/floor'])} | {fr(q['repolm/same_work'])} | "
            f"{fr(r['repolm_floor_work']['wall_s'] / r['floor']['wall_s'])} | "
            f"{fr(q.get('pydriller/floor'))} | {fr(q.get('pydriller/repolm'))} | "
            f"{fmib(r['repolm']['python_peak_rss_mib'])} "
            f"({fmib(r['repolm']['tree_peak_rss_mib'])}) |"
        )
    L.append("")
    L.append(
        "MB = 10^6 bytes of the floor's output; MB/s = that / wall seconds for every row, so "
        "rows compare like for like. Ratios are wall-time ratios (higher = slower). Peak RSS: "
        "the Python process's own high-water mark (getrusage), and in brackets the peak of "
        "its whole process tree summed, git processes included (sampled every 50 ms); "
        "for the floors, the git process's own (wait4)."
    )
    if any((r.get("pydriller") or {}).get("extrapolated") for r in repos):
        L.append(
            "\\* PyDriller time extrapolated from commits/s over a time-limited run "
            "(see each repository's table), not measured over the full history."
        )
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child-mine"]:
        child_mine(argv[1], argv[2], int(argv[3]), argv[4])
        return 0
    if argv[:1] == ["--_child-pydriller"]:
        child_pydriller(argv[1], float(argv[2]))
        return 0

    ap = argparse.ArgumentParser(
        description="Time repolm's miner against `git log -p` and PyDriller, one repository "
        "after another. Markdown on stdout, progress on stderr."
    )
    ap.add_argument("repos", nargs="+", metavar="REPO", help="git repositories to mine")
    ap.add_argument(
        "--runs",
        type=int,
        default=3,
        help="timed runs of each git floor and of repolm; the median is reported (default 3)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="MineConfig(jobs=J) for repolm; 0 = repolm's default (default 0)",
    )
    ap.add_argument("--no-pydriller", action="store_true", help="skip PyDriller")
    ap.add_argument(
        "--pydriller-seconds",
        type=float,
        default=60,
        help="stop PyDriller after this many seconds of traversal and extrapolate its "
        "full-history time from commits/s (default 60)",
    )
    ap.add_argument(
        "--pydriller-full",
        action="store_true",
        help="run PyDriller over the full history instead (slow)",
    )
    ap.add_argument(
        "--pydriller-runs",
        type=int,
        default=1,
        help="PyDriller runs; the median is reported (default 1)",
    )
    ap.add_argument(
        "--tmp-dir",
        default=None,
        help="where repolm's fresh stage directories go (default: the system temp dir)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.pydriller_runs < 1:
        ap.error("--runs and --pydriller-runs must be at least 1")
    if args.pydriller_seconds <= 0 and not args.pydriller_full:
        ap.error("--pydriller-seconds must be positive (or use --pydriller-full)")

    machine = machine_info()
    settings = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_mine.py " + " ".join(argv),
        "runs": args.runs,
        "jobs": args.jobs,
        "no_pydriller": args.no_pydriller,
        "pydriller_seconds": args.pydriller_seconds,
        "pydriller_full": args.pydriller_full,
        "pydriller_runs": args.pydriller_runs,
    }
    repos = [bench_repo(r, args) for r in args.repos]
    print(render(machine, settings, repos), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": machine, "settings": settings, "repositories": repos},
                indent=2,
                default=str,
            )
            + "\n"
        )
        note(f"wrote {args.json}")
    if any(r["mismatches"] for r in repos):
        for r in repos:
            for m in r["mismatches"]:
                print(f"!!! COMMIT COUNT MISMATCH in {r['name']}: {m}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
