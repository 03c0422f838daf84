"""Shared fixtures: an isolated git/HF environment for every test and a helper that builds real
repositories with the git CLI.

    def test_x(git_repo, mine_repo):
        repo = git_repo()                       # an initialised repository on branch main
        repo.write("a.py", "print(1)\n")
        sha = repo.commit("add a")
        result = mine_repo(repo.path)            # runs repolm's miner, reads the Parquet back
        assert result.commit(sha)["message"] == "add a"
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

# Every commit made through GitRepo.commit gets a date from a fake clock (one minute apart), so
# shas are reproducible and histories have a well-defined date order.
EPOCH = datetime(2021, 1, 1, tzinfo=timezone.utc)
DEFAULT_DATE = "2021-01-01T00:00:00+00:00"

AUTHOR_NAME = "Ada Author"
AUTHOR_EMAIL = "ada@example.com"
COMMITTER_NAME = "Carl Committer"
COMMITTER_EMAIL = "carl@example.com"

GLOBAL_GITCONFIG = """\
[init]
\tdefaultBranch = main
[user]
\tname = Test User
\temail = test@example.com
[core]
\tautocrlf = false
[commit]
\tgpgsign = false
[tag]
\tgpgsign = false
[protocol "file"]
\tallow = always
[advice]
\tdetachedHead = false
[gc]
\tauto = 0
[maintenance]
\tauto = false
"""


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG config in a fresh temporary directory, no system git config, a fixed git
    identity and dates, and no network for Hugging Face. Returns the HOME directory."""
    return isolate(tmp_path_factory.mktemp("home"), monkeypatch)


def isolate(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of `isolated_env`, for fixtures of a wider scope (with
    `pytest.MonkeyPatch.context()`)."""
    (home / ".gitconfig").write_text(GLOBAL_GITCONFIG)
    xdg = home / ".config"
    xdg.mkdir()
    for var in (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_NAMESPACE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CEILING_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_EDITOR",
        "GIT_SEQUENCE_EDITOR",
        "GIT_TRACE",
        "GIT_ALLOW_PROTOCOL",
        "GIT_NO_LAZY_FETCH",
        "EMAIL",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", AUTHOR_NAME)
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
    monkeypatch.setenv("GIT_COMMITTER_NAME", COMMITTER_NAME)
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
    monkeypatch.setenv("GIT_AUTHOR_DATE", DEFAULT_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", DEFAULT_DATE)
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("GIT_EDITOR", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    return home


class GitRepo:
    """A real repository at `path`, driven with the git CLI.

    `git(...)` returns stdout as text (stripped), `git_bytes(...)` the raw bytes. `commit()` stages
    everything (`add -A`) and commits with the next date of a fake clock unless `date` is given.
    """

    def __init__(
        self, path: Path, *, bare: bool = False, init: bool = True, branch: str = "main"
    ) -> None:
        self.path = Path(path)
        self.bare = bare
        self._tick = 0
        if init:
            self.path.mkdir(parents=True, exist_ok=True)
            args = ["init", "-q", f"--initial-branch={branch}"]
            if bare:
                args.append("--bare")
            self.git(*args)

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"

    # -- running git ---------------------------------------------------------------------------

    def git_bytes(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> bytes:
        if isinstance(input, str):
            input = input.encode()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args], input=input, capture_output=True, env=full_env
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"git {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stderr.decode('utf-8', 'replace')}"
            )
        return proc.stdout

    def git(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> str:
        return (
            self.git_bytes(*args, input=input, env=env, check=check)
            .decode("utf-8", "replace")
            .strip()
        )

    # -- the work tree -------------------------------------------------------------------------

    def write(self, path: str, content: str | bytes = "", mode: int | None = None) -> Path:
        """Write a file (parents created); `mode` e.g. 0o755."""
        p = self.path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)
        if mode is not None:
            p.chmod(mode)
        return p

    def symlink(self, path: str, target: str) -> Path:
        p = self.path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(target, p)
        return p

    def remove(self, path: str) -> None:
        (self.path / path).unlink()

    def mv(self, src: str, dst: str) -> None:
        """`git mv` (the destination's parent directories are created)."""
        (self.path / dst).parent.mkdir(parents=True, exist_ok=True)
        self.git("mv", src, dst)

    # -- history -------------------------------------------------------------------------------

    def next_date(self) -> str:
        self._tick += 1
        return (EPOCH + timedelta(minutes=self._tick)).isoformat()

    def commit(
        self,
        msg: str = "change",
        *,
        date: str | None = None,
        author_date: str | None = None,
        committer_date: str | None = None,
        add: bool = True,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> str:
        """Stage everything and commit (empty commits allowed); return the new sha."""
        if add and not self.bare:
            self.git("add", "-A")
        date = date or self.next_date()
        cenv = {
            "GIT_AUTHOR_DATE": author_date or date,
            "GIT_COMMITTER_DATE": committer_date or date,
            **(env or {}),
        }
        self.git("commit", "-q", "--allow-empty", "--no-verify", "-m", msg, *extra_args, env=cenv)
        return self.rev_parse("HEAD")

    def rev_parse(self, rev: str) -> str:
        return self.git("rev-parse", "--verify", "-q", rev)

    @property
    def head(self) -> str:
        return self.rev_parse("HEAD")

    def count(self, *revs: str) -> int:
        """`git rev-list --count` over revs (default --all)."""
        return int(self.git("rev-list", "--count", *(revs or ("--all",))))

    def rev_list(self, *revs: str) -> list[str]:
        return self.git("rev-list", *(revs or ("--all",))).split()

    def default_selection(self) -> list[str]:
        """Commits reachable from repolm's default ref selection: branches, tags, remotes, HEAD."""
        return self.rev_list("--branches", "--tags", "--remotes", "HEAD")

    def fast_import(self, stream: bytes | str) -> None:
        self.git("fast-import", "--quiet", "--done", input=stream)

    def objects(self) -> set[str]:
        """Every object id in the store (loose, packed, promisor packs), missing ones excluded."""
        out = self.git(
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
            env={"GIT_NO_LAZY_FETCH": "1"},
        )
        return set(out.split())

    def loose_object_path(self, sha: str) -> Path:
        git_dir = Path(self.git("rev-parse", "--path-format=absolute", "--git-dir"))
        return git_dir / "objects" / sha[:2] / sha[2:]


def linear_history_stream(
    n: int, *, branch: str = "refs/heads/main", files: int = 5, start: int = 1_600_000_000
) -> bytes:
    """A `git fast-import` stream of `n` commits on `branch`, each modifying one of `files` files
    (with some adds and deletes along the way), one hour apart."""
    out: list[bytes] = []
    content: dict[str, int] = {}
    for i in range(1, n + 1):
        ts = start + 3600 * i
        msg = f"commit {i}\n\nbody of commit {i}\n".encode()
        out.append(f"commit {branch}\nmark :{i}\n".encode())
        out.append(f"author A{i % 7} <a{i % 7}@example.com> {ts} +0100\n".encode())
        out.append(f"committer C <c@example.com> {ts + 60} -0230\n".encode())
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        if i > 1:
            out.append(f"from :{i - 1}\n".encode())
        name = f"dir{i % 3}/file{i % files}.py"
        if i % 50 == 0 and name in content:
            out.append(f"D {name}\n".encode())
            del content[name]
        else:
            content[name] = content.get(name, 0) + 1
            body = "".join(f"line {j} of {name}\n" for j in range(content[name] % 20 + 1))
            body += f"# version {content[name]} at commit {i}\n"
            data = body.encode()
            out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (name.encode(), len(data), data))
        out.append(b"\n")
    out.append(b"done\n")
    return b"".join(out)


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., GitRepo]:
    """Factory: `git_repo(name="repo", bare=False, branch="main")` -> a new GitRepo in tmp_path."""
    made: set[str] = set()

    def make(name: str = "repo", **kwargs: Any) -> GitRepo:
        assert name not in made, f"repository {name} already made in this test"
        made.add(name)
        return GitRepo(tmp_path / name, **kwargs)

    return make


@dataclass
class MineResult:
    stats: dict[str, Any]
    commits: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    stage_dir: Path
    by_sha: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_sha = {c["sha"]: c for c in self.commits}

    @property
    def shas(self) -> list[str]:
        return [c["sha"] for c in self.commits]

    def commit(self, sha: str) -> dict[str, Any]:
        return self.by_sha[sha]

    def changes_of(self, sha: str) -> list[dict[str, Any]]:
        return [c for c in self.changes if c["sha"] == sha]

    def change(self, sha: str, path: str) -> dict[str, Any]:
        rows = [c for c in self.changes if c["sha"] == sha and c["path"] == path]
        assert len(rows) == 1, (
            f"{len(rows)} change rows for {path!r} in {sha[:10]}: "
            f"{[c['path'] for c in self.changes_of(sha)]}"
        )
        return rows[0]


def read_stage(stage_dir: Path, stats: dict[str, Any] | None = None) -> MineResult:
    import pyarrow.parquet as pq

    commits = pq.read_table(stage_dir / "commits.parquet").to_pylist()
    changes = pq.read_table(stage_dir / "changes.parquet").to_pylist()
    return MineResult(stats or {}, commits, changes, stage_dir)


@pytest.fixture
def mine_repo(tmp_path: Path) -> Callable[..., MineResult]:
    """`mine_repo(repo_path, stage="stage", full=False, **MineConfig fields)` runs the miner and
    returns the stats and both tables as lists of dicts. Reusing `stage` mines incrementally."""
    from repolm.config import MineConfig
    from repolm.gitrepo import open_repo
    from repolm.mine.miner import mine

    def run(
        repo_path: Path | GitRepo, stage: str = "stage", full: bool = False, **cfg: Any
    ) -> MineResult:
        if isinstance(repo_path, GitRepo):
            repo_path = repo_path.path
        stage_dir = tmp_path / stage
        stats = mine(open_repo(repo_path), stage_dir, MineConfig(**cfg), full=full)
        return read_stage(stage_dir, stats)

    return run


@pytest.fixture
def repolm_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog wired straight to the 'repolm' logger (the CLI turns its propagation off)."""
    logger = logging.getLogger("repolm")
    old_level, old_propagate = logger.level, logger.propagate
    logger.propagate = False  # records reach caplog once, through this handler only
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


# -- assertions shared by the mining tests ------------------------------------------------------


def blob_sha(content: bytes | str) -> str:
    if isinstance(content, str):
        content = content.encode()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


DEFAULT_REVS = ("--branches", "--tags", "--remotes", "HEAD")


def check_history(repo: GitRepo, result: MineResult, *revs: str) -> None:
    """The mined commits are exactly those git lists for `revs` (default: repolm's default ref
    selection: branches, tags, remote-tracking refs and HEAD), each once, parents before children,
    with the parents git records; change rows agree with their commits."""
    revs = revs or DEFAULT_REVS
    git_parents: dict[str, list[str]] = {}
    for line in repo.git("rev-list", "--parents", *revs).splitlines():
        sha, *parents = line.split()
        git_parents[sha] = parents
    shas = result.shas
    assert len(shas) == len(set(shas)), "a commit was mined twice"
    assert len(shas) == repo.count(*revs)
    assert set(shas) == set(git_parents)
    seen: set[str] = set()
    for c in result.commits:
        assert c["parents"] == git_parents[c["sha"]]
        assert c["is_merge"] == (len(c["parents"]) > 1)
        for p in c["parents"]:
            assert p in seen or p not in git_parents, "a child was listed before its parent"
        seen.add(c["sha"])
    rows: dict[str, list[dict[str, Any]]] = {}
    for ch in result.changes:
        assert ch["sha"] in result.by_sha, "a change row of a commit that was not mined"
        rows.setdefault(ch["sha"], []).append(ch)
    for c in result.commits:
        mine_rows = rows.get(c["sha"], [])
        if c["read_level"] != "meta":
            assert c["files_changed"] == len(mine_rows)
        if c["read_level"] == "full":
            assert c["insertions"] == sum(r["additions"] or 0 for r in mine_rows)
            assert c["deletions"] == sum(r["deletions"] or 0 for r in mine_rows)
            for r in mine_rows:
                assert r["patch"] is not None and r["patch"].startswith("diff --git "), r
    if "commits" in result.stats:
        assert result.stats["commits"] == len(shas)


# the 2-layer, 32-wide Llama the end-to-end tests train (each adds its own train.* settings)
TINY_MODEL = [
    "models.main.layers=2",
    "models.main.hidden=32",
    "models.main.heads=2",
    "models.main.kv_heads=2",
    "models.main.intermediate=64",
    "models.main.context=128",
]


def save_base_model(path: Path) -> Path:
    """A tiny Llama and a byte-level BPE tokenizer of its own, saved like a hub download."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        [f"def op_{i}(a, b):\n    return a * {i} + b\n" for i in range(50)], trainer
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def calc_history(path: Path, commits: int = 24, files: int = 6, variants: int = 3) -> GitRepo:
    """A small Python project grown one commit at a time: `commits` commits, each adding
    `variants` functions to one of `files` modules of `calc/` (what the train and eval tests
    build on)."""
    r = GitRepo(path)
    r.write("README.md", "# Calc\n\n## Usage\n\nCall add and mul from the calc module.\n")
    for i in range(commits):
        r.write(
            f"calc/op{i % files}.py",
            "".join(
                f'def op_{i}_{k}(a, b):\n    """Combine a and b, variant {k}."""\n'
                f"    return a * {k} + b - {i}\n\n\n"
                for k in range(variants)
            ),
        )
        r.commit(f"op {i}: add the variants of step {i}")
    return r


def calc_run(
    factory: pytest.TempPathFactory, name: str, overrides: list[str], until: str, **history: int
) -> tuple[Path, Path]:
    """(repository, run directory through `until`): a `calc_history` repository run through
    the pipeline in an isolated environment, for module-scoped fixtures."""
    from repolm.config import load_config
    from repolm.pipeline.runner import run_pipeline

    root = factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        isolate(factory.mktemp("home"), mp)
        repo = calc_history(root / "repo", **history)
        run_pipeline(root / "run", repo.path, load_config(overrides=overrides), until=until)
    return repo.path, root / "run"


class Scripted:
    """Stands in for a model's `generate`: it writes `script`'s tokens one by one, as
    transformers does (streamer first given the prompt, stopping criteria after each token)."""

    def __init__(self, real: Any, script: list[int]) -> None:
        self.real, self.script, self.written = real, script, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def generate(self, input_ids: Any, streamer: Any, stopping_criteria: Any, **kw: Any) -> Any:
        import torch

        streamer.put(input_ids)
        for token in self.script[: kw["max_new_tokens"]]:
            input_ids = torch.cat([input_ids, torch.tensor([[token]])], dim=1)
            self.written += 1
            streamer.put(torch.tensor([token]))
            time.sleep(0.02)  # a model's pace: the reader keeps up
            if token in kw["eos_token_id"] or all(
                c(input_ids, None).all() for c in stopping_criteria
            ):
                break
        streamer.end()
        return input_ids
