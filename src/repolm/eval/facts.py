"""Facts about a repository that suite templates ask about (modules, their functions and imports,
the most changed files, files changed together, types, tests, the entry point), read from a run's
filter outputs; `placeholder_values` names them for the templates' placeholders."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.formats.documents import module_of
from repolm.layout import RunLayout


@dataclass(frozen=True)
class Module:
    """A module of the snapshot (`repolm.formats.documents.module_of`: one per Python file, a
    directory for Go or JavaScript), with what the suites ask about."""

    name: str
    path: str  # its most changed file
    changes: int  # training commits that touched its files
    functions: tuple[str, ...] = ()  # qualified names, most changed first
    dependents: tuple[str, ...] = ()  # modules whose imports name it, most changed first
    dependencies: tuple[str, ...] = ()  # modules its imports name, most changed first


@dataclass(frozen=True)
class RepoFacts:
    """What a suite template may say about a repository: the snapshot at the cutoff and the
    training history only, so no fact comes from the held-out future."""

    repo_name: str
    language: str | None = None  # the language of most code bytes
    modules: tuple[Module, ...] = ()  # non-test code modules, most changed first
    top_files: tuple[str, ...] = ()  # non-test code files, most changed first
    co_changed: tuple[str, ...] = ()  # files most often changed in the same commit as top_files[0]
    types: tuple[tuple[str, str, str], ...] = ()  # (qualified name, path, module), most changed
    test_files: tuple[str, ...] = ()  # most changed first
    tests: tuple[str, ...] = ()  # the tests in test_files[0]
    entry_point: str | None = None  # a main/cli/app/index file


PLACEHOLDERS: dict[str, str] = {
    "repo_name": "the repository's directory name",
    "language": "the language most of its code is written in",
    "module": "the most changed module (tests excluded)",
    "module_file": "the most changed file of {module}",
    "module_short": "the last part of {module}'s name (`cart` for `shop.cart`)",
    "module_2": "the second most changed module",
    "module_2_file": "the most changed file of {module_2}",
    "module_2_short": "the last part of {module_2}'s name",
    "module_2_function": "the most changed function or method of {module_2}",
    "module_3": "the third most changed module",
    "module_3_file": "the most changed file of {module_3}",
    "module_3_short": "the last part of {module_3}'s name",
    "function": "the most changed function or method of {module} (qualified: `Cart.add`)",
    "function_name": "{function} without its qualifier (`add`)",
    "function_2": "the second most changed function or method of {module}",
    "function_2_name": "{function_2} without its qualifier",
    "dependent": "the most changed module whose imports name {module}",
    "dependent_file": "the most changed file of {dependent}",
    "dependency": "the most changed module that {module}'s imports name",
    "type": "the most changed type (class, struct, interface...)",
    "type_file": "the file {type} is defined in",
    "type_module": "the module {type} is defined in",
    "top_file": "the most changed code file (tests excluded)",
    "top_file_name": "{top_file}'s file name without directories",
    "top_file_2": "the second most changed code file",
    "top_file_3": "the third most changed code file",
    "co_changed": "the file most often changed in the same commit as {top_file}",
    "co_changed_name": "{co_changed}'s file name",
    "test_file": "the most changed test file",
    "test_file_name": "{test_file}'s file name",
    "test": "a test in {test_file}",
    "entry_point": "the program's entry file (__main__, main, cli, app, server, index...)",
}


def _short(name: str) -> str:
    return re.split(r"::|[./]", name)[-1]


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def placeholder_values(facts: RepoFacts) -> dict[str, str]:
    """The placeholders these facts can fill, by name; the others are missing."""
    v: dict[str, str] = {"repo_name": facts.repo_name}
    if facts.language:
        v["language"] = facts.language
    mods = {m.name: m for m in facts.modules}
    for i, m in enumerate(facts.modules[:3]):
        key = "module" if i == 0 else f"module_{i + 1}"
        v[key], v[f"{key}_file"] = m.name, m.path
        if len(_short(m.name)) >= 3 and _short(m.name) != m.name:
            v[f"{key}_short"] = _short(m.name)
    if len(facts.modules) > 1 and facts.modules[1].functions:
        v["module_2_function"] = facts.modules[1].functions[0]
    if facts.modules:
        m = facts.modules[0]
        for i, fn in enumerate(m.functions[:2]):
            key = "function" if i == 0 else "function_2"
            v[key], v[f"{key}_name"] = fn, _short(fn)
        if m.dependents:
            v["dependent"] = m.dependents[0]
            if m.dependents[0] in mods:
                v["dependent_file"] = mods[m.dependents[0]].path
        if m.dependencies:
            v["dependency"] = m.dependencies[0]
    if facts.types:
        v["type"], v["type_file"], v["type_module"] = facts.types[0]
    for i, path in enumerate(facts.top_files[:3]):
        v["top_file" if i == 0 else f"top_file_{i + 1}"] = path
    if facts.top_files:
        v["top_file_name"] = _base(facts.top_files[0])
    if facts.co_changed:
        v["co_changed"], v["co_changed_name"] = facts.co_changed[0], _base(facts.co_changed[0])
    if facts.test_files:
        v["test_file"], v["test_file_name"] = facts.test_files[0], _base(facts.test_files[0])
    if facts.tests:
        v["test"] = facts.tests[0]
    if facts.entry_point:
        v["entry_point"] = facts.entry_point
    return v


def repo_facts(run_dir: Path) -> RepoFacts:
    """Facts about the repository of a run, from OUT/filter/ (files, chunks, changes) and the
    manifest's repository path."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    layout = RunLayout(Path(run_dir))
    fdir = layout.filter_dir
    needed = [layout.filtered(n) for n in ("files", "chunks", "changes")]
    absent = [p.name for p in needed if not p.exists()]
    if absent:
        raise RepolmError(
            f"{fdir} lacks {', '.join(absent)}: a suite template is filled from the filter stage",
            f"run the pipeline through the filter stage into {run_dir} first",
        )
    files = pq.read_table(needed[0], columns=["path", "language", "bytes", "text"]).to_pylist()
    chunks = pq.read_table(
        needed[1],
        columns=["path", "kind", "qualified_name", "start_line", "end_line", "source", "split"],
    )
    units = chunks.filter(pc.equal(chunks["source"], "snapshot")).to_pylist()
    history = chunks.filter(
        pc.and_(pc.equal(chunks["source"], "change"), pc.equal(chunks["split"], "train"))
    )
    unit_changes = {
        (r["path"], r["qualified_name"]): r["kind_count"]
        for r in history.group_by(["path", "qualified_name"])
        .aggregate([("kind", "count")])
        .to_pylist()
    }
    changes = pq.read_table(needed[2], columns=["sha", "path", "split"])
    changes = changes.filter(pc.equal(changes["split"], "train"))
    pairs = list(zip(changes["sha"].to_pylist(), changes["path"].to_pylist(), strict=True))
    name = Path(run_dir).resolve().name
    manifest = layout.manifest
    if manifest.exists():
        name = Path(json.loads(manifest.read_text()).get("repo_path") or name).name
    return build_facts(name, files, units, pairs, unit_changes)


_TEST_DIRS = {"test", "tests", "testing", "spec", "specs", "__tests__", "testdata"}
_TEST_STEM = re.compile(r"^test_|_test$|_spec$|\.test$|\.spec$|^test$|Tests?$")
_ENTRY_STEMS = ("__main__", "main", "cli", "app", "server", "index", "manage")
_CODE_KINDS = {"function", "method", "type"}
_GENERIC_STEMS = {"__init__", "__main__", "index", "mod", "lib", "main", "init"}
_IMPORT_LINE = re.compile(
    r"^\s*(?:from\s+\S+\s+import|import|use|using|require|include|#\s*include|mod|extern\s+crate)"
    r"\b.*$|^.*\b(?:require|import)\s*\(.*$",
    re.M,
)
_BULK_COMMIT = 50  # commits touching more files are bulk edits, not coupling (co-change)


def is_test_path(path: str) -> bool:
    """A test file by its path: under a tests directory or named like a test."""
    *dirs, base = path.split("/")
    return bool(_TEST_DIRS & set(dirs)) or bool(_TEST_STEM.search(base.rsplit(".", 1)[0]))


def build_facts(
    repo_name: str,
    files: Sequence[Mapping[str, Any]],
    units: Sequence[Mapping[str, Any]],
    changes: Sequence[tuple[str, str]],
    unit_changes: Mapping[tuple[str, str], int],
) -> RepoFacts:
    """Facts from the snapshot's files (path, language, bytes, text) and units (path, kind,
    qualified_name, start_line, end_line), the training history's (sha, path) file changes
    and its changed units' counts by (path, qualified_name)."""
    by_path = {f["path"]: f for f in files}
    kinds: dict[str, set[str]] = defaultdict(set)
    for u in units:
        kinds[u["path"]].add(u["kind"])
    tests = {p for p in by_path if "test" in kinds[p] or is_test_path(p)}
    code = {p for p in by_path if kinds[p] & _CODE_KINDS} - tests
    churn = Counter(p for _, p in set(changes))

    def ranked(paths: Iterable[str]) -> list[str]:
        return sorted(paths, key=lambda p: (-churn[p], p))

    members: dict[str, list[str]] = defaultdict(list)
    for p in ranked(code):
        members[module_of(p, by_path[p]["language"]) or p].append(p)
    module_churn = {m: sum(churn[p] for p in ps) for m, ps in members.items()}
    order = sorted(members, key=lambda m: (-module_churn[m], m))
    module_of_path = {p: m for m, ps in members.items() for p in ps}

    def unit_rank(u: Mapping[str, Any]) -> tuple[int, int, str]:
        size = u["end_line"] - u["start_line"]
        return (-unit_changes.get((u["path"], u["qualified_name"]), 0), -size, u["qualified_name"])

    functions: dict[str, list[str]] = defaultdict(list)
    for u in sorted(units, key=unit_rank):
        name = _short(u["qualified_name"] or "")
        # dunders and very short names make poor questions and match too much as concepts
        useful = len(name) >= 3 and not (name.startswith("__") and name.endswith("__"))
        if useful and u["path"] in module_of_path and u["kind"] in ("function", "method"):
            functions[module_of_path[u["path"]]].append(u["qualified_name"])
    deps = _dependencies(members, {p: by_path[p]["text"] or "" for p in code}, module_of_path)
    rank = {m: i for i, m in enumerate(order)}
    modules = tuple(
        Module(
            name=m,
            path=members[m][0],
            changes=module_churn[m],
            functions=tuple(dict.fromkeys(functions[m])),
            dependents=tuple(sorted((d for d in deps if m in deps[d]), key=rank.__getitem__)),
            dependencies=tuple(sorted(deps.get(m, ()), key=rank.__getitem__)),
        )
        for m in order
    )
    # history labels the innermost unit changed: a type changes when one of its members does
    members_changed: Counter[tuple[str, str]] = Counter()
    for (path, qname), n in unit_changes.items():
        qname = qname or ""
        for prefix in [qname[: m.start()] for m in re.finditer(r"\.|::", qname)] + [qname]:
            members_changed[(path, prefix)] += n
    type_units = [u for u in units if u["kind"] == "type" and u["path"] in module_of_path]
    type_units.sort(
        key=lambda u: (-members_changed[(u["path"], u["qualified_name"])], *unit_rank(u)[1:])
    )
    types = tuple((u["qualified_name"], u["path"], module_of_path[u["path"]]) for u in type_units)
    top = ranked(code)
    test_files = ranked(tests)
    test_units = sorted(
        (u for u in units if test_files and u["path"] == test_files[0] and u["kind"] == "test"),
        key=unit_rank,
    )
    code_languages = {by_path[p]["language"] for p in code}
    size: Counter[str] = Counter()
    for p in code:
        size[by_path[p]["language"]] += by_path[p]["bytes"] or 0
    return RepoFacts(
        repo_name=repo_name,
        language=max(size, key=lambda k: (size[k], k)) if size else None,
        modules=modules,
        top_files=tuple(top),
        co_changed=tuple(_co_changed(top[0], changes, set(by_path), churn)) if top else (),
        types=types,
        test_files=tuple(test_files),
        tests=tuple(dict.fromkeys(u["qualified_name"] for u in test_units)),
        entry_point=_entry_point(by_path, code_languages, tests, churn),
    )


def _dependencies(
    members: Mapping[str, list[str]], texts: Mapping[str, str], module_of_path: Mapping[str, str]
) -> dict[str, set[str]]:
    """module -> the modules its files' import lines name: by the module's full name, or by a
    file's stem that no other module shares (relative imports: `from .cart import x`)."""
    stems: dict[str, set[str]] = defaultdict(set)
    for m, paths in members.items():
        for p in paths:
            stem = p.rsplit("/", 1)[-1].split(".", 1)[0]
            if stem not in _GENERIC_STEMS and len(stem) >= 2:
                stems[stem].add(m)
    keys: dict[str, str] = {s: next(iter(ms)) for s, ms in stems.items() if len(ms) == 1}
    keys.update({m: m for m in members})
    if not keys:
        return {}
    # longest first, so `shop.cart` is not read as `shop` or `cart`
    names = sorted(keys, key=len, reverse=True)
    finder = re.compile(r"(?<!\w)(" + "|".join(re.escape(k) for k in names) + r")(?!\w)")
    out: dict[str, set[str]] = defaultdict(set)
    for path, text in texts.items():
        here = module_of_path[path]
        for line in _IMPORT_LINE.finditer(text):
            for key in finder.findall(line.group(0)):
                if keys[key] != here:
                    out[here].add(keys[key])
    return out


def _co_changed(
    target: str, changes: Sequence[tuple[str, str]], snapshot: set[str], churn: Mapping[str, int]
) -> list[str]:
    """Snapshot files by how many training commits changed them together with `target`."""
    touched: dict[str, set[str]] = defaultdict(set)
    for sha, path in changes:
        touched[sha].add(path)
    together: Counter[str] = Counter()
    for paths in touched.values():
        if target in paths and len(paths) <= _BULK_COMMIT:
            together.update(p for p in paths if p != target and p in snapshot)
    return sorted(together, key=lambda p: (-together[p], -churn.get(p, 0), p))


def _entry_point(
    by_path: Mapping[str, Mapping[str, Any]],
    languages: set[str],
    tests: set[str],
    churn: Mapping[str, int],
) -> str | None:
    """The likeliest entry file: by its stem (`__main__` before `main` before `cli`...), then
    the shallowest, then the most changed."""
    found = []
    for p, f in by_path.items():
        stem = p.rsplit("/", 1)[-1].split(".", 1)[0]
        if stem in _ENTRY_STEMS and p not in tests and f["language"] in languages:
            found.append((_ENTRY_STEMS.index(stem), p.count("/"), -churn.get(p, 0), p))
    return min(found)[3] if found else None
