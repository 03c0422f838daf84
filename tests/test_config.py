"""Config: strict schema, layers in order, errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repolm.config import DEFAULT_PRESET, Config, list_presets, load_config
from repolm.errors import ConfigError


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads(name: str) -> None:
    resolved = load_config(preset=name)
    assert isinstance(resolved.config, Config)
    assert resolved.preset == name


def test_smollm2_cpu_fine_tunes_the_offline_base_in_tiny_cpus_budget() -> None:
    config = load_config(preset="smollm2-cpu").config
    tiny = load_config(preset="tiny-cpu").config
    assert config.tokenize.kind == "base" and config.tokenize.base_model == "smollm2-135m"
    (main,) = config.models.values()
    assert main.base == "smollm2-135m" and main.method == "lora" and main.lora.rank == 16
    assert config.train.max_minutes == tiny.train.max_minutes == 8
    assert config.build.seq_len == 512 and config.train.lr is not None
    # the swept choices (docs/benchmarks.md): no FIM, no dropout; two models' eval kept short
    assert config.build.fim_rate == 0 and main.lora.dropout == 0
    assert config.eval.base_model and config.eval.max_items < tiny.eval.max_items


def test_default_preset_is_tiny_cpu() -> None:
    assert DEFAULT_PRESET == "tiny-cpu"
    assert load_config().preset == "tiny-cpu"


def test_layers_apply_in_order(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("mine:\n  max_patch_bytes: 5000\n  jobs: 3\n")
    resolved = load_config(config_file=file, overrides=["mine.jobs=1", "mine.detect_copies=true"])
    mine = resolved.config.mine
    assert mine.max_patch_bytes == 5000  # file over preset
    assert mine.jobs == 1  # flag over file
    assert mine.detect_copies is True
    assert mine.max_blob_bytes == 2_000_000  # preset value kept
    assert resolved.sources[-2:] == [str(file), "--set"]


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    file = tmp_path / "typo.yaml"
    file.write_text("mine:\n  max_patch_byte: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(config_file=file)
    msg = str(e.value)
    assert "'mine.max_patch_byte'" in msg and str(file) in msg
    assert "did you mean 'max_patch_bytes'" in msg


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("mien: {}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'mien'.*did you mean 'mine'"):
        load_config(config_file=file)


def test_invalid_value_names_key(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("mine:\n  merge_diff: combined\n")
    with pytest.raises(ConfigError, match=r"invalid value for 'mine.merge_diff' in .*c.yaml"):
        load_config(config_file=file)
    with pytest.raises(ConfigError, match=r"'mine.jobs' in --set"):
        load_config(overrides=["mine.jobs=-1"])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mine: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*bad.yaml at line"):
        load_config(config_file=bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_file=tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(config_file=listy)


def test_bad_set_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="write --set section.key=value"):
        load_config(overrides=["mine.jobs"])
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny-cpu"):
        load_config(preset="huge")


def test_resolved_yaml_round_trips() -> None:
    resolved = load_config(overrides=["mine.jobs=2"])
    data = yaml.safe_load(resolved.to_yaml())
    assert Config.model_validate(data) == resolved.config
    assert load_config(overrides=["mine.jobs=2"]).digest == resolved.digest
    assert load_config(overrides=["mine.jobs=3"]).digest != resolved.digest


def test_unquoted_yaml_dates_are_cutoffs(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("split:\n  cutoff: 2024-06-30\n")
    assert load_config(config_file=file).config.split.cutoff == "2024-06-30"
    flag = load_config(overrides=["split.cutoff=2024-06-30T12:00:00+02:00"])
    assert flag.config.split.cutoff == "2024-06-30T12:00:00+02:00"
