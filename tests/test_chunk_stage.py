"""The chunk stage end to end on fixture repositories: snapshot units at the cutoff, and the
exact change labels of each commit."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repolm.config import load_config
from repolm.pipeline.runner import run_pipeline

LIB_V1 = '''\
"""Tools."""


def a():
    return 1


class K:
    def m(self):
        return 2
'''


@pytest.fixture
def py_repo(git_repo):
    r = git_repo("py")
    shas = {}
    r.write("lib.py", LIB_V1)
    r.write("README.md", "# Proj\n\nIntro.\n\n## Install\n\npip install proj\n")
    shas["c1"] = r.commit("add lib")
    r.write("lib.py", LIB_V1.replace("return 1", "return 10"))
    shas["c2"] = r.commit("change a")
    r.write("test_lib.py", "from lib import a\n\n\ndef test_a():\n    assert a() == 10\n")
    shas["c3"] = r.commit("test a")
    r.write("lib.py", LIB_V1.replace("return 1", "return 10").replace("return 2", "return 3"))
    shas["c4"] = r.commit("change K.m")
    v5 = LIB_V1.replace("return 2", "return 3").replace(
        "def a():\n    return 1", "def b():\n    return 5"
    )
    r.write("lib.py", v5)
    shas["c5"] = r.commit("replace a by b")
    r.write("README.md", "# Proj\n\nIntro.\n\n## Install\n\npip install proj[all]\n")
    shas["c6"] = r.commit("docs")
    r.write("pyproject.toml", "[project]\nname = 'proj'\n")
    shas["c7"] = r.commit("build")
    r.write("settings.yaml", "debug: true\n")
    shas["c8"] = r.commit("config")
    r.write("lib.py", "import os\n" + v5)
    shas["c9"] = r.commit("import")
    r.write("x.txt", "x\n")
    shas["c10"] = r.commit("last")
    return r, shas


def run_chunk(repo, out: Path, *overrides: str) -> list[dict]:
    cfg = load_config(overrides=["split.cutoff=" + overrides[0], *overrides[1:]])
    run_pipeline(out, repo.path, cfg, until="chunk")
    return pq.read_table(out / "chunk" / "chunks.parquet").to_pylist()


def labels(rows: list[dict], sha: str) -> set[tuple[str, str, str]]:
    return {
        (r["change_type"], r["kind"], r["qualified_name"])
        for r in rows
        if r["source"] == "change" and r["sha"] == sha
    }


def test_change_labels_python(py_repo, tmp_path: Path) -> None:
    repo, s = py_repo
    rows = run_chunk(repo, tmp_path / "run", s["c8"], "chunk.jobs=1")
    assert labels(rows, s["c1"]) >= {
        ("new_function", "function", "a"),
        ("new_type", "type", "K"),
        ("new_function", "method", "K.m"),
        ("docs", "module", repo_module_name(rows, s["c1"])),
    }
    assert labels(rows, s["c2"]) == {("modified_function", "function", "a")}
    assert labels(rows, s["c3"]) >= {("new_test", "test", "test_a")}
    assert labels(rows, s["c4"]) == {("modified_function", "method", "K.m")}  # not K itself
    assert labels(rows, s["c5"]) == {
        ("deleted_function", "function", "a"),
        ("new_function", "function", "b"),
    }
    assert {(c, k) for c, k, _ in labels(rows, s["c6"])} == {("docs", "section")}
    assert {(c, k) for c, k, _ in labels(rows, s["c7"])} == {("build", "window")}
    assert {(c, k) for c, k, _ in labels(rows, s["c8"])} == {("config", "window")}
    assert {(c, k) for c, k, _ in labels(rows, s["c9"])} == {("other", "lines")}

    deleted = next(
        r for r in rows if r["sha"] == s["c5"] and r["change_type"] == "deleted_function"
    )
    assert "return 10" in deleted["text"]  # the text as it was before the commit

    snap = [r for r in rows if r["source"] == "snapshot"]
    assert {r["sha"] for r in snap} == {s["c8"]}
    assert {r["split"] for r in snap} == {"train"}
    assert ("function", "b") in {(r["kind"], r["qualified_name"]) for r in snap}
    assert {r["split"] for r in rows if r["sha"] == s["c10"]} <= {"val", "test"}

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["split"]["cutoff_sha"] == s["c8"]
    st = manifest["stages"]["chunk"]["stats"]
    assert st["changes_by_type"]["modified_function"] == 2


def repo_module_name(rows: list[dict], sha: str) -> str:
    mods = [
        r["qualified_name"]
        for r in rows
        if r["sha"] == sha and r["kind"] == "module" and r["path"] == "lib.py"
    ]
    return mods[0] if mods else "<no module unit>"


def test_parallel_workers_give_the_same_rows(py_repo, tmp_path: Path) -> None:
    repo, s = py_repo
    one = run_chunk(repo, tmp_path / "one", s["c8"], "chunk.jobs=1")
    two = run_chunk(repo, tmp_path / "two", s["c8"], "chunk.jobs=2")

    def key(r: dict) -> tuple:
        return (
            r["sha"],
            r["path"],
            r["source"],
            r["start_line"],
            r["qualified_name"],
            r["change_type"] or "",
        )

    assert sorted(one, key=key) == sorted(two, key=key)


def test_rust_units_and_tests(git_repo, tmp_path: Path) -> None:
    r = git_repo("rs")
    r.write(
        "src/lib.rs",
        "pub struct P { x: u8 }\n\nimpl P {\n    pub fn get(&self) -> u8 {\n"
        "        self.x\n    }\n}\n",
    )
    c1 = r.commit("struct")
    r.write(
        "src/lib.rs",
        "pub struct P { x: u8 }\n\nimpl P {\n    pub fn get(&self) -> u8 {\n"
        "        self.x + 1\n    }\n}\n\n#[cfg(test)]\nmod tests {\n"
        "    #[test]\n    fn gets() {\n        assert_eq!(1, 1);\n    }\n}\n",
    )
    c2 = r.commit("test")
    r.write("Cargo.toml", "[package]\nname = 'p'\n")
    c3 = r.commit("cargo")
    r.write("x", "1\n")
    r.commit("pad 1")
    r.write("x", "2\n")
    r.commit("pad 2")
    rows = run_chunk(r, tmp_path / "run", c3, "chunk.jobs=1")
    assert ("new_type", "type") in {(c, k) for c, k, _ in labels(rows, c1)}
    got = labels(rows, c2)
    assert ("modified_function", "method") in {(c, k) for c, k, _ in got}
    assert "new_test" in {c for c, _, _ in got}
    assert not any(c == "modified_type" for c, _, _ in got)
    assert {c for c, _, _ in labels(rows, c3)} == {"build"}


def test_incremental_reparse_equals_full_parse(git_repo, tmp_path: Path, monkeypatch) -> None:
    """Old versions are re-parsed from the newer version's edited tree; the rows must be
    exactly those of parsing every version from scratch."""
    import repolm.chunk.versions as chunk_versions

    r = git_repo("inc")
    body = "".join(f"fn f{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n\n" for i in range(30))
    versions = [
        body,
        "// header\n" + body,  # insert at the top
        "// header\n" + body.replace("x + 7", "x * 7\n    + 1"),  # grow a function
        "// header\n" + body.replace("x + 7", "x * 7\n    + 1") + "fn tail() {}",  # no newline
        "// header\n" + body.replace("x + 7", "x * 7\n    + 1") + "fn tail() {}\n",  # add it
        body[: len(body) // 2],  # cut the second half
        "struct S;\n\nimpl S {\n    fn m(&self) {}\n}\n" + body[: len(body) // 2],
    ]
    for i, text in enumerate(versions):
        r.write("src/lib.rs", text)
        r.commit(f"v{i}")
    for i in range(3):
        r.write("pad.txt", f"{i}\n")
        r.commit(f"pad {i}")
    cutoff = r.rev_parse("HEAD~3")
    incremental = run_chunk(r, tmp_path / "inc", cutoff, "chunk.jobs=1")
    stats = json.loads((tmp_path / "inc" / "manifest.json").read_text())["stages"]["chunk"]
    assert stats["stats"]["parses"]["incremental"] >= 5
    # No trees kept: every version is parsed from scratch.
    monkeypatch.setattr(chunk_versions, "CACHE_TREES", 0)
    full = run_chunk(r, tmp_path / "full", cutoff, "chunk.jobs=1")
    assert incremental == full
