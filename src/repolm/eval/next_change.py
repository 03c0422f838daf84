"""Next-change prediction on the future: given a commit's message and the history before it,
rank the repository's files; recall@1/5/10 of the files it touched
(`OUT/dataset/eval/next_change.parquet`). A file the commit adds is a miss for every method.

Everything is known strictly before the commit: the non-merge commits with kept changes before
it in the history's chronological order (`OUT/filter/commits.parquet`, `changes.parquet`) and
the training snapshot's files (`files.parquet`). A file whose last change was its deletion is
no longer a candidate.

Baselines:
- `recency`: files by their last change, newest first (the `previous_files` of the eval set,
  then older history);
- `co_change`: files by how many earlier commits changed them together with a file of the
  previous commit, summed over its files (a file counts as changed with itself, so the previous
  commit's files lead); commits of more than MAX_COCHANGE_FILES files are left out, as
  association mining of histories does (Zimmermann et al., ROSE): a mass rename or a
  vendoring links everything with everything;
- `name_overlap`: files whose path shares words with the message.

Model: each candidate is scored as the first file of the commit record,
`<|commit|>...<|message|>MESSAGE\\n<|file|>` followed by `PATH\\n`, by its summed negative
log-likelihood: the model's log-probability of exactly that path line (the line end included,
so a path is not rewarded for being a prefix of a longer one). The mean per token was the
alternative; it rewards long paths whose later tokens are predictable once their directory is
written. Candidates: the first files of the three rankings, taken in turn (CANDIDATES[device]:
64 on a CPU, 256 on a GPU), so a large repository costs what a small one does;
`candidate_recall`, the share of the touched files among them, is the model's ceiling. The
prompt runs once per commit and its cache is shared by the candidates: a 3M-parameter model on
2 CPU cores ranks 64 candidates for 100 commits in about 30 s.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from repolm.dataset.corpus import Commits
from repolm.errors import RepolmError
from repolm.eval.metrics import recall_at_k
from repolm.eval.tasks import SAMPLES, averages, clip, read_eval_set, spread, task_result
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.layout import RunLayout
from repolm.lm import LoadedModel, continuation_nll

KS = (1, 5, 10)
METRICS = tuple(f"recall@{k}" for k in KS)
CANDIDATES = {"cpu": 64, "cuda": 256}  # by device: 100 commits in well under a minute
MAX_COCHANGE_FILES = 30


@dataclass
class History:
    """The non-merge commits with kept file changes, oldest first, and the snapshot's files."""

    shas: list[str]
    times: list[datetime]
    authors: list[str | None]
    changes: list[list[tuple[str, str]]]  # (path, status) of each commit, by path
    snapshot: list[str]
    position: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.position = {s: n for n, s in enumerate(self.shas)}

    @classmethod
    def read(cls, filter_dir: Path) -> History:
        import pyarrow.parquet as pq

        for name in ("commits", "changes", "files"):
            if not (filter_dir / f"{name}.parquet").exists():
                raise RepolmError(
                    f"missing {filter_dir / name}.parquet",
                    "run the filter stage first (repolm run)",
                )
        commits = Commits.read(filter_dir / "commits.parquet")
        t = pq.read_table(filter_dir / "changes.parquet", columns=["sha", "path", "status"])
        found: dict[str, dict[str, str]] = defaultdict(dict)
        for sha, path, status in zip(
            *(t.column(c).to_pylist() for c in t.column_names), strict=True
        ):
            found[sha][path] = status
        line = [
            i for i in commits.chronological() if not commits.merge[i] and commits.sha[i] in found
        ]
        snapshot = pq.read_table(filter_dir / "files.parquet", columns=["path"])
        return cls(
            shas=[commits.sha[i] for i in line],
            times=[commits.time[i] for i in line],
            authors=[commits.author[i] for i in line],
            changes=[sorted(found[commits.sha[i]].items()) for i in line],
            snapshot=sorted(snapshot.column("path").to_pylist()),
        )

    def locate(self, sha: str, when: datetime) -> int:
        """The commit's position (for one outside the history: the commits before `when`)."""
        if sha in self.position:
            return self.position[sha]
        return sum(1 for t in self.times if t < when)


class Sweep:
    """The history walked forward: what was known before a position."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.at = 0
        self.last: dict[str, tuple[int, str]] = {}  # path -> (position, status) of its last change
        self.pairs: dict[str, Counter[str]] = defaultdict(Counter)

    def advance(self, position: int) -> None:
        if position < self.at:
            raise ValueError("the sweep only goes forward")
        for n in range(self.at, position):
            changes = self.history.changes[n]
            for path, status in changes:
                self.last[path] = (n, status)
            if len(changes) <= MAX_COCHANGE_FILES:
                for a, _ in changes:
                    self.pairs[a].update(b for b, _ in changes)
        self.at = position

    def recency(self) -> list[str]:
        """Known files, most recently changed first (a commit's files by path), then the
        snapshot's files the history never changed."""
        alive = [(-n, p) for p, (n, status) in self.last.items() if status != "deleted"]
        ranked = [p for _, p in sorted(alive)]
        return ranked + [p for p in self.history.snapshot if p not in self.last]

    def co_change(self, previous: list[str], rank: dict[str, int]) -> list[str]:
        """Files changed together with the previous commit's files, most often first."""
        score: Counter[str] = Counter()
        for a in previous:
            score.update(self.pairs.get(a, Counter()))
        found = [p for p in score if p in rank]  # alive
        return sorted(found, key=lambda p: (-score[p], rank[p]))


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_STOP = frozenset(
    {
        "the",
        "and",
        "for",
        "with",
        "from",
        "into",
        "add",
        "fix",
        "use",
        "update",
        "remove",
        "src",
        "lib",
        "test",
        "tests",
        "main",
        "index",
        "init",
        "mod",
    }
)


def words(text: str) -> set[str]:
    """Lower-cased words of three letters or more (camelCase and snake_case split), common
    verbs and directory names left out."""
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2} - _STOP


def name_overlap(message: str, rank: dict[str, int], limit: int) -> list[str]:
    """Files whose path shares words with the message, most shared first."""
    wanted = words(message)
    if not wanted:
        return []
    shared = ((len(wanted & words(p)), p) for p in rank)
    best = heapq.nsmallest(limit, ((-k, rank[p], p) for k, p in shared if k))
    return [p for _, _, p in best]


def candidate_pool(rankings: list[list[str]], limit: int) -> list[str]:
    """The first `limit` distinct files of the rankings, taken in turn."""
    pool: dict[str, None] = {}
    for row in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if row < len(ranking):
                pool.setdefault(ranking[row])
                if len(pool) >= limit:
                    return list(pool)
    return list(pool)


def model_ranking(
    lm: LoadedModel, author: str | None, when: datetime, message: str, candidates: list[str]
) -> list[str]:
    """The candidates by the model's log-probability of each as the commit's first file."""
    prompt = lm.encode_segments([*dm.commit_header(author, when, message), dm.Tok(sp.FILE)])
    scores = continuation_nll(lm, prompt, [lm.encode(p + "\n") for p in candidates])
    order = sorted(range(len(candidates)), key=lambda i: (scores[i][0], i))
    return [candidates[i] for i in order]


def recalls(ranking: list[str], relevant: list[str]) -> dict[str, float]:
    return {f"recall@{k}": recall_at_k(ranking, relevant, k) for k in KS}


def evaluate_next_change(
    lm: LoadedModel | None,
    eval_dir: Path,
    run_dir: Path,
    split: str = "test",
    limit: int | None = None,
    candidates: int | None = None,
) -> dict[str, Any]:
    """Next-change prediction on the split's commits (see the module's doc); `lm` None ranks
    with the baselines only. `candidates` None: CANDIDATES for the model's device."""
    t0 = time.monotonic()
    if candidates is None:
        candidates = CANDIDATES.get(lm.device.type if lm is not None else "cpu", CANDIDATES["cpu"])
    rows = spread(
        [r for r in read_eval_set(eval_dir, "next_change", split, None) if r["files"]], limit
    )
    history = History.read(RunLayout(run_dir).filter_dir)
    rows.sort(key=lambda r: history.locate(r["sha"], r["time"]))
    sweep = Sweep(history)
    names = ("recency", "co_change", "name_overlap")
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in (*names, "model")}
    in_pool: list[dict[str, float]] = []
    samples: list[dict[str, Any]] = []
    shown = set(spread(range(len(rows)), SAMPLES))
    for n, row in enumerate(rows):
        position = history.locate(row["sha"], row["time"])
        sweep.advance(position)
        recent = sweep.recency()
        rank = {p: k for k, p in enumerate(recent)}
        previous = row["previous_files"][0] if row["previous_files"] else []
        rankings = {
            "recency": recent,
            "co_change": sweep.co_change(previous, rank),
            "name_overlap": name_overlap(row["message"], rank, candidates),
        }
        for name in names:
            scores[name].append(recalls(rankings[name], row["files"]))
        if lm is not None:
            pool = candidate_pool([rankings[name] for name in names], candidates)
            known = position < len(history.shas) and history.shas[position] == row["sha"]
            author = history.authors[position] if known else None
            rankings["model"] = model_ranking(lm, author, row["time"], row["message"], pool)
            scores["model"].append(recalls(rankings["model"], row["files"]))
            found = len(set(pool) & set(row["files"])) / len(set(row["files"]))
            in_pool.append({"candidate_recall": found})
        if n in shown:
            sample: dict[str, Any] = {
                "sha": row["sha"],
                "input": clip(row["message"], 300),
                "previous_files": previous[:10],
            }
            if lm is not None:
                sample["model"] = rankings["model"][:10]
            sample["baselines"] = {name: rankings[name][:10] for name in names}
            sample["reference"] = row["files"]
            samples.append(sample)
    baselines = {name: averages(scores[name], METRICS) for name in names}
    metrics = None
    extra: dict[str, Any] = {"candidates": candidates}
    if lm is not None:
        metrics = averages(scores["model"], METRICS)
        extra["candidate_recall"] = averages(in_pool, ["candidate_recall"])["candidate_recall"]
    return task_result(split, len(rows), metrics, baselines, samples, t0, **extra)
