"""A thin layer over the git CLI: open a repository, read its refs, commit graph and blobs.

Shared below the stages: mining, chunking, filtering and building all read the repository, and
the pipeline hashes its refs.

All git processes run with a fixed environment and config so that user settings (pagers,
colours, external diff drivers, lazy fetches from a promisor remote) never change what we read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from repolm.errors import GitError

MIN_GIT = (2, 31)  # --diff-merges=first-parent

# Config that pins git's output format whatever the user's ~/.gitconfig says.
PINNED_CONFIG = (
    "core.quotePath=false",
    "color.ui=never",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "diff.relative=false",
    "diff.external=",
    "log.showSignature=false",
    "i18n.logOutputEncoding=UTF-8",
    "core.fsmonitor=false",
    "core.abbrev=auto",
    "diff.algorithm=myers",
    "diff.context=3",
    "diff.interHunkContext=0",
    "diff.indentHeuristic=true",
    "diff.suppressBlankEmpty=false",
    "diff.ignoreSubmodules=none",
    "log.showRoot=true",
)


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LC_ALL="C",
        LANGUAGE="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        GIT_PAGER="cat",
        PAGER="cat",
        # Never fetch: a partial clone's missing blobs are counted and skipped, not downloaded.
        GIT_NO_LAZY_FETCH="1",
        GIT_ALLOW_PROTOCOL="repolm-no-network",
    )
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_NAMESPACE"):
        env.pop(var, None)
    return env


class BlobReader:
    """One long-lived `git cat-file --batch`: blobs by sha, one round trip each, no process
    start per blob. Use as a context manager."""

    def __init__(self, repo: Repo) -> None:
        self._proc = subprocess.Popen(
            repo.cmd("cat-file", "--batch"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=repo.env,
        )

    def read(self, sha: str) -> bytes | None:
        """The blob's bytes, or None if the object is missing."""
        return self.read_many([sha])[sha]

    def read_many(
        self, shas: list[str], max_bytes: int | None = None, group: int = 64
    ) -> dict[str, bytes | None]:
        """Blobs by sha (None: missing), a group of requests written at a time (well under a
        pipe's buffer, so writing never waits for git); stops after `max_bytes`, if given."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        out: dict[str, bytes | None] = {}
        total = 0
        for i in range(0, len(shas), group):
            if max_bytes is not None and total > max_bytes:
                break
            part = shas[i : i + group]
            proc.stdin.write("".join(f"{sha}\n" for sha in part).encode())
            proc.stdin.flush()
            for sha in part:
                header = proc.stdout.readline().split()
                if len(header) != 3:
                    out[sha] = None
                    continue
                out[sha] = proc.stdout.read(int(header[2]))
                proc.stdout.read(1)  # the newline after the contents
                total += int(header[2])
        return out

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def git_version() -> tuple[int, ...] | None:
    exe = shutil.which("git")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


@dataclass(frozen=True)
class Ref:
    name: str  # full refname, e.g. refs/heads/main, or HEAD when detached
    commit: str  # the commit it points at (tags peeled)


class Repo:
    """An opened git repository (bare or not)."""

    def __init__(self, path: Path, git_dir: Path, bare: bool, shallow: bool) -> None:
        self.path = path
        self.git_dir = git_dir
        self.bare = bare
        self.shallow = shallow
        self.env = git_env()

    @property
    def name(self) -> str:
        name = self.path.name
        return name[:-4] if name.endswith(".git") and len(name) > 4 else name

    def cmd(self, *args: str, config: tuple[str, ...] = ()) -> list[str]:
        cfg: list[str] = []
        for item in PINNED_CONFIG + config:
            cfg += ["-c", item]
        return ["git", "--no-pager", "-C", str(self.path), *cfg, *args]

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        proc = subprocess.run(self.cmd(*args), input=input, capture_output=True, env=self.env)
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GitError(
                f"git {args[0]} failed: {err[-1] if err else 'exit ' + str(proc.returncode)}"
            )
        return proc.stdout

    @cached_property
    def head(self) -> str | None:
        """The commit HEAD points at, or None (unborn branch in an empty repository)."""
        out = self.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip()
        return out.decode() if out else None

    @cached_property
    def head_branch(self) -> str | None:
        out = self.run("symbolic-ref", "-q", "HEAD", check=False).strip()
        return out.decode("utf-8", "replace") if out else None

    @property
    def detached(self) -> bool:
        return self.head is not None and self.head_branch is None

    def refs(self, prefixes: list[str]) -> list[Ref]:
        """Refs under the prefixes that lead to a commit (tags peeled; tags of trees dropped)."""
        if not prefixes:
            return []  # for-each-ref with no pattern would list every ref
        fmt = "%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)"
        out = self.run("for-each-ref", f"--format={fmt}", *prefixes)
        refs = []
        for line in out.decode("utf-8", "replace").splitlines():
            obj, otype, peeled, ptype, name = line.split(" ", 4)
            if otype == "commit":
                refs.append(Ref(name, obj))
            elif otype == "tag" and ptype == "commit":
                refs.append(Ref(name, peeled))
            elif otype == "tag" and ptype == "tag":
                # A tag of a tag: let git peel it all the way.
                sha = self.run("rev-parse", "-q", "--verify", f"{name}^{{commit}}", check=False)
                if sha.strip():
                    refs.append(Ref(name, sha.strip().decode()))
        return refs

    def tips(self, prefixes: list[str]) -> list[Ref]:
        """Every ref to mine: the selected refs, plus HEAD (listed as 'HEAD' when detached)."""
        refs = self.refs(prefixes)
        if self.head is not None and (
            self.detached or not any(r.commit == self.head for r in refs)
        ):
            refs.append(Ref("HEAD", self.head))
        return refs

    def commit_graph(self, tips: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """(sha, parents) for every commit reachable from `tips`, parents before children."""
        if not tips:
            return []
        proc = subprocess.run(
            self.cmd("rev-list", "--topo-order", "--reverse", "--parents", "--stdin"),
            input="\n".join(sorted(set(tips))).encode() + b"\n",
            capture_output=True,
            env=self.env,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GitError(
                f"the history of {self.path} cannot be walked: "
                f"{err[-1] if err else 'git rev-list failed'}",
                "a commit or tree object is missing or damaged; run 'git fsck' to see which",
            )
        out = proc.stdout
        graph = []
        for line in out.decode().splitlines():
            sha, *parents = line.split()
            graph.append((sha, tuple(parents)))
        return graph

    def blob_sizes(self, blobs: list[str]) -> dict[str, int]:
        """Sizes of blobs from the object headers (contents are not read); missing ones left out."""
        if not blobs:
            return {}
        out = self.run(
            "cat-file",
            "--batch-check=%(objectname) %(objectsize)",
            input="\n".join(blobs).encode() + b"\n",
            check=False,
        )
        sizes = {}
        for line in out.decode().splitlines():
            sha, _, size = line.partition(" ")
            if size.isdigit():
                sizes[sha] = int(size)
        return sizes

    def read_blobs(self, blobs: list[str]) -> dict[str, bytes]:
        """Contents of (small) blobs, through one `cat-file --batch`; missing ones left out."""
        with BlobReader(self) as reader:
            return {b: data for b in blobs if (data := reader.read(b)) is not None}

    def shallow_boundary(self) -> set[str]:
        path = self.git_dir / "shallow"
        if not self.shallow or not path.exists():
            return set()
        return set(path.read_text().split())

    def tree_files(self, commit: str) -> list[tuple[str, int, str, int]]:
        """(path, mode, blob sha, size) of every file in a commit's tree; no blob is read."""
        out = self.run("ls-tree", "-r", "-l", "-z", "--full-tree", commit)
        files = []
        for entry in out.split(b"\0"):
            meta, _, path = entry.partition(b"\t")
            parts = meta.split()
            if len(parts) == 4 and parts[1] == b"blob":
                size = int(parts[3]) if parts[3].isdigit() else 0
                files.append(
                    (path.decode("utf-8", "replace"), int(parts[0], 8), parts[2].decode(), size)
                )
        return files

    @cached_property
    def is_partial_clone(self) -> bool:
        out = self.run(
            "config",
            "--get-regexp",
            r"^(extensions\.partialclone|remote\..*\.promisor)$",
            check=False,
        ).decode("utf-8", "replace")
        return any(
            line.split(" ", 1)[0] == "extensions.partialclone" or line.endswith(" true")
            for line in out.splitlines()
        )

    def count_missing_objects(self, tips: list[str]) -> int:
        """Objects reachable from `tips` that the store lacks (never fetched)."""
        proc = subprocess.run(
            self.cmd("rev-list", "--objects", "--missing=print", "--stdin"),
            input="\n".join(tips).encode() + b"\n",
            capture_output=True,
            env=self.env,
        )
        return sum(1 for line in proc.stdout.splitlines() if line.startswith(b"?"))


def open_repo(path: Path | str) -> Repo:
    """Open a repository or raise a GitError that says what is wrong and what to do."""
    path = Path(path).expanduser()
    version = git_version()
    if version is None:
        raise GitError("git is not installed or not on PATH", "install git 2.31 or newer")
    if version[:2] < MIN_GIT:
        have = ".".join(map(str, version))
        raise GitError(f"git {have} is too old", "install git 2.31 or newer")
    if not path.exists():
        raise GitError(
            f"no such directory: {path}", "pass --repo with the path of a git repository"
        )
    if not path.is_dir():
        raise GitError(
            f"{path} is not a directory", "pass --repo with the path of a git repository"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise GitError(
            f"cannot read {path}: permission denied", "check the directory's permissions"
        )
    proc = subprocess.run(
        [
            "git",
            "-C",
            str(path),
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--is-bare-repository",
            "--is-shallow-repository",
        ],
        capture_output=True,
        env=git_env(),
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        if "dubious ownership" in err:
            raise GitError(
                f"git refuses to read {path}: it is owned by another user",
                f"run: git config --global --add safe.directory {path.resolve()}",
            )
        if "not a git repository" in err:
            raise GitError(
                f"{path} is not a git repository", "pass --repo with the path of a git repository"
            )
        raise GitError(
            f"cannot open {path} as a git repository: "
            f"{err.splitlines()[-1] if err else 'unknown error'}"
        )
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    git_dir, bare, shallow = Path(lines[0]), lines[1] == "true", lines[2] == "true"
    top = git_dir
    if not bare:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--show-toplevel"],
            capture_output=True,
            env=git_env(),
        ).stdout.strip()
        top = Path(out.decode("utf-8", "surrogateescape")) if out else git_dir
    return Repo(top.resolve(), git_dir, bare, shallow)
