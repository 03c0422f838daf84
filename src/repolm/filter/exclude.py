"""Which files may reach a dataset: vendored, generated, lock, minified, binary and oversized files
are excluded, and so are files the user's globs or language allow-list leave out.

    rules = ExcludeRules(exclude=("docs/**",), languages=("Rust",))
    path_reason("vendor/x.go", "Go", rules)           # -> "vendored"
    content_reason("a.js", b"var a=1;" * 9000, rules)  # -> "minified"

Two steps, cheap first: `path_reason` judges a path alone (it runs on every path of every commit,
so it is a few set look-ups and at most two compiled regexes), `content_reason` the bytes of a file
whose path passed. Each returns the first reason that applies, or None when the file is kept.

The built-in rules are deliberately conservative: a kept vendored file costs a little data
quality, a dropped source file loses real code. So only directory names that mean "someone else's
code" wherever they appear are vendored anywhere (`vendor/`, `node_modules/`, `third_party/`, ...);
names that are often first-party source (`deps/`, `external/`, `extern/`) count only at the top
level, where C, C++ and Node repositories put their submodules; `build/` and `target/` are never
excluded (`build.rs`, Rust's `src/build/`, Go's `build/` packaging scripts are source), and
`dist/` counts only at the top level. Files are never vendored by their own name (`vendor.go`,
`src/deps.rs` are kept).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from repolm.filter.globs import compile_globs
from repolm.mine.model import looks_binary

__all__ = ["REASONS", "ExcludeRules", "content_reason", "path_reason"]

REASONS: tuple[str, ...] = (
    "not_included",
    "excluded_by_glob",
    "language_not_allowed",
    "vendored",
    "lockfile",
    "minified",
    "generated",
    "binary",
    "too_large",
)

# -- built-in path rules -------------------------------------------------------------------------

# Directory names that hold someone else's code wherever they appear (package manager installs,
# virtual environments, conventional vendoring directories; cf. GitHub linguist's vendor.yml).
VENDOR_DIRS = frozenset(
    {
        "vendor",
        "vendors",
        "vendored",
        "_vendor",  # pip, setuptools: src/pip/_vendor/
        "third_party",
        "third-party",
        "thirdparty",
        "ThirdParty",
        "3rdparty",
        "3rd_party",
        "3rd-party",
        "node_modules",
        "bower_components",
        "jspm_packages",
        "web_modules",
        ".venv",
        "venv",
        "site-packages",
        "dist-packages",
        ".tox",
        ".nox",
        "Pods",  # CocoaPods
        "Carthage",
        "Godeps",
        "elm-stuff",
        ".bundle",
        ".yarn",  # Yarn Berry: releases/ and cache/ (the whole Yarn binary, zipped packages)
        ".pnpm-store",
    }
)
# Vendoring only as a top-level directory: deeper, these names are often first-party code
# (`src/external/` API clients, `src/deps/` dependency resolvers).
TOP_VENDOR_DIRS = frozenset({"deps", "external", "extern", "externals", "Dependencies"})

# Build outputs and code-generator output directories. `dist/` only at the top level (a package's
# `src/dist/` module is source); `build/` never (see the module docstring).
GENERATED_DIRS = frozenset(
    {"__generated__", ".next", ".nuxt", ".svelte-kit", ".docusaurus", "htmlcov", "_build"}
)
TOP_GENERATED_DIRS = frozenset({"dist", "bazel-out", "bazel-bin", "bazel-genfiles"})
# File name endings of code generators' output (protobuf, gRPC, Dart build_runner, .NET designers).
# Matched case-insensitively.
GENERATED_SUFFIXES = (
    ".pb.go",
    ".pb.gw.go",
    ".pb.cc",
    ".pb.h",
    ".pb.c",
    ".pb.swift",
    ".pb.rs",
    ".pb.dart",
    ".pbenum.dart",
    ".pbjson.dart",
    ".pbgrpc.dart",
    ".pbserver.dart",
    "_pb2.py",
    "_pb2.pyi",
    "_pb2_grpc.py",
    "_pb.js",
    "_pb.d.ts",
    "_grpc_pb.js",
    "_grpc_pb.d.ts",
    ".g.dart",
    ".freezed.dart",
    ".mocks.dart",
    ".g.cs",
    ".g.i.cs",
    ".designer.cs",
    ".designer.vb",
)
# Name fragments that generators put in their output's name: `schema.generated.ts`,
# `api_generated.go`, Kubernetes' `zz_generated.deepcopy.go` (not a bare `generated.rs` module).
GENERATED_NAME_RE = re.compile(r"[._-]generated\.|^zz_generated", re.IGNORECASE)

# Lock files pin dependency versions: large, machine-written, no code. Plus any `*.lock`.
LOCKFILES = frozenset(
    {
        "Cargo.lock",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lock",
        "bun.lockb",
        "deno.lock",
        "poetry.lock",
        "Pipfile.lock",
        "uv.lock",
        "pdm.lock",
        "pixi.lock",
        "conda-lock.yml",
        "Gemfile.lock",
        "composer.lock",
        "go.sum",
        "go.work.sum",
        "flake.lock",
        "mix.lock",
        "pubspec.lock",
        "Podfile.lock",
        "Package.resolved",
        "Cartfile.resolved",
        "packages.lock.json",
        "paket.lock",
        "gradle.lockfile",
        "buildscript-gradle.lockfile",
        "MODULE.bazel.lock",
        "cabal.project.freeze",
        "stack.yaml.lock",
        "Manifest.toml",  # Julia
        "renv.lock",
        "shard.lock",
        "conan.lock",
        ".terraform.lock.hcl",
    }
)
LOCK_EXTENSIONS = frozenset({"lock", "lockfile"})

# Source maps by their full suffix: a bare `.map` is also a hand-written linker version script.
MINIFIED_SUFFIXES = (
    ".min.js",
    ".min.mjs",
    ".min.cjs",
    ".min.css",
    "-min.js",
    "-min.css",
    ".js.map",
    ".mjs.map",
    ".cjs.map",
    ".css.map",
)

# Extensions whose files are always binary (lowercase): images, fonts, media, archives and
# packages, compiled objects, office documents, model weights and data containers.
BINARY_EXTENSIONS = frozenset(
    """
    png jpg jpeg gif bmp ico icns cur tif tiff webp avif heic heif psd xcf ai raw cr2 nef
    dds ktx exr hdr tga pcx jxl jp2 svgz
    ttf otf woff woff2 eot ttc pfb pfm fon
    mp3 wav ogg oga flac aac m4a opus wma aiff aif mid midi amr
    mp4 m4v mov avi mkv webm flv wmv mpg mpeg 3gp ogv swf fla
    zip gz tgz bz2 tbz2 xz txz zst lz4 lzma lz 7z rar tar z cab arj ar cpio
    jar war ear aar apk aab ipa xpi crx whl egg gem nupkg deb rpm dmg iso img msi msix vsix
    o obj a lib so dylib dll exe bin elf ko class dex pyc pyo pyd wasm beam rlib rmeta pdb ilk
    idb node gch pch
    pdf doc docx xls xlsx ppt pptx odt ods odp odg epub mobi xps
    sqlite sqlite3 db mdb accdb dbf npy npz pkl pickle pt pth ckpt safetensors onnx h5 hdf5
    parquet arrow feather avro orc tfrecord pb gguf ggml tflite mlmodel joblib rds rdata
    blend fbx glb 3ds stl unitypackage uasset
    keystore jks p12 pfx der
    """.split()  # noqa: SIM905 - a compact table reads better than 180 quoted strings
)
BINARY_NAMES = frozenset({".DS_Store", "Thumbs.db"})


# -- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcludeRules:
    """What the filter stage keeps. Globs are validated and compiled once, on construction."""

    include: tuple[str, ...] = ()  # if non-empty, a file must match one of these globs
    exclude: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()  # repolm language names, any case; empty: every language
    max_file_bytes: int = 500_000
    max_line_length: int = 1000  # bytes; see `content_reason`
    _include_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _exclude_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _languages: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("include", "exclude", "languages"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"ExcludeRules.{name} must be a sequence of strings, not a str")
            object.__setattr__(self, name, tuple(value))
        if self.max_file_bytes <= 0 or self.max_line_length <= 0:
            raise ValueError("ExcludeRules.max_file_bytes and max_line_length must be positive")
        object.__setattr__(self, "_include_re", compile_globs(self.include))
        object.__setattr__(self, "_exclude_re", compile_globs(self.exclude))
        object.__setattr__(self, "_languages", frozenset(x.casefold() for x in self.languages))


def path_reason(path: str, language: str | None, rules: ExcludeRules) -> str | None:
    """Why a file is excluded judging by its path alone (cheap; no content), or None.

    The user's rules come first (they are the explicit intent), then the built-in ones from the
    most to the least specific: `vendor/app.min.js` is "vendored", `dist/app.min.js` "minified".
    """
    if rules._include_re is not None and rules._include_re.fullmatch(path) is None:
        return "not_included"
    if rules._exclude_re is not None and rules._exclude_re.fullmatch(path) is not None:
        return "excluded_by_glob"
    if rules._languages and (language is None or language.casefold() not in rules._languages):
        return "language_not_allowed"
    return builtin_path_reason(path)


def builtin_path_reason(path: str) -> str | None:
    """The built-in path rules alone: vendored, lockfile, minified, generated, binary."""
    *dirs, name = path.split("/")
    if dirs and (
        not VENDOR_DIRS.isdisjoint(dirs) or dirs[0] in TOP_VENDOR_DIRS
    ):  # only directories: `vendor.go`, `src/deps.rs` are kept
        return "vendored"
    lower = name.lower()
    ext = posixpath.splitext(lower)[1][1:]
    if name in LOCKFILES or ext in LOCK_EXTENSIONS:
        return "lockfile"
    if lower.endswith(MINIFIED_SUFFIXES):
        return "minified"
    if dirs and (not GENERATED_DIRS.isdisjoint(dirs) or dirs[0] in TOP_GENERATED_DIRS):
        return "generated"
    if lower.endswith(GENERATED_SUFFIXES) or (
        "generated" in lower and GENERATED_NAME_RE.search(name)
    ):
        return "generated"
    if ext in BINARY_EXTENSIONS or name in BINARY_NAMES:
        return "binary"
    return None


# -- content rules -------------------------------------------------------------------------------

GENERATED_HEAD_LINES = 20
GENERATED_HEAD_BYTES = 4096  # caps the header read when the first lines are very long
MINIFIED_MIN_AVERAGE = 200  # bytes per line; hand-written code averages 30-40

# Markers code generators write in a file's first lines. Prose about generated things must not
# match, so each marker is a whole warning or has the file as its subject: "DO NOT EDIT" followed
# by the end of the line, punctuation or "this file"/"manually"... (Go's `// Code generated ...
# DO NOT EDIT.` is one), but not "do not edit the table below without..."; "auto-generated by",
# "this file was generated", but not "ones below that are auto-generated".
GENERATED_MARKERS = re.compile(
    rb"(?i)@generated\b"
    rb"|\bdo not (?:hand[- ]?)?(?:edit|modify)\b(?=[ \t\r]*(?:$|[.!:;,)*/#>\-\"'\]]"
    rb"|this file|manually|by hand|directly|the file))"
    rb"|\b(?:auto[- ]?|automatically |machine[- ])generated (?:by|from|with|using|file|code)\b"
    rb"|\b(?:file|code|source|header|module) (?:is|was|has been) (?:auto(?:matically|-)? ?)?"
    rb"generated\b"
    rb"|\bthis is an? (?:auto-?)?generated (?:file|source|header)\b"
    rb"|\bgenerated by the protocol buffer compiler\b"
    rb"|^[^\w\n]*(?:auto[- ]?generated|generated by (?!hand\b)[\w.-]+(?: [\w.-]+)?)[^\w\n]*$",
    re.MULTILINE,
)


def content_reason(path: str, data: bytes, rules: ExcludeRules) -> str | None:
    """Why a file is excluded judging by its content (after path_reason passed), or None.

    In order of cost: "too_large" (over `rules.max_file_bytes`), "binary" (a NUL byte near the
    start), "generated" (a generator's marker in the first 20 lines), "minified" (the longest
    line over `rules.max_line_length` bytes and over 200 bytes per line on average)."""
    if len(data) > rules.max_file_bytes:
        return "too_large"
    if looks_binary(data):
        return "binary"
    if GENERATED_MARKERS.search(_head(data)):
        return "generated"
    if is_minified(data, rules.max_line_length):
        return "minified"
    return None


def _head(data: bytes) -> bytes:
    """The first GENERATED_HEAD_LINES lines, at most GENERATED_HEAD_BYTES bytes."""
    head = data[:GENERATED_HEAD_BYTES]
    end = -1
    for _ in range(GENERATED_HEAD_LINES):
        end = head.find(b"\n", end + 1)
        if end < 0:
            return head
    return head[:end]


def is_minified(data: bytes, max_line_length: int) -> bool:
    """Whether text is machine-packed: a line longer than max_line_length and a high average
    line length. Both are needed: one long line (a URL, a test vector) in hand-written code keeps
    the average low, and a data file of many medium lines has no single long one."""
    if len(data) <= max_line_length:
        return False
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if len(data) / lines <= MINIFIED_MIN_AVERAGE:
        return False
    return max(map(len, data.split(b"\n"))) > max_line_length
