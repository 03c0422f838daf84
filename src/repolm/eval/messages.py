"""Commit messages on the future: a commit's diff -> its message
(`OUT/dataset/eval/commit_messages.parquet`), scored by ROUGE-L (mean over commits) and corpus
BLEU (sacrebleu) against the real messages, on the subject (first line) and the whole message.

The prompt is the DESCRIBE instruction exactly as the build stage trains it: the instruction,
then per file of the commit its head (`documents.file_head`: path, module, change-type tokens)
and hunks, built from the commit's rows of `OUT/filter/changes.parquet` (a diff over
`build.max_diff_bytes` by its line counts, as in training), as many whole files as fit the
model's context, then `<|message|>`. The model writes the message until EOS (what ends a
message in training), at most 64 tokens: a subject and a sentence or two.

Baselines, so that a model that learned nothing is visible: `template`, a message made from the
diff's file names ("Update a.py and b.py", "Add c.py"), and `previous_message`, the message of
the commit before it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from repolm.config.schema import BuildConfig
from repolm.dataset.corpus import Commits
from repolm.eval.metrics import bleu, first_line, mean, rouge_l
from repolm.eval.tasks import SAMPLES, clip, read_eval_set, spread, task_result
from repolm.filter.outputs import change_types
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.layout import RunLayout
from repolm.lm import LoadedModel, generate, special_stops

METRICS = ("subject_rouge_l", "subject_bleu", "message_rouge_l", "message_bleu")
MAX_NEW_TOKENS = 64
CHANGE_COLUMNS = [
    "sha",
    "path",
    "old_path",
    "status",
    "patch",
    "language",
    "additions",
    "deletions",
]


def file_section(
    change: dict[str, Any], change_types: list[str], max_diff: int
) -> list[dm.Segment]:
    """One file of a commit as the build stage encodes it: its head, then each hunk between
    `<|hunk|>` and `<|/hunk|>`; a diff over `max_diff` bytes stands in as its line counts."""
    patch, omitted = dm.omit_large_diff(
        change["patch"], change["additions"], change["deletions"], max_diff
    )
    module = dm.module_of(change["path"], change["language"])
    head = dm.file_head(
        change["path"], change["old_path"], change["status"], module, change_types, omitted
    )
    return [*head, *(s for h in dm.hunks(patch) for s in (dm.Tok(sp.HUNK), h, dm.Tok(sp.HUNK_END)))]


def describe_prompt(lm: LoadedModel, sections: list[list[dm.Segment]], max_new: int) -> list[int]:
    """The DESCRIBE instruction, as many whole files as fit before the message (the first one
    cut when not even it fits), and `<|message|>`."""
    instruction = lm.encode(dm.DESCRIBE_PROMPT)
    start = lm.encode_segments([dm.Tok(sp.MESSAGE)])
    room = lm.max_len - max_new - len(instruction) - len(start)
    kept: list[int] = []
    for section in sections:
        ids = lm.encode_segments(section)
        if len(kept) + len(ids) > room:
            if not kept:
                kept = ids[: max(room, 0)]
            break
        kept += ids
    return instruction + kept + start


def _names(paths: list[str]) -> str:
    names = list(dict.fromkeys(p.rsplit("/", 1)[-1] for p in paths))
    if len(names) > 3:
        return f"{', '.join(names[:3])} and {len(names) - 3} more files"
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def template_message(changes: list[dict[str, Any]]) -> str:
    """A message made from the files of a diff: `Add c.py, update a.py and b.py`."""
    verbs = {"added": "Add", "deleted": "Remove", "renamed": "Rename"}
    groups: dict[str, list[str]] = defaultdict(list)
    for c in changes:
        groups[verbs.get(c["status"], "Update")].append(c["path"])
    parts = [f"{verb} {_names(paths)}" for verb, paths in groups.items()]
    return ", ".join([parts[0], *(p[0].lower() + p[1:] for p in parts[1:])]) if parts else ""


def score_messages(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """METRICS of predicted messages: ROUGE-L averaged, BLEU over the corpus."""
    if not references:
        return dict.fromkeys(METRICS)
    subjects = [first_line(p) for p in predictions]
    gold = [first_line(r) for r in references]
    return {
        "subject_rouge_l": round(mean(map(rouge_l, subjects, gold)) or 0.0, 4),
        "subject_bleu": round(bleu(subjects, gold), 2),
        "message_rouge_l": round(mean(map(rouge_l, predictions, references)) or 0.0, 4),
        "message_bleu": round(bleu(predictions, references), 2),
    }


def _run_max_diff(run_dir: Path) -> int:
    """The run's `build.max_diff_bytes` (its config.yaml), else the default."""
    import yaml

    path = RunLayout(run_dir).run_config
    if path.exists():
        build = (yaml.safe_load(path.read_text()) or {}).get("build") or {}
        if "max_diff_bytes" in build:
            return int(build["max_diff_bytes"])
    return BuildConfig().max_diff_bytes


def _history(filter_dir: Path, shas: list[str]) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Each commit's changes (in the file's order) and the message of the commit before it."""
    import pyarrow.parquet as pq

    changes: dict[str, list[dict]] = defaultdict(list)
    if shas:  # (an empty "in" filter does not type-check in pyarrow)
        t = pq.read_table(
            filter_dir / "changes.parquet", columns=CHANGE_COLUMNS, filters=[("sha", "in", shas)]
        )
        for r in t.to_pylist():
            changes[r["sha"]].append(r)
    commits = Commits.read(filter_dir / "commits.parquet")
    line = [i for i in commits.chronological() if not commits.merge[i]]
    previous = {commits.sha[b]: commits.message[a] for a, b in zip(line, line[1:], strict=False)}
    return changes, previous


def evaluate_commit_messages(
    lm: LoadedModel | None,
    eval_dir: Path,
    run_dir: Path,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    max_diff_bytes: int | None = None,
) -> dict[str, Any]:
    """Commit messages of the split's commits from their diffs (see the module's doc); `lm`
    None scores the baselines only. `max_diff_bytes` None: the run's."""
    t0 = time.monotonic()
    rows = read_eval_set(eval_dir, "commit_messages", split, limit)
    filter_dir = RunLayout(run_dir).filter_dir
    changes, previous = _history(filter_dir, [r["sha"] for r in rows])
    references = [r["message"] for r in rows]
    outputs = {
        "template": [template_message(changes[r["sha"]]) for r in rows],
        "previous_message": [previous.get(r["sha"], "") for r in rows],
    }
    baselines = {name: score_messages(p, references) for name, p in outputs.items()}
    metrics = None
    if lm is not None:
        types = change_types(filter_dir) if rows else {}
        most = _run_max_diff(run_dir) if max_diff_bytes is None else max_diff_bytes
        new = min(MAX_NEW_TOKENS, lm.max_len // 2)  # a short window keeps half for the diff
        prompts = []
        for r in rows:
            sections = [
                file_section(c, types.get((r["sha"], c["path"]), []), most)
                for c in changes[r["sha"]]
            ]
            prompts.append(describe_prompt(lm, sections, new))
        texts = generate(lm, prompts, new, stop_ids=special_stops(lm), batch_size=batch_size)
        outputs["model"] = [t.strip() for t in texts]
        metrics = score_messages(outputs["model"], references)
    samples = []
    for n in spread(range(len(rows)), SAMPLES):
        files = [c["path"] for c in changes[rows[n]["sha"]]]
        sample: dict[str, Any] = {"sha": rows[n]["sha"], "input": clip(", ".join(files), 300)}
        if lm is not None:
            sample["model"] = clip(outputs["model"][n], 300)
        sample["baselines"] = {k: clip(outputs[k][n], 300) for k in baselines}
        sample["reference"] = clip(references[n], 300)
        samples.append(sample)
    return task_result(split, len(rows), metrics, baselines, samples, t0)
