"""The sandbox runs real subprocesses under real limits, and the code benchmarks score real
HumanEval problems and an MBPP file by executing them there."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import save_base_model
from repolm.errors import RepolmError
from repolm.eval import sandbox
from repolm.eval.codebench import (
    MBPP_CODE_START,
    Problem,
    evaluate,
    generate_samples,
    humaneval_problems,
    mbpp_problems,
    truncate_completion,
)
from repolm.eval.sandbox import classify, run_many, run_python

# -- the sandbox ------------------------------------------------------------------------------


def test_a_program_passes_fails_or_does_not_compile() -> None:
    results = run_many(["assert 1 + 1 == 2\n", "assert 1 + 1 == 3, 'bad sum'\n", "def f(:\n"])
    assert [r.status for r in results] == ["passed", "failed", "error"]
    assert [r.passed for r in results] == [True, False, False]
    assert results[1].detail == "AssertionError: bad sum"
    assert results[2].detail.startswith("SyntaxError")


def test_an_infinite_loop_is_killed_at_the_timeout() -> None:
    start = time.perf_counter()
    result = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout" and not result.passed
    assert time.perf_counter() - start < 1.0 + 3


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_timeout_kills_the_processes_the_program_started() -> None:
    # posix.fork is not disabled (os.fork is): the grandchild loops in the same process group
    program = (
        "import posix, sys\npid = posix.fork()\n"
        "if pid:\n    print(pid, file=sys.stderr, flush=True)\nwhile True:\n    pass\n"
    )
    result = run_python(program, timeout_s=1.0)
    assert result.status == "timeout"
    grandchild = int(result.detail)
    deadline = time.monotonic() + 0.5  # well before RLIMIT_CPU would end it anyway
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.parametrize(
    "program",
    ["x = bytearray(8 * 1024**3)\n", "x = []\nwhile True:\n    x.append(' ' * 2**20)\n"],
    ids=["one-allocation", "growing-list"],
)
def test_a_memory_bomb_ends_as_memory_and_spares_the_caller(program: str) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    result = run_python(program, timeout_s=10.0, memory_mb=256)
    assert result.status == "memory" and not result.passed
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the limit was the child's only
    assert bytearray(300 * 2**20)  # and this process can still allocate past it


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("mechanism", ["namespace", "guard"])
def test_the_network_is_blocked(
    mechanism: str, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mechanism == "namespace" and not sandbox.network_namespace_available():
        pytest.skip("this kernel refuses user and network namespaces")
    if mechanism == "guard":
        monkeypatch.setattr(sandbox, "network_namespace_available", lambda: False)
    port = listener.getsockname()[1]
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
    outside = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=30)
    assert outside.returncode == 0, outside.stderr  # the connection works without the sandbox
    listener.accept()[0].close()

    result = run_python(program, timeout_s=5.0)
    assert result.network_guard == mechanism
    assert result.status == "failed"
    expected = {"namespace": "Network is unreachable", "guard": sandbox.NETWORK_REFUSED}
    assert expected[mechanism] in result.detail
    with pytest.raises(BlockingIOError):  # nobody connected from inside
        listener.accept()


def test_the_program_runs_in_a_temporary_directory_removed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    program = (
        "import os, sys\nopen('stray.txt', 'w').write('x')\n"
        "assert os.path.exists('stray.txt')\nprint(os.environ['HOME'], file=sys.stderr)\n"
    )
    result = run_python(program)
    assert result.passed, result.detail
    workdir = Path(result.detail)
    assert workdir.name.startswith("repolm-sandbox-")
    assert not workdir.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_parent_environment_does_not_reach_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOLM_SECRET", "xyz")
    program = (
        "import os, sys\n"
        "print(' '.join(f'{k}={v}' for k, v in os.environ.items()), file=sys.stderr)\n"
    )
    outside = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert "REPOLM_SECRET=xyz" in outside.stderr  # a plain child would see it
    result = run_python(program)
    assert result.passed
    assert "REPOLM_SECRET" not in result.detail and "xyz" not in result.detail
    assert {kv.split("=")[0] for kv in result.detail.split()} <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    }


def test_destructive_helpers_are_disabled_and_early_exits_do_not_pass() -> None:
    results = run_many(
        [
            "import os\nos.kill(os.getpid(), 9)\n",
            "import shutil\nshutil.rmtree('.')\n",
            "import sys\nsys.exit(0)\n",
            "import os\nos._exit(0)\n",
        ]
    )
    assert [r.status for r in results] == ["failed"] * 4
    assert "NoneType" in results[0].detail and "SystemExit" in results[2].detail


def test_classify_reads_signals_and_stderr() -> None:
    end = "END"
    assert classify(0, "noise\nEND\n", False, end) == ("passed", "noise")
    assert classify(0, "", False, end)[0] == "failed"  # ended before the marker
    assert classify(-signal.SIGKILL, "", True, end)[0] == "timeout"
    assert classify(-signal.SIGXCPU, "", False, end)[0] == "timeout"
    assert classify(-signal.SIGKILL, "", False, end)[0] == "memory"
    assert classify(1, "Traceback\nMemoryError\n", False, end) == ("memory", "MemoryError")
    assert classify(1, "  File x\nIndentationError: oops\n", False, end)[0] == "error"
    assert classify(1, "x" * 1000, False, end)[1] == "x" * sandbox.DETAIL_CHARS


# -- the benchmarks ---------------------------------------------------------------------------


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    problems = humaneval_problems(limit=3)
    assert [p.task_id for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    programs = [p.program(p.reference) for p in problems]
    programs += [p.program("    return None\n") for p in problems]
    statuses = [r.status for r in run_many(programs)]
    assert statuses == ["passed"] * 3 + ["failed"] * 3


def test_truncate_completion_cuts_at_the_first_stop_sequence() -> None:
    text = "    return a + b\n\n\ndef unused():\n    pass\n# trailing\n"
    assert truncate_completion(text) == "    return a + b\n\n"
    assert truncate_completion("    return 1\n#x\nclass A: ...") == "    return 1"
    assert truncate_completion("    return 1") == "    return 1"


def _write_mbpp(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a function to add two numbers.",
        "code": "def add(a, b):\n    return a + b",
        "test_setup_code": "import math",
        "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == math.sqrt(16)"],
        "challenge_test_list": [],
    },
    {
        "task_id": 12,
        "text": "Write a function to double a number.",
        "code": "def double(a):\n    return a + 2",
        "test_setup_code": "",
        "test_list": ["assert double(3) == 6", "assert double(0) == 0"],
        "challenge_test_list": [],
    },
]


def test_mbpp_from_a_file_scores_half_with_one_right_and_one_wrong_solution(
    tmp_path: Path,
) -> None:
    problems = mbpp_problems(_write_mbpp(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    assert [p.task_id for p in problems] == ["11", "12"]
    assert problems[0].prompt == (
        "You are an expert Python programmer, and here is your task: Write a function to add two "
        "numbers. Your code should pass these tests:\n\n"
        "assert add(1, 2) == 3\nassert add(2, 2) == math.sqrt(16)\n" + MBPP_CODE_START
    )
    assert problems[0].program("X") == (
        "X\nimport math\nassert add(1, 2) == 3\nassert add(2, 2) == math.sqrt(16)\n"
    )
    report = evaluate(problems, {p.task_id: [p.reference] for p in problems}, timeout_s=5)
    assert report["pass@1"] == 0.5
    assert report["problems"] == 2 and report["samples_per_problem"] == 1
    assert "pass@10" not in report
    assert report["statuses"] == {"passed": 1, "failed": 1, "timeout": 0, "memory": 0, "error": 0}
    assert report["passed"] == {"11": 1, "12": 0}
    assert len(mbpp_problems(tmp_path / "mbpp.jsonl", limit=1)) == 1


def test_pass_at_k_is_averaged_over_problems_with_several_samples() -> None:
    problems = [Problem(task_id=t, prompt="", prefix="", test="assert f() == 1\n") for t in "ab"]
    right, wrong = "def f():\n    return 1", "def f():\n    return 2"
    samples = {
        "a": [right, wrong, right, wrong],  # 2 of 4 pass
        "b": [wrong, right, "def f(:", "def f():\n    while True: pass\nf()"],  # 1 of 4
        "unused": [right],
    }
    report = evaluate(problems, samples, ks=(1, 2, 4, 10), timeout_s=1.0)
    # pass@1 = c/n; pass@2 = 1 - C(n-c, 2) / C(n, 2): a 1 - 1/6, b 1 - 3/6; pass@4 = 1
    assert report["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert report["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert report["pass@4"] == pytest.approx(1.0)
    assert "pass@10" not in report and report["samples_per_problem"] == 4
    assert report["statuses"] == {"passed": 3, "failed": 3, "timeout": 1, "memory": 0, "error": 1}
    with pytest.raises(RepolmError, match="no samples for 1 of 2 problems: b"):
        evaluate(problems, {"a": [right]})


def test_a_bad_mbpp_file_names_the_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(MBPP_ROWS[0]) + "\n\n{not json\n")
    with pytest.raises(RepolmError, match=r"mbpp\.jsonl:3: not valid JSON"):
        mbpp_problems(path)
    _write_mbpp(path, [MBPP_ROWS[0], {"task_id": 2, "text": "t", "test_list": []}])
    with pytest.raises(RepolmError, match=r"mbpp\.jsonl:2: `test_list` must be") as info:
        mbpp_problems(path)
    assert str(path) in info.value.message and info.value.hint
    _write_mbpp(path, [MBPP_ROWS[0], MBPP_ROWS[0]])
    with pytest.raises(RepolmError, match=r"mbpp\.jsonl:2: task_id 11 is given twice"):
        mbpp_problems(path)
    with pytest.raises(RepolmError, match="missing.jsonl: cannot read"):
        mbpp_problems(tmp_path / "missing.jsonl")


def test_generate_samples_with_a_tiny_model(tmp_path: Path) -> None:
    from repolm.lm import load_model

    lm = load_model(save_base_model(tmp_path / "base"))
    problems = humaneval_problems(limit=2)
    greedy = generate_samples(lm, problems, max_new_tokens=4)
    assert list(greedy) == ["HumanEval/0", "HumanEval/1"]
    assert all(len(v) == 1 and isinstance(v[0], str) for v in greedy.values())
    sampled = generate_samples(lm, problems, n=3, max_new_tokens=4, temperature=1.0)
    assert [len(v) for v in sampled.values()] == [3, 3]
    assert sampled == generate_samples(lm, problems, n=3, max_new_tokens=4, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        generate_samples(lm, problems, n=2)
    report = evaluate(problems, sampled, ks=(1, 2, 3), timeout_s=5)
    assert sum(report["statuses"].values()) == 6 and "pass@3" in report
