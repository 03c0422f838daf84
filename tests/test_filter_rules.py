"""The filter stage's exclusion rules (paths, contents, globs, languages) and license rules
(license texts, license files, SPDX headers, deny lists)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from repolm.filter.exclude import (
    REASONS,
    ExcludeRules,
    content_reason,
    path_reason,
)
from repolm.filter.globs import glob_to_regex
from repolm.filter.licenses import (
    GPL_FAMILY,
    detect_license,
    is_denied,
    license_files,
    spdx_header,
)
from repolm.mine.languages import detect_language

DEFAULT = ExcludeRules()


def reason(path: str, rules: ExcludeRules = DEFAULT) -> str | None:
    return path_reason(path, detect_language(path), rules)


# -- built-in path rules -------------------------------------------------------------------------

KEPT_PATHS = [
    "src/deps.rs",
    "build.rs",
    "src/build/mod.rs",
    "build/package.sh",
    "vendor.go",
    "src/vendor.go",
    "docs/vendor-notes.md",
    "pkg/deps/resolve.go",  # `deps` vendors only at the top level
    "src/external/client.py",
    "lib/extern/mod.rs",
    "src/dist/wheel.py",  # `dist` is build output only at the top level
    "src/generated.rs",
    "src/lock.rs",
    "lock.go",
    "src/locks/mutex.rs",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "app.js",
    "src/minify.js",
    "linker.map",  # a linker version script, not a source map
    "logo.svg",
    "image.go",
    "README.md",
    "Makefile",
    "tests/snapshots/ui.snap",
    "src/pods/pod.go",  # Kubernetes' pods, not CocoaPods' Pods/
]


@pytest.mark.parametrize("path", KEPT_PATHS)
def test_source_paths_are_kept(path: str) -> None:
    assert reason(path) is None


EXCLUDED_PATHS = {
    "vendored": [
        "vendor/x.go",
        "a/node_modules/b.js",
        "node_modules/react/index.js",
        "third_party/zlib/deflate.c",
        "src/third-party/a.js",
        "thirdparty/x.h",
        "bower_components/jquery/jquery.js",
        ".venv/lib/python3.11/site-packages/six.py",
        "venv/bin/activate",
        "lib/site-packages/x.py",
        "src/pip/_vendor/rich/text.py",
        "ios/Pods/AFNetworking/AF.m",
        "Carthage/Checkouts/x/y.swift",
        "deps/uv/src/unix/core.c",
        "external/googletest/gtest.cc",
        "extern/imgui/imgui.cpp",
        "static/vendors/jquery.js",
        "vendor/app.min.js",  # vendored is reported before minified
    ],
    "generated": [
        "x.pb.go",
        "api/v1/service.pb.gw.go",
        "foo_pb2.py",
        "foo_pb2_grpc.py",
        "proto/msg.pb.cc",
        "proto/msg.pb.h",
        "lib/model.g.dart",
        "lib/model.freezed.dart",
        "src/schema.generated.ts",
        "Form1.Designer.cs",
        "pkg/apis/v1/zz_generated.deepcopy.go",
        "dist/bundle.js",
        "web/__generated__/query.graphql.ts",
        "docs/_build/html/index.html",
        "bazel-out/k8-fastbuild/bin/x.h",
    ],
    "lockfile": [
        "Cargo.lock",
        "fuzz/Cargo.lock",
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "Pipfile.lock",
        "uv.lock",
        "Gemfile.lock",
        "composer.lock",
        "go.sum",
        "flake.lock",
        "mix.lock",
        "pubspec.lock",
        "ios/Podfile.lock",
        "Package.resolved",
        ".terraform.lock.hcl",
        "deps.lock",  # any *.lock
    ],
    "minified": [
        "app.min.js",
        "static/jquery-3.7.1.min.js",
        "css/site.min.css",
        "dist-js/app.js.map",
        "css/site.css.map",
        "dist/app.min.js",  # minified is reported before generated
    ],
    "binary": [
        "logo.png",
        "docs/img/Screenshot.PNG",
        "fonts/Inter.woff2",
        "release.tar.gz",
        "lib/foo.so",
        "bin/tool.exe",
        "module.wasm",
        "__pycache__/x.cpython-311.pyc",
        "libs/guava.jar",
        "paper.pdf",
        "model.safetensors",
        "sounds/beep.wav",
        ".DS_Store",
    ],
}


@pytest.mark.parametrize(
    ("path", "expected"), [(p, r) for r, paths in EXCLUDED_PATHS.items() for p in paths]
)
def test_path_reasons(path: str, expected: str) -> None:
    assert reason(path) == expected


def test_every_reason_is_listed_and_tested() -> None:
    tested = set(EXCLUDED_PATHS) | {
        "too_large",
        "not_included",
        "excluded_by_glob",
        "language_not_allowed",
    }
    assert set(REASONS) == tested
    assert len(REASONS) == len(set(REASONS))


# -- content rules -------------------------------------------------------------------------------


def content(path: str, data: bytes | str, rules: ExcludeRules = DEFAULT) -> str | None:
    return content_reason(path, data.encode() if isinstance(data, str) else data, rules)


NORMAL_SOURCE = "".join(f"fn f{i}() -> u32 {{ {i} }}\n" for i in range(200))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(200)


def test_ordinary_source_is_kept() -> None:
    assert content("src/lib.rs", NORMAL_SOURCE) is None
    assert content("empty.py", b"") is None
    assert content("one.py", "x = 1") is None


def test_too_large() -> None:
    big = "x = 1\n" * 100_000  # 600 kB of ordinary text
    assert content("big.py", big) == "too_large"
    assert content("big.py", big, ExcludeRules(max_file_bytes=1_000_000)) is None
    assert content("edge.py", "a" * 9 + "\n", ExcludeRules(max_file_bytes=10)) is None
    assert content("edge.py", "a" * 10 + "\n", ExcludeRules(max_file_bytes=10)) == "too_large"


def test_binary_by_content() -> None:
    assert content("image", PNG) == "binary"
    assert content("data.dat", b"text" * 100 + b"\0") == "binary"
    # Only the first 8000 bytes are sniffed, as git does.
    assert content("late.txt", b"a\n" * 5000 + b"\0") is None
    assert content("utf8.txt", "naïve café ✓\n".encode()) is None


GENERATED_HEADERS = [
    "// Code generated by protoc-gen-go. DO NOT EDIT.\n// source: api.proto\n\npackage api\n",
    '// Code generated by "stringer -type=Kind"; DO NOT EDIT.\n\npackage ast\n',
    "// @generated by buck\nfn main() {}\n",
    "/**\n * This file is automatically generated by gen.py; changes will be lost.\n */\n",
    "# This file is autogenerated by pip-compile with Python 3.11\nclick==8.1\n",
    "/* Autogenerated by Thrift Compiler (0.9.3) */\n",
    "// Generated by the protocol buffer compiler.  DO NOT EDIT!\n",
    "/* DO NOT EDIT THIS FILE - it is machine generated */\n#include <jni.h>\n",
    "# Auto-generated for Macaulay2. Do not modify this file manually.\n",
    "/* Generated by Cython 3.0.11 */\n",
    "#!/usr/bin/env python\r\n# DO NOT EDIT\r\nx = 1\r\n",
    "<!-- This is an auto-generated file. -->\n<html></html>\n",
    "\n" * 18 + "// Code generated by mockgen. DO NOT EDIT.\n",  # line 19: within the first 20
]


@pytest.mark.parametrize("text", GENERATED_HEADERS)
def test_generated_by_content(text: str) -> None:
    assert content("gen.go", text + NORMAL_SOURCE) == "generated"


NOT_GENERATED = [
    "# Do not edit the table below without updating the docs.\nx = 1\n",
    "// These are much higher in quality than the ones below that are auto-generated.\n",
    "# Generated by Django 4.2 on 2023-05-01 12:00\n",  # migrations are edited by hand
    "# generated by hand\n",
    "is_autogenerated = True\n",
    "def generate():\n    '''Generate the code.'''\n",
    "\n" * 25 + "// Code generated by mockgen. DO NOT EDIT.\n",  # below the first 20 lines
]


@pytest.mark.parametrize("text", NOT_GENERATED)
def test_not_generated_by_content(text: str) -> None:
    assert content("src/x.go", text + NORMAL_SOURCE) is None


def test_minified_by_content() -> None:
    one_line_js = "var a=" + ",".join(f"f{i}(x){{return x+{i}}}" for i in range(3000)) + ";"
    assert len(one_line_js) > 50_000 and "\n" not in one_line_js
    assert content("bundle.js", one_line_js) == "minified"
    assert content("bundle.js", one_line_js + "\n") == "minified"
    # Few newlines for the size: 10 lines of 5 kB each.
    packed = "\n".join("x" * 5000 for _ in range(10))
    assert content("data.js", packed) == "minified"


def test_long_lines_alone_are_not_minified() -> None:
    # One long line (a URL, a test vector) in ordinary code keeps the average low.
    assert content("t.rs", NORMAL_SOURCE + 'const V: &str = "' + "ab" * 2000 + '";\n') is None
    # Many medium lines, none over the limit: a data table, not minified code.
    assert content("table.csv", ("x" * 900 + "\n") * 100) is None
    # The limit is configurable.
    assert content("t.js", "x" * 1500, ExcludeRules(max_line_length=2000)) is None
    assert content("t.js", "x" * 1500) == "minified"


# -- globs ---------------------------------------------------------------------------------------

GLOB_CASES = [
    # (pattern, matching paths, non-matching paths)
    ("*.py", ["a.py", "src/a.py", "x/y/z.py"], ["a.pyc", "a.py.txt", "py"]),
    ("src/*.py", ["src/a.py"], ["src/x/a.py", "a/src/a.py", "a.py"]),
    ("/setup.py", ["setup.py"], ["pkg/setup.py"]),
    ("**/test_*.py", ["test_a.py", "tests/test_a.py", "a/b/test_c.py"], ["tests/a_test.py"]),
    ("docs/**", ["docs/a.md", "docs/x/y.md"], ["docs", "src/docs/a.md", "docsx/a.md"]),
    ("a/**/b.rs", ["a/b.rs", "a/x/b.rs", "a/x/y/b.rs"], ["b.rs", "a/xb.rs", "c/a/b.rs"]),
    ("docs/", ["docs/a.md", "src/docs/x/y.md"], ["docs", "mydocs/a.md"]),
    ("src/gen/", ["src/gen/a.rs"], ["src/gen", "x/src/gen/a.rs", "src/general.rs"]),
    ("node_modules", ["node_modules/x.js", "a/node_modules/b/c.js"], ["node_modules.js"]),
    ("src/gen", ["src/gen", "src/gen/a.rs"], ["src/generated.rs"]),
    ("file?.txt", ["file1.txt", "d/fileA.txt"], ["file10.txt", "file.txt", "file/.txt"]),
    ("[abc].c", ["a.c", "d/b.c"], ["d.c", "ab.c"]),
    ("[!abc].c", ["d.c", "x/z.c"], ["a.c", "/.c"]),
    ("[^abc].c", ["d.c"], ["b.c"]),
    ("[a-c]x", ["bx"], ["dx", "-x"]),
    ("[a-]x", ["ax", "-x"], ["bx"]),
    ("[]]x", ["]x"], ["x"]),
    ("v[0-9].*", ["v1.txt", "v9.rs"], ["va.txt", "v10.txt"]),
    ("a**b", ["ab", "axxb", "d/ab"], ["a/b", "a/x/b"]),
    ("x[", ["x["], ["x"]),
    (r"\*.md", ["*.md"], ["a.md"]),
    ("a+b(c).txt", ["a+b(c).txt"], ["aab(c).txt", "a+bc.txt"]),
    ("**", ["a", "a/b/c"], []),
]


@pytest.mark.parametrize(("pattern", "yes", "no"), GLOB_CASES)
def test_glob_semantics(pattern: str, yes: list[str], no: list[str]) -> None:
    regex = re.compile(glob_to_regex(pattern))
    for path in yes:
        assert regex.fullmatch(path), (pattern, path)
    for path in no:
        assert not regex.fullmatch(path), (pattern, path)


@pytest.mark.parametrize("bad", ["", "!important.py", "/"])
def test_unsupported_globs_are_rejected_on_construction(bad: str) -> None:
    with pytest.raises(ValueError, match="unsupported glob"):
        ExcludeRules(exclude=(bad,))


def test_include_and_exclude_globs() -> None:
    rules = ExcludeRules(include=("src/**", "*.toml"), exclude=("src/legacy/", "*_test.rs"))
    assert reason("src/lib.rs", rules) is None
    assert reason("Cargo.toml", rules) is None
    assert reason("README.md", rules) == "not_included"
    assert reason("src/legacy/a.rs", rules) == "excluded_by_glob"
    assert reason("src/a_test.rs", rules) == "excluded_by_glob"
    # The user's rules are reported before the built-in ones.
    assert reason("vendor/x.go", rules) == "not_included"
    assert reason("src/vendor/x.go", rules) == "vendored"


def test_rules_are_validated_and_hashable() -> None:
    rules = ExcludeRules(include=["*.py"], languages=["Python"])  # type: ignore[arg-type]
    assert rules.include == ("*.py",) and rules.languages == ("Python",)
    assert hash(rules) == hash(ExcludeRules(include=("*.py",), languages=("Python",)))
    assert dataclasses.replace(rules, include=()).include == ()
    with pytest.raises(TypeError, match="include"):
        ExcludeRules(include="*.py")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        ExcludeRules(max_file_bytes=0)


# -- languages -----------------------------------------------------------------------------------


def test_language_allow_list() -> None:
    rules = ExcludeRules(languages=("Rust", "toml"))  # any case
    assert path_reason("src/lib.rs", "Rust", rules) is None
    assert path_reason("Cargo.toml", "TOML", rules) is None
    assert path_reason("x.py", "Python", rules) == "language_not_allowed"
    assert path_reason("NOTES", None, rules) == "language_not_allowed"
    assert path_reason("NOTES", None, DEFAULT) is None  # an empty list allows everything
    assert path_reason("x.py", "Python", DEFAULT) is None


# -- license texts -------------------------------------------------------------------------------

MIT = """MIT License

Copyright (c) 2024 Jane Doe

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

APACHE = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.
   ...
   END OF TERMS AND CONDITIONS

   APPENDIX: How to apply the Apache License to your work.

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
"""

_GPL_APPENDIX = """
                     END OF TERMS AND CONDITIONS

            How to Apply These Terms to Your New Programs

    This program is free software; you can redistribute it and/or modify
    it under the terms of the GNU General Public License as published by
    the Free Software Foundation; either version {v} of the License, or
    (at your option) any later version.
"""

GPL2 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 2, June 1991

 Copyright (C) 1989, 1991 Free Software Foundation, Inc.,
 51 Franklin Street, Fifth Floor, Boston, MA 02110-1301 USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

  9. [...] If the Program specifies a version number of this License which applies to it
and "any later version", you have the option of following the terms and conditions
either of that version or of any later version published by the Free Software Foundation.
""" + _GPL_APPENDIX.format(v=2)

GPL3 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                            Preamble

  The GNU General Public License is a free, copyleft license for
software and other kinds of works.
  13. Use with the GNU Affero General Public License.
  [...] the GNU Lesser General Public License instead of this License.
""" + _GPL_APPENDIX.format(v=3)

GPL_NOTICE = """Copyright (C) 2020 Jane Doe

This program is free software: you can redistribute it and/or modify it under
the terms of the GNU General Public License as published by the Free Software
Foundation, {tail}
"""

LGPL21 = """                  GNU LESSER GENERAL PUBLIC LICENSE
                       Version 2.1, February 1999

 Copyright (C) 1991, 1999 Free Software Foundation, Inc.
[This is the first released version of the Lesser GPL.  It also counts
 as the successor of the GNU Library Public License, version 2, hence
 the version number 2.1.]
"""

LGPL3 = """                   GNU LESSER GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

  This version of the GNU Lesser General Public License incorporates
the terms and conditions of version 3 of the GNU General Public
License, supplemented by the additional permissions listed below.
"""

AGPL3 = """                    GNU AFFERO GENERAL PUBLIC LICENSE
                       Version 3, 19 November 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
  The GNU Affero General Public License is a free, copyleft license for
software and other kinds of works, specifically designed to ensure
cooperation with the community in the case of network server software.
"""

BSD2 = """BSD 2-Clause License

Copyright (c) 2021, Jane Doe
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
"""

BSD3 = BSD2.replace("2-Clause", "3-Clause").replace(
    "THIS SOFTWARE",
    """3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE""",
)

MPL2 = """Mozilla Public License Version 2.0
==================================

1. Definitions
--------------
1.1. "Contributor"
    means each individual or legal entity that creates, contributes to
    the creation of, or owns Covered Software.
"""

ISC = """ISC License

Copyright (c) 2018, Jane Doe <jane@example.com>

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
"""

ZERO_BSD = """BSD Zero Clause License

Copyright (C) 2006 by Rob Landley <rob@landley.net>

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
"""

UNLICENSE = """This is free and unencumbered software released into the public domain.

Anyone is free to copy, modify, publish, use, compile, sell, or
distribute this software, either in source code form or as a compiled
binary, for any purpose, commercial or non-commercial, and by any
means.
"""

CC0 = """Creative Commons Legal Code

CC0 1.0 Universal

    CREATIVE COMMONS CORPORATION IS NOT A LAW FIRM AND DOES NOT PROVIDE
    LEGAL SERVICES.
"""

EPL2 = """Eclipse Public License - v 2.0

    THE ACCOMPANYING PROGRAM IS PROVIDED UNDER THE TERMS OF THIS ECLIPSE
    PUBLIC LICENSE ("AGREEMENT"). ANY USE, REPRODUCTION OR DISTRIBUTION
    OF THE PROGRAM CONSTITUTES RECIPIENT'S ACCEPTANCE OF THIS AGREEMENT.
"""

BSL = """Boost Software License - Version 1.0 - August 17th, 2003

Permission is hereby granted, free of charge, to any person or organization
obtaining a copy of the software and accompanying documentation covered by
this license (the "Software") to use, reproduce, display, distribute,
execute, and transmit the Software, and to prepare derivative works of the
Software, and to permit third-parties to whom the Software is furnished to
do so, all subject to the following:
"""

ZLIB = """zlib License

  Copyright (C) 1995-2024 Jean-loup Gailly and Mark Adler

  This software is provided 'as-is', without any express or implied
  warranty.  In no event will the authors be held liable for any damages
  arising from the use of this software.

  1. The origin of this software must not be misrepresented; you must not
     claim that you wrote the original software.
  2. Altered source versions must be plainly marked as such, and must not be
     misrepresented as being the original software.
  3. This notice may not be removed or altered from any source distribution.
"""

LICENSE_TEXTS = {
    "MIT": MIT,
    "Apache-2.0": APACHE,
    "GPL-2.0-only": GPL2,
    "GPL-3.0-only": GPL3,
    "GPL-3.0-or-later": GPL_NOTICE.format(
        tail="either version 3 of the License, or (at your option) any later version."
    ),
    "GPL-2.0-or-later": "This program is released under the GPL; see below.\n"
    + GPL_NOTICE.format(
        tail="either version 2 of the License, or\n# (at your option) any later version."
    )
    + GPL2,
    "LGPL-2.1": LGPL21,
    "LGPL-3.0": LGPL3,
    "AGPL-3.0": AGPL3,
    "BSD-2-Clause": BSD2,
    "BSD-3-Clause": BSD3,
    "MPL-2.0": MPL2,
    "ISC": ISC,
    "Unlicense": UNLICENSE,
    "0BSD": ZERO_BSD,
    "CC0-1.0": CC0,
    "EPL-2.0": EPL2,
    "BSL-1.0": BSL,
    "Zlib": ZLIB,
}


@pytest.mark.parametrize(("spdx", "text"), LICENSE_TEXTS.items())
def test_detect_license(spdx: str, text: str) -> None:
    assert detect_license(text) == spdx


@pytest.mark.parametrize(("spdx", "text"), LICENSE_TEXTS.items())
def test_detect_license_survives_rewrapping_and_markup(spdx: str, text: str) -> None:
    words = text.split()
    rewrapped = "\n".join(" ".join(words[i : i + 7]) for i in range(0, len(words), 7))
    assert detect_license(rewrapped) == spdx
    commented = "\n".join("#   " + line for line in text.splitlines())
    assert detect_license(commented) == spdx
    assert detect_license(text.replace('"', "\u201c")) == spdx  # typographic quotes


def test_gpl_or_later_needs_the_projects_own_grant() -> None:
    notice_only = GPL_NOTICE.format(tail="version 2 of the License.")
    assert detect_license(notice_only) == "GPL-2.0-only"
    or_later = "either version 2 of the License, or (at your option) any later version."
    assert detect_license(GPL_NOTICE.format(tail=or_later)) == "GPL-2.0-or-later"
    lesser_notice = GPL_NOTICE.replace("GNU General", "GNU Lesser General").format(
        tail="either version 2.1 of the License, or (at your option) any later version."
    )
    assert detect_license(lesser_notice) == "LGPL-2.1"


def test_first_license_in_a_bundle_is_the_projects() -> None:
    bundle = BSD3 + "\n\nThird-party licenses:\n\n" + GPL3 + MIT
    assert detect_license(bundle) == "BSD-3-Clause"
    assert detect_license(MIT + "\n" + APACHE) == "MIT"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "All rights reserved.",
        "This project is dual-licensed under the Unlicense and MIT licenses.",
        MIT.replace("The above copyright notice and this permission notice", "The notice"),
        "See the GNU General Public License for more details.",
    ],
)
def test_unknown_license_texts(text: str) -> None:
    assert detect_license(text) is None


# -- license files -------------------------------------------------------------------------------


def test_license_files() -> None:
    paths = [
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "LICENSE-THIRD-PARTY",
        "COPYING",
        "copying.lesser",
        "License.md",
        "LICENSE.txt",
        "UNLICENSE",
        "LICENCE",
        "LICENSES/MIT.txt",
        "LICENSES/Apache-2.0.txt",
        "license.py",
        "licenses.go",
        "licensed.txt",
        "src/LICENSE",
        "vendor/x/LICENSE",
        "README.md",
        "LICENSES/sub/x.txt",
    ]
    assert license_files(paths) == sorted(
        [
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "COPYING",
            "copying.lesser",
            "License.md",
            "LICENSE.txt",
            "UNLICENSE",
            "LICENCE",
            "LICENSES/MIT.txt",
            "LICENSES/Apache-2.0.txt",
        ]
    )


def test_dual_licensed_repository() -> None:
    files = {"LICENSE-MIT": MIT, "LICENSE-APACHE": APACHE, "src/lib.rs": "", "Cargo.toml": ""}
    found = license_files(files)
    assert found == ["LICENSE-APACHE", "LICENSE-MIT"]
    assert {detect_license(files[p]) for p in found} == {"MIT", "Apache-2.0"}


# -- SPDX headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("// SPDX-License-Identifier: MIT\n", "MIT"),
        ("# SPDX-License-Identifier: MIT OR Apache-2.0\n", "MIT OR Apache-2.0"),
        ("/* SPDX-License-Identifier: GPL-2.0-only */\n", "GPL-2.0-only"),
        (
            "/*\n * SPDX-License-Identifier: (GPL-2.0+ OR BSD-3-Clause)\n */\n",
            "(GPL-2.0+ OR BSD-3-Clause)",
        ),
        ("<!-- SPDX-License-Identifier: CC-BY-4.0 -->\n", "CC-BY-4.0"),
        ("-- SPDX-License-Identifier: Apache-2.0\n", "Apache-2.0"),
        ("{- SPDX-License-Identifier: BSD-3-Clause -}\n", "BSD-3-Clause"),
        ("(* SPDX-License-Identifier: LGPL-2.1-or-later *)\n", "LGPL-2.1-or-later"),
        (";; SPDX-License-Identifier: GPL-3.0-or-later\n", "GPL-3.0-or-later"),
        ('"""SPDX-License-Identifier: MIT"""\n', "MIT"),
        (
            "// SPDX-License-Identifier:   GPL-2.0-only   WITH  Linux-syscall-note\r\n",
            "GPL-2.0-only WITH Linux-syscall-note",
        ),
        ("#!/bin/sh\n# Copyright 2020 Jane\n#\n# SPDX-License-Identifier: ISC\n", "ISC"),
        ("// SPDX-License-Identifier: LicenseRef-Proprietary\n", "LicenseRef-Proprietary"),
    ],
)
def test_spdx_header(header: str, expected: str) -> None:
    assert spdx_header((header + "int x;\n" * 5).encode()) == expected


def test_spdx_header_absent_or_too_late() -> None:
    assert spdx_header(b"fn main() {}\n") is None
    assert spdx_header(b"") is None
    assert spdx_header(b"// SPDX-License-Identifier:\n") is None
    late = b"\n" * 30 + b"// SPDX-License-Identifier: MIT\n"
    assert spdx_header(late) is None
    assert spdx_header(b"\n" * 29 + b"// SPDX-License-Identifier: MIT\n") == "MIT"


# -- deny lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "denied"),
    [
        ("MIT", False),
        ("GPL-3.0-only", True),
        ("GPL-2.0+", True),
        ("gpl-2.0-or-later", True),  # ids compare case-insensitively
        ("LGPL-2.1", True),
        ("AGPL-3.0-or-later", True),
        ("MPL-2.0", False),  # file-level copyleft: not in the GNU family
        ("MIT OR Apache-2.0", False),
        ("MIT OR GPL-3.0-only", False),  # one may choose MIT
        ("GPL-2.0-only OR LGPL-2.1-or-later", True),  # every alternative denied
        ("MIT AND GPL-3.0-only", True),
        ("MIT AND Apache-2.0", False),
        ("GPL-2.0-only WITH Classpath-exception-2.0", True),
        ("Apache-2.0 WITH LLVM-exception", False),
        ("(MIT OR GPL-2.0-only) AND BSD-3-Clause", False),
        ("(MIT AND GPL-2.0-only) OR GPL-3.0-only", True),
        ("MIT OR GPL-2.0 AND Apache-2.0", False),  # AND binds tighter than OR
        ("GPL-2.0 AND Apache-2.0 OR MIT", False),
        ("Apache-2.0 OR MIT and GPL-3.0", False),  # operators in any case
        ("(MIT OR GPL-2.0", True),  # malformed: denied if any id is
        ("MIT GPL-2.0", True),
        ("LicenseRef-GPL-like", False),
    ],
)
def test_is_denied_gpl_family(expression: str, denied: bool) -> None:
    assert is_denied(expression, GPL_FAMILY) is denied


def test_is_denied_exact_ids_and_families() -> None:
    assert is_denied(None, GPL_FAMILY) is False  # unknown: the caller's policy
    assert is_denied("GPL-3.0-or-later", ["GPL-3.0"]) is True  # a bare version covers both
    assert is_denied("GPL-3.0-or-later", ["GPL-3.0-only"]) is False
    assert is_denied("GPL-2.0-only", ["GPL-3.0"]) is False
    assert is_denied("MPL-2.0 AND MIT", ["MPL-*"]) is True
    assert is_denied("CC-BY-NC-4.0", ["CC-BY-NC-*", "CC-BY-ND-*"]) is True
    assert is_denied("MIT", []) is False
    assert is_denied("MIT", iter(["mit"])) is True  # any iterable, any case
    assert set(GPL_FAMILY) == {"GPL-*", "LGPL-*", "AGPL-*"}
