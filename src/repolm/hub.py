"""Hugging Face models by local path or cached hub id; repolm never downloads one."""

from __future__ import annotations

from pathlib import Path

from repolm.errors import RepolmError


def local_model_dir(name: str) -> str:
    """A local directory, or the snapshot of a hub id already in the local Hugging Face cache;
    never a download."""
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # not a hub id, or not in the cache
        raise RepolmError(
            f"{name!r} is neither a local directory nor a model in the local Hugging Face cache",
            f"download it first (hf download {name} --local-dir DIR) and give DIR "
            "(repolm never downloads a model)",
        ) from None
