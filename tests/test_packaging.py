"""A wheel built from the tree installs a working repolm: every data file the code loads (the
architectures, presets and suites) is inside it, and the installed package finds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "repolm"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a copy of what the sdist holds, so the build leaves no build/ or egg-info in the checkout
    tree = tmp_path_factory.mktemp("tree")
    root = SRC.parents[1]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    shutil.copytree(SRC, tree / "src" / "repolm", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(tree),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("repolm-*.whl")
    return path


def test_every_data_file_of_the_package_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [
        p.relative_to(SRC.parent).as_posix()
        for p in SRC.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert any(d.startswith("repolm/train/architectures/") for d in data)
    missing = sorted(set(data) - names)
    assert not missing, f"not packaged: {missing}"


def test_the_installed_wheel_finds_its_architectures_presets_and_suites(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    probe = """
import repolm, sys
from pathlib import Path
assert Path(repolm.__file__).is_relative_to(sys.argv[1]), repolm.__file__
from repolm.config.load import list_presets, load_config
from repolm.config.schema import ModelConfig
from repolm.eval.behaviour import suite_path
from repolm.train.models import architecture, list_architectures
names = list_architectures()
assert names, "no architectures"
for name in names:
    architecture(ModelConfig(architecture=name))
for preset in list_presets():
    load_config(preset=preset)
print(len(names), len(list_presets()), suite_path("reasoning").is_file())
"""
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    n_arch, n_presets, suite = done.stdout.split()
    assert int(n_arch) == len(list(SRC.glob("train/architectures/*.yaml")))
    assert int(n_presets) == len(list(SRC.glob("config/presets/*.yaml")))
    assert suite == "True"
