"""`repolm complete`: the cursor in a file, which model a command means, and completions that
stop where the unit of code ends (driven by a scripted model, so the text is known)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Scripted, save_base_model
from repolm.config import load_config
from repolm.errors import RepolmError
from repolm.fsutil import write_text_atomic
from repolm.layout import RunLayout
from repolm.lm import load_model
from repolm.serve.complete import Cursor, at_cursor, complete, resolve_model

SOURCE = "import os\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    pass\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_base_model(tmp_path_factory.mktemp("tiny") / "model")


def test_the_cursor_in_a_file(tmp_path: Path) -> None:
    file = tmp_path / "calc.py"
    file.write_text(SOURCE)
    cursor = at_cursor(file, 8, name="calc.py")  # the end of `def sub(a, b):`
    assert cursor.before.endswith("def sub(a, b):") and cursor.after == "\n    pass\n"
    assert cursor.language == "Python" and cursor.path == "calc.py"
    assert at_cursor(file, 5, 5).before.endswith("\n    ")
    assert at_cursor(file, 10).after == ""  # past the last line: the end of the file
    for line, column, problem in ((11, None, "line 11 is outside"), (5, 30, "column 30")):
        with pytest.raises(RepolmError, match=problem):
            at_cursor(file, line, column)
    with pytest.raises(RepolmError, match="no such file"):
        at_cursor(tmp_path / "absent.py", 1)


def test_which_model(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    layout = RunLayout(run)
    write_text_atomic(layout.run_config, load_config().to_yaml())  # one model, main
    with pytest.raises(RepolmError, match="not trained yet"):
        resolve_model(None, run)
    layout.model_dir("main").mkdir(parents=True)
    assert resolve_model(None, run) == ("main", str(layout.model_dir("main")))
    assert resolve_model("main", None, run)[1] == str(layout.model_dir("main"))  # default run
    assert resolve_model(str(tiny), None, run) == (str(tiny), str(tiny))  # a path
    assert resolve_model("smollm2-135m", None, run)[1] == "smollm2-135m"  # a base name
    with pytest.raises(RepolmError, match="has no model 'other'"):
        resolve_model("other", run)
    with pytest.raises(RepolmError, match="no model to complete with"):
        resolve_model(None, None, tmp_path / "nothing")


def scripted(tiny: Path, text: str) -> Any:
    lm = load_model(tiny)
    lm.model = Scripted(lm.model, lm.encode(text))
    return lm


def test_a_completion_stops_where_its_unit_ends(tiny: Path) -> None:
    body = "\n    return a - b\n"
    lm = scripted(tiny, body + "\n\ndef mul(a, b):\n    return a * b\n")
    cursor = Cursor("calc.py", "Python", SOURCE[: SOURCE.index(":\n    pass") + 1], "\n    pass\n")
    pieces = list(complete(lm, cursor, max_tokens=64))
    assert "".join(pieces) == body and len(pieces) > 1  # streamed, and cut at the unit's end
    assert lm.model.written < len(lm.model.script) - 4  # and generation stopped there
    # after a complete line outside any function: the next unit the model writes
    lm = scripted(tiny, "\nimport sys\nimport re\n")
    at_import = Cursor("calc.py", "Python", "import os", SOURCE[len("import os") :])
    assert "".join(complete(lm, at_import)) == "\nimport sys\n"
    # a plain prompt: stop strings, and the unit only with a language
    lm = scripted(tiny, "\n    return 1\nx = 2\n")
    assert "".join(complete(lm, "def f():", stop=["1"])) == "\n    return "
    lm = scripted(tiny, "\n    return 1\nx = 2\n")
    assert "".join(complete(lm, "def f():", language="Python")) == "\n    return 1\n"


def test_trailing_whitespace_the_model_rewrites_is_not_repeated(tiny: Path) -> None:
    lm = scripted(tiny, "\n    return a - b\n")
    cursor = Cursor("calc.py", "Python", "def sub(a, b):\n    ", "")
    assert "".join(complete(lm, cursor)) == "return a - b\n"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repolm", "complete", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_cli(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text(SOURCE)
    ok = cli(
        "--model", str(tiny), "--file", "calc.py", "--line", "8", "--max-tokens", "8", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    sampled = [
        cli("--model", str(tiny), "def f():", "-t", "1.0", "--seed", "3", cwd=tmp_path).stdout
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # a seed makes sampling repeatable
    for args, problem in (
        (["--model", str(tiny), "--file", "calc.py"], "--file needs --line"),
        (["--model", str(tiny)], "give a prompt or --file"),
        (["--model", str(tiny), "--file", "nope.py", "--line", "1"], "no such file"),
        (["x"], "no model to complete with"),
    ):
        bad = cli(*args, cwd=tmp_path)
        assert bad.returncode != 0 and problem in bad.stderr and "Traceback" not in bad.stderr


def test_a_base_models_own_fim_tokens_prompt_its_own_format(tiny: Path, tmp_path: Path) -> None:
    """A pretrained model with StarCoder's `<fim_prefix>` family (and no repolm record) is
    prompted in that family's bare PSM format, by `repolm complete` and by the server."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repolm.lm import cursor_prompt
    from repolm.serve.prompts import completion_prompt

    family = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.add_special_tokens({"additional_special_tokens": family})
    model = AutoModelForCausalLM.from_pretrained(tiny)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path / "starcoder-like")
    tokenizer.save_pretrained(tmp_path / "starcoder-like")
    lm = load_model(tmp_path / "starcoder-like")
    assert lm.fim and not lm.fim_header and load_model(tiny).fim is False
    pre, suf, mid = tokenizer.convert_tokens_to_ids(family)
    before, after = "def sub(a, b):\n    ", "\n\ndef mul(a, b):\n    pass\n"
    expected = [pre, *lm.encode(before), suf, *lm.encode(after), mid]
    assert cursor_prompt(lm, "calc.py", "python", before, after, 16) == expected
    assert completion_prompt(lm, before, after) == expected
    assert {pre, suf, mid} <= set(lm.special.values())  # generating one stops the completion
