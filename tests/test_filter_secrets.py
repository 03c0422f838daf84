"""repolm.filter.secrets: planted credentials and PII are replaced by typed placeholders, exactly
over their span; code that only looks like a secret is left alone; nothing leaks.

Secret values are assembled at runtime from pieces, so this file itself trips no secret scanner.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from repolm.filter.secrets import Scrubber, scrub_text

# -- planted values (fake, but shaped like the real thing) ----------------------------------------

AWS_ID = "AKIA" + "IOSFODNN7" + "EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp" + "_" + "A1b2C3d4E5f6G7h8I9j0" + "K1l2M3n4O5p6Q7r8"
GITHUB_PAT = "github" + "_pat_" + "11ABCDEFG0" + "abcdefghijklmnopqrstuvwxyz0123456789"
GITLAB = "glpat" + "-" + "xY9zW8vU7tS6rQ5pO4nM"
SLACK = "xoxb" + "-" + "1234567890-0987654321-" + "AbCdEfGhIjKlMnOpQrStUv"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T0A1B2C3D/B4E5F6G7H/" + "aBcDeFgHiJkLmNoPqRsT"
DISCORD_HOOK = "https://discord.com/api/webhooks/" + "123456789012345678/" + "aB-cD_eF" * 8
STRIPE = "sk" + "_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AI" + "za" + "SyA-1234567890abcdefghijklmnopqrstu"
OPENAI = "sk-" + "proj-" + "Ab3dEf6hIj9lMn2pQr5tUv8xYz1bCd4fGh7jKl0nOp3rSt6v"
ANTHROPIC = "sk-" + "ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" * 3 + "AA"
HF = "hf" + "_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
NPM = "npm" + "_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
PYPI = "pypi-" + "AgEIcHlwaS5vcmc" + "CJGU0ZjNkZTMtZTYyNy00OTU2LWE5N2MtNDM1YzQ4MTEyMjQ5AAIqWzMsImQ"
TWILIO = "SK" + "0123456789abcdef" * 2
SENDGRID = "SG" + "." + "aBcDeFgHiJkLmNoPqRsTuV" + "." + "a1B2c3D4e5F6g7H8i9J0" * 2 + "kLm"
JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
ETH_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe512961708279f3b1c9b9a3b1e2f0c4"
# WIF from the Bitcoin wiki (mainnet, uncompressed): base58check with a valid checksum.
WIF = "5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ"
PEM_BODY = ["MIIEowIBAAKCAQEA" + "x" * 48, "q1w2e3r4t5y6u7i8o9p0" * 3 + "AbCd", "Zm9vYmFy=="]
BEGIN, END = "-----BEGIN RSA " + "PRIVATE KEY-----", "-----END RSA " + "PRIVATE KEY-----"


def one(text: str, type_: str, value: str, placeholder: str | None = None) -> None:
    """`value` appears once in `text`; scrubbing replaces exactly it, counted once as `type_`."""
    out, counts = scrub_text(text)
    expected = text.replace(value, placeholder or f"<SECRET:{type_}>")
    assert out == expected
    assert counts == Counter({type_: 1})


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("aws_access_key", AWS_ID),
        ("github_token", GITHUB),
        ("github_token", GITHUB_PAT),
        ("gitlab_token", GITLAB),
        ("slack_token", SLACK),
        ("slack_webhook", SLACK_HOOK),
        ("discord_webhook", DISCORD_HOOK),
        ("stripe_key", STRIPE),
        ("google_api_key", GOOGLE),
        ("openai_key", OPENAI),
        ("anthropic_key", ANTHROPIC),
        ("huggingface_token", HF),
        ("npm_token", NPM),
        ("pypi_token", PYPI),
        ("twilio_key", TWILIO),
        ("sendgrid_key", SENDGRID),
        ("jwt", JWT),
        ("crypto_private_key", WIF),
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        "client = Client({v!r})  # prod\n",
        '+    let t = "{v}";\n',
        "curl -H 'X-Thing: {v}' https://api\n",
        "note: {v}\n",
    ],
)
def test_token_formats_are_replaced_exactly(type_: str, value: str, template: str) -> None:
    one(template.format(v=value), type_, value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('password = "{v}"\n', "hunter2-Xyz!"),  # Python/TOML
        ("DB_PASSWORD={v}\n", "s3cr3tP4ss"),  # .env
        ("export API_TOKEN={v}\n", "abc123def456"),  # shell
        ("  password: {v}\n", "correct9horse"),  # YAML
        ('  "password": "{v}",\n', "Pa55w0rd!"),  # JSON
        ("[db]\npasswd = {v}\n", "iniSecret42"),  # INI
        ('let db_password: &str = "{v}";\n', "rustySecret9"),  # Rust
        ("const apiKey = '{v}';\n", "k9Lm2Nq8Rs"),  # JS
        ('login(user="bob", password="{v}")\n', "kwargPass1"),
        ("Server=db;User Id=sa;Password={v};\n", "C0nnStr!ng"),  # connection string
        ('password := "{v}"\n', "goSecret77"),  # Go
        ("<password>{v}</password>\n", "xmlSecret5"),
        ("mysql --password {v} -u root\n", "flagPass99"),
    ],
)
def test_key_value_assignments_scrub_the_value_only(text: str, value: str) -> None:
    one(text.format(v=value), "password", value)


def test_aws_secret_key_next_to_its_name() -> None:
    one(f"aws_secret_access_key = {AWS_SECRET}\n", "aws_secret_key", AWS_SECRET)


def test_connection_string_keeps_user_and_host() -> None:
    text = "DATABASE_URL=postgres://app:Sup3rS3cret@db.internal:5432/app\n"
    one(text, "basic_auth_url", "Sup3rS3cret")
    one("redis://:r3disPw@cache:6379/0\n", "basic_auth_url", "r3disPw")


def test_crypto_keys_next_to_key_names() -> None:
    one(f"PRIVATE_KEY={ETH_KEY}\n", "crypto_private_key", ETH_KEY)
    one(f'const signerKey = "{ETH_KEY}";\n', "crypto_private_key", ETH_KEY)


def test_high_entropy_string_next_to_a_key() -> None:
    value = "aZ3kP9qL2mX7vB4nR8tY1wE6uI0oS5dF"
    one(f'signing_key = "{value}"\n', "password", value)  # a credential name: password
    one(f'cache = {{"session": "{value}"}}\n', "high_entropy", value)


def test_private_key_block_becomes_one_placeholder() -> None:
    block = "\n".join([BEGIN, *PEM_BODY, END])
    text = f"key = '''\n{block}\n'''\nprint(key)\n"
    out, counts = scrub_text(text)
    assert out == "key = '''\n<SECRET:private_key>\n'''\nprint(key)\n"
    assert counts == Counter({"private_key": 1})


def test_private_key_block_inside_a_diff() -> None:
    lines = [BEGIN, *PEM_BODY, END]
    diff = "@@ -0,0 +1,5 @@\n" + "".join(f"+{line}\n" for line in lines) + " unchanged\n"
    out, counts = scrub_text(diff)
    assert out == "@@ -0,0 +1,5 @@\n+<SECRET:private_key>\n unchanged\n"
    assert counts == Counter({"private_key": 1})
    # A hunk that ends inside the block still loses the whole key body.
    cut = "".join(f"+{line}\n" for line in lines[:3])
    out, counts = scrub_text(cut)
    assert out == "+<SECRET:private_key>\n" and counts == Counter({"private_key": 1})


def test_private_key_escaped_in_json() -> None:
    value = BEGIN + "\\n" + "\\n".join(PEM_BODY) + "\\n" + END
    one(f'{{"type": "service_account", "private_key": "{value}\\n"}}\n', "private_key", value)


def test_diff_lines_with_secrets() -> None:
    diff = (
        "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1,2 +1,2 @@\n"
        f"-GITHUB_TOKEN={GITHUB}\n+GITHUB_TOKEN=${{GITHUB_TOKEN}}\n DEBUG=1\n"
    )
    out, counts = scrub_text(diff)
    assert out == diff.replace(GITHUB, "<SECRET:github_token>")
    assert counts == Counter({"github_token": 1})


def test_emails_and_ips() -> None:
    text = "Author: Jane <jane.doe@acme.io>\nserver = 93.184.216.34:8080 # alt 2a03:2880::25de\n"
    out, counts = scrub_text(text)
    assert out == "Author: Jane <<EMAIL>>\nserver = <IP>:8080 # alt <IP>\n"
    assert counts == Counter({"email": 1, "ip": 2})
    out, counts = Scrubber(emails=False, ips=False).scrub(text)
    assert out == text and not counts


@pytest.mark.parametrize(
    "text",
    [
        "commit 3f2a9c1b0d4e5f60718293a4b5c6d7e8f9012345\nMerge: 3f2a9c1 0d4e5f6\n",
        "index 3f2a9c1b0d..e8f9012345 100644\n",
        'request_id = "123e4567-e89b-12d3-a456-426614174000"\n',
        '"integrity": "sha512-'
        + "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
        + '",\n',
        'password = os.environ["DB_PASSWORD"]\n',
        "password: ${DB_PASSWORD}\n",
        "const token = process.env.API_TOKEN;\n",
        'password = "changeme"\n',
        'api_key = "<your-api-key>"\n',
        "let token = lexer.next_token();\n",
        "token = tok\n",
        "pub password: String,\n",
        "def login(user: str, password: str) -> None:\n",
        'password_field = "Enter your password"\n',
        "listen 127.0.0.1:8080 and 0.0.0.0 and ::1 and 10.0.0.1 and 255.255.255.0\n",
        'version = "1.2.3.4"\n',
        "dns = 8.8.8.8\n",
        "mail me at someone@example.com; git@github.com:tokio-rs/tokio.git\n",
        "y = x@self.weight\n",
        "use std::io::Result; fn f() -> a::b::c {}\n",
        'img = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUl"\n',
        'if line.startswith("' + BEGIN + '"):\n',
        "at 12:34:56 on aa:bb:cc:dd:ee:ff\n",
    ],
)
def test_false_positives_stay_unchanged(text: str) -> None:
    assert scrub_text(text) == (text, Counter())


def test_idempotent() -> None:
    text = "\n".join(
        [
            f"AWS_ACCESS_KEY_ID={AWS_ID}",
            f"aws_secret_access_key = {AWS_SECRET}",
            f'token: "{GITHUB}"',
            'password = "hunter2-Xyz!"',
            "DB_PASSWORD=s3cr3tP4ss",
            "url = postgres://app:Sup3rS3cret@db:5432/app",
            "mail jane.doe@acme.io from 93.184.216.34",
            BEGIN,
            *PEM_BODY,
            END,
            f"PRIVATE_KEY={ETH_KEY}",
        ]
    )
    once, counts = scrub_text(text)
    assert sum(counts.values()) == 10
    assert scrub_text(once) == (once, Counter())


def test_unicode_text_keeps_offsets() -> None:
    text = f"ünïcödé 😀 token = '{GITHUB}' — jane@acme.io\n"
    out, counts = scrub_text(text)
    assert out == "ünïcödé 😀 token = '<SECRET:github_token>' — <EMAIL>\n"
    assert counts == Counter({"github_token": 1, "email": 1})


def test_values_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    values = [AWS_ID, GITHUB, "hunter2-Xyz!", "Sup3rS3cret", ETH_KEY, "jane.doe@acme.io"]
    text = (
        f"a={AWS_ID}\nt = '{GITHUB}'\npassword = \"hunter2-Xyz!\"\n"
        f"postgres://u:Sup3rS3cret@h/db\nPRIVATE_KEY={ETH_KEY}\njane.doe@acme.io\n"
    )
    out, counts = Scrubber().scrub(text)
    dumped = repr(counts) + repr(dict(counts)) + caplog.text + out
    for v in values:
        assert v not in dumped
        assert all(len(str(k)) < 40 for k in counts)


def test_detect_secrets_reads_and_writes_no_files_and_opens_no_sockets(tmp_path) -> None:
    """In a fresh interpreter: after import, scrubbing opens no file and no socket."""
    code = f"""
import sys
from repolm.filter.secrets import Scrubber
s = Scrubber()
events = []
sys.addaudithook(lambda e, a: events.append(e) if e in ("open", "socket.connect") else None)
s.scrub("password = 'hunter2-Xyz!'\\n" + {GITHUB!r} + "\\nkey = 'aZ3kP9qL2mX7vB4nR8tY1wE6uI0o'\\n")
print(len(events))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_workflow_permissions_are_not_secrets() -> None:
    text = "permissions:\n  contents: read\n  id-token: write # provenance\n  pages: write\n"
    assert scrub_text(text) == (text, Counter())


# -- keys in paths, values on the next line -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "one/pass:foobar\n",
        '    eqnice!("one/pass:far\\n", cmd.stdout());\n',  # ripgrep's tests: path:match
        '    let expected = path("./one/pass:far\\n");\n',
        "see https://example.com/a/pass:word here\n",
        "GET /api/users/password:reset\n",
        "src/auth/token=abc123def\n",
    ],
)
def test_a_key_inside_a_path_is_no_assignment(text: str) -> None:
    assert scrub_text(text) == (text, Counter())


@pytest.mark.parametrize(
    ("text", "value", "type_"),
    [
        ("cmdkey /user:bob /pass:{v}\n", "hunter22x", "password"),  # a switch, not a path
        ('// password = "{v}"\n', "hunter2-Xyz!", "password"),  # commented-out code
        ('//password = "{v}"\n', "hunter2-Xyz!", "password"),
        ("https://bob:{v}@db.internal/app\n", "Sup3rS3cret", "basic_auth_url"),  # URL userinfo
    ],
)
def test_real_credential_forms_around_slashes_still_match(
    text: str, value: str, type_: str
) -> None:
    one(text.format(v=value), type_, value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("password:\n  {v}\n", "hunter2secret"),  # YAML: a plain scalar on the next line
        ("db:\n  password:\n    {v}\n  user: bob\n", "hunter2secret"),  # nested, then a sibling
        ("password: |\n  {v}\n", "hunter2secret"),  # a block scalar of one line
        ("token: >-\n    {v}\n", "k9Lm2Nq8Rs"),
        ("password:\n  '{v}'\n", "s3cr3t-value"),
        ("users:\n  - password:\n      {v}\n", "hunter2secret"),  # in a sequence item
        ('{{\n  "password":\n    "{v}"\n}}\n', "s3cr3t-value"),  # JSON
        ('{{\n  "api_key":\n  "{v}",\n  "user": "bob"\n}}\n', "k9Lm2Nq8Rs"),
        ("[db]\npassword =\n    {v}\n", "iniSecret42"),  # INI continuation line
        ("@@ -1,2 +1,2 @@\n+password:\n+  {v}\n", "hunter2secret"),  # added in a diff
        ("password:\r\n  {v}\r\n", "hunter2secret"),
    ],
)
def test_value_on_the_line_below_its_key(text: str, value: str) -> None:
    one(text.format(v=value), "password", value)


@pytest.mark.parametrize(
    "text",
    [
        "password:\n  min_length: 8\n  required: true\n",  # a nested mapping
        "password:\n  policy:\n    hunter2secret\n",  # its first line is a key
        "password:\n  - hunter2secret\n",  # a sequence
        "password:\n  [hunter2secret]\n",  # a flow sequence
        "password:\nhunter2secret\n",  # not indented: YAML null, then another document line
        "password:\n\n  hunter2secret\n",  # a blank line first
        "password:\n  hunter2\n  secret\n",  # a scalar of two lines
        "password: |\n  line one of\n  a certificate\n",
        "password:\n  Enter your password here\n",  # prose
        "password:\n  ${DB_PASSWORD}\n",
        "password:\n  changeme\n",
        "password:\n  !vault |\n",  # a tag
        "password:\n  &pw\n",  # an anchor
        'password:\n  "<your-password>"\n',
        "    password:\n        String,\n",  # a Rust field's type on the next line
        '"password":\n  null,\n',  # JSON: only a string is a value
        '"password" =\n  "hunter2secret"\n',  # a quoted key with `=`: no syntax we know
        "username:\n  hunter2secret\n",  # not a credential key
    ],
)
def test_lines_below_a_key_that_are_no_value(text: str) -> None:
    assert scrub_text(text) == (text, Counter())


def test_value_below_is_idempotent() -> None:
    text = 'password:\n  hunter2secret\n{\n  "token":\n    "k9Lm2Nq8Rs"\n}\n'
    once, counts = scrub_text(text)
    assert counts == Counter({"password": 2})
    assert scrub_text(once) == (once, Counter())


def test_email_decision_does_not_depend_on_what_comes_before_its_line() -> None:
    local = "a" * 64  # the longest local part an address may have
    email = f"{local}@corp-internal.io"
    for before in ("", "x\n", "note: " * 20 + "\n", "<"):
        assert scrub_text(before + email)[0] == before + "<EMAIL>"
    assert scrub_text("x" + email) == ("x" + email, Counter())  # 65 characters: not an address


# -- suspect lines --------------------------------------------------------------------------------


def _can_match_newline(pattern: re.Pattern[bytes]) -> list[str]:
    """What in `pattern`'s syntax tree could match (or look at) a "\\n": nothing, for a regex
    whose matches all lie within one line (and behave the same at a line's ends as at a text's)."""
    C, _parser = _sre()  # noqa: N806
    # possessive repeats (a++) exist from Python 3.11
    repeats = (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT))

    safe_categories = {
        C.CATEGORY_DIGIT,
        C.CATEGORY_WORD,
        C.CATEGORY_NOT_SPACE,
        C.CATEGORY_NOT_LINEBREAK,
    }

    def in_set(items: list) -> bool:
        negate, hit = False, False
        for op, av in items:
            if op is C.NEGATE:
                negate = True
            elif op is C.LITERAL:
                hit |= av == 10
            elif op is C.RANGE:
                hit |= av[0] <= 10 <= av[1]
            elif op is C.CATEGORY:
                hit |= av not in safe_categories
            else:
                raise AssertionError(op)
        return hit != negate

    def walk(seq: _parser.SubPattern, flags: int) -> list[str]:
        bad = []
        for op, av in seq:
            if op is C.LITERAL:
                bad += ["\\n"] if av == 10 else []
            elif op is C.NOT_LITERAL:
                bad += [] if av == 10 else [f"not {av}"]
            elif op is C.ANY:
                bad += ["." + " with DOTALL"] if flags & re.DOTALL else []
            elif op is C.IN:
                bad += [f"set {av}"] if in_set(av) else []
            elif op in repeats:
                bad += walk(av[2], flags)
            elif op is C.SUBPATTERN:
                bad += walk(av[3], flags)
            elif op is C.BRANCH:
                bad += [b for s in av[1] for b in walk(s, flags)]
            elif op in (C.ASSERT, C.ASSERT_NOT):
                bad += walk(av[1], flags)
            elif op is C.AT:  # \b is the same next to "\n" as at a text's ends; ^ and $ are not
                bad += [] if av in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY) else [str(av)]
            elif op is not C.GROUPREF:
                bad.append(str(op))
        return bad

    parsed = _parser.parse(pattern.pattern, pattern.flags)
    return walk(parsed, parsed.state.flags)


def _first_bytes(pattern: re.Pattern[bytes]) -> set[int]:
    """Every byte a match of `pattern` can start with (a superset: lookarounds are ignored)."""
    C, _parser = _sre()  # noqa: N806
    # possessive repeats (a++) exist from Python 3.11
    repeats = (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT))

    every = set(range(256))
    categories = {
        C.CATEGORY_DIGIT: set(b"0123456789"),
        C.CATEGORY_WORD: set(b"0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        C.CATEGORY_SPACE: set(b" \t\n\r\f\v"),
    }
    categories[C.CATEGORY_NOT_DIGIT] = every - categories[C.CATEGORY_DIGIT]
    categories[C.CATEGORY_NOT_WORD] = every - categories[C.CATEGORY_WORD]
    categories[C.CATEGORY_NOT_SPACE] = every - categories[C.CATEGORY_SPACE]

    def in_set(items: list) -> set[int]:
        out, negate = set(), False
        for op, av in items:
            if op is C.NEGATE:
                negate = True
            elif op is C.LITERAL:
                out.add(av)
            elif op is C.RANGE:
                out.update(range(av[0], av[1] + 1))
            else:
                out |= categories[av]
        return every - out if negate else out

    def first(seq: _parser.SubPattern) -> tuple[set[int], bool]:  # (bytes, can be empty)
        out: set[int] = set()
        for op, av in seq:
            if op is C.LITERAL:
                return out | {av}, False
            if op is C.NOT_LITERAL:
                return out | (every - {av}), False
            if op is C.ANY:
                return out | every, False
            if op is C.IN:
                return out | in_set(av), False
            if op is C.BRANCH:
                alternatives = [first(alt) for alt in av[1]]
                out |= set().union(*(f for f, _ in alternatives))
                if not any(empty for _, empty in alternatives):
                    return out, False
            elif op is C.SUBPATTERN:
                f, empty = first(av[3])
                out |= f
                if not empty:
                    return out, False
            elif op in repeats:
                f, empty = first(av[2])
                out |= f
                if av[0] > 0 and not empty:
                    return out, False
            elif op not in (C.AT, C.ASSERT, C.ASSERT_NOT):
                return out | every, False
        return out, True

    parsed = _parser.parse(pattern.pattern, pattern.flags)
    found, _ = first(parsed)
    if parsed.state.flags & re.IGNORECASE:
        found |= {ord(chr(b).swapcase()) for b in found if b < 128}
    return found


def _looks_behind(pattern: re.Pattern) -> bool:
    """Whether `pattern` has a lookbehind anywhere in its syntax tree."""
    C, _parser = _sre()  # noqa: N806
    # possessive repeats (a++) exist from Python 3.11
    repeats = (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT))

    def walk(seq: _parser.SubPattern) -> bool:
        for op, av in seq:
            if op in (C.ASSERT, C.ASSERT_NOT) and (av[0] < 0 or walk(av[1])):
                return True
            if op is C.SUBPATTERN and walk(av[3]):
                return True
            if op in repeats and walk(av[2]):
                return True
            if op is C.BRANCH and any(walk(alt) for alt in av[1]):
                return True
        return False

    return walk(_parser.parse(pattern.pattern, pattern.flags))


def test_no_trigger_needs_what_line_content_leaves_out() -> None:
    """`Scrubber.is_suspect` checks a line by the triggers that matched its content
    (`line_content`): exact only if no trigger looks behind its match or can start in the
    blanks, + and - left out, but for two whose tails after their dashes are triggers too."""
    from repolm.filter import patterns as P

    regexes = [regex for regex, _, _ in Scrubber()._triggers]
    for regex in regexes:
        assert not _looks_behind(regex), regex.pattern
        starts = _first_bytes(regex)
        assert not starts & set(b" \t+"), regex.pattern
        if ord("-") in starts:
            assert regex in (P.PEM_BEGIN, P.FLAG_ASSIGNMENT_BYTES), regex.pattern
    assert P.PEM_BEGIN_TAIL in regexes and set(P.FLAG_TAILS) <= set(regexes)
    assert _first_bytes(P.PEM_BEGIN) == {ord("-")}
    assert _first_bytes(re.compile(rb"a*[+b]")) == set(b"a+b")
    assert _looks_behind(P.ASSIGNMENT)


def test_every_trigger_regex_stays_within_one_line() -> None:
    """`Scrubber.suspect_lines` is exact only if no trigger regex can match across lines."""
    triggers = Scrubber()._triggers
    assert len(triggers) > 40
    for regex, _, _ in triggers:
        assert _can_match_newline(regex) == [], regex.pattern
    assert _can_match_newline(re.compile(rb"a\sb")) == ["set [(CATEGORY, CATEGORY_SPACE)]"]
    assert _can_match_newline(re.compile(rb"[^x]")) != []
    assert _can_match_newline(re.compile(rb"x$")) != []


SUSPECT_TEXTS = [
    f"AWS_ACCESS_KEY_ID={AWS_ID}\nregion = us-east-1\n",
    f"aws_secret_access_key = {AWS_SECRET}\n",
    f"x = 1\ntoken: '{GITHUB}'\ny = 2\n",
    "\n".join([BEGIN, *PEM_BODY, END]),  # only the BEGIN line finds it
    "\n".join(["+" + line for line in [BEGIN, *PEM_BODY[:2]]]),  # a hunk cut inside a key
    f'{{"private_key": "{BEGIN}\\n{PEM_BODY[0]}\\n{END}\\n"}}\n',
    "password:\n  hunter2secret\n",  # the key's line holds no value
    "mail jane.doe@acme.io from 93.184.216.34 and 2a03:2880::25de\n",
    f"PRIVATE_KEY={ETH_KEY}\n{WIF}\n",
    "mysql --password flagPass99 -u root\n",
    "-  --password flagPass99 \\\n",  # a removed line: its dashes run into the flag's
    "@@ -1 +1 @@\n------BEGIN EC PRIVATE KEY-----\n-" + PEM_BODY[0] + "\n",
]


def test_a_text_with_no_suspect_line_scrubs_to_itself() -> None:
    """Every line of texts with findings, alone or mixed with harmless lines: a text is left as
    it is exactly when it has no suspect line, or scrubbing leaves it unchanged anyway."""
    s = Scrubber()
    harmless = ["fn main() {", "    let key = map.get(&id);", "}", "", "x = a.b.c", "# 1.2.3"]
    texts = SUSPECT_TEXTS + harmless
    lines = {line for t in texts for line in t.split("\n")}
    suspect = s.suspect_lines(lines)
    assert not suspect & set(harmless)
    for text in texts:
        for piece in (text, "\n".join(harmless[:3]) + "\n" + text, text + "\n".join(harmless)):
            out, counts = s.scrub(piece)
            if suspect.isdisjoint(piece.split("\n")):
                assert (out, counts) == (piece, Counter()), piece
    for text in SUSPECT_TEXTS:
        assert not suspect.isdisjoint(text.split("\n")), text
        assert s.scrub(text)[1], text
    # Context on the line above can only drop a finding: the address's line stays suspect.
    assert s.scrub("version:\n  93.184.216.34\n")[1] == Counter()
    assert s.suspect_lines(["version:", "  93.184.216.34"]) == {"  93.184.216.34"}


def test_suspect_lines_of_a_real_history() -> None:
    """This repository's own history: every patch that scrubbing changes has a suspect line."""
    proc = subprocess.run(
        ["git", "log", "-p", "-n", "300", "--format=%H%n%B"],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0 or not proc.stdout:
        pytest.skip("not a git checkout")
    texts = proc.stdout.split("\ndiff --git ")
    s = Scrubber()
    suspect = s.suspect_lines({line for t in texts for line in t.split("\n")})
    changed = 0
    for text in texts:
        out, counts = s.scrub(text)
        if counts or out != text:
            changed += 1
            assert not suspect.isdisjoint(text.split("\n"))
    assert changed > 0


def _sre():  # noqa: ANN202
    """The regex compiler's constants and parser (`re._constants`/`re._parser` from Python
    3.11, `sre_constants`/`sre_parse` before)."""
    try:
        from re import _constants, _parser
    except ImportError:  # Python 3.10
        import sre_constants as _constants
        import sre_parse as _parser
    return _constants, _parser


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("https://api.example.com/login?user=bob&password=hunter2secret", "hunter2secret"),
        ('url = "https://x.io/a?password=Sup3rS3cretPw&user=bob"', "Sup3rS3cretPw"),
        ("GET /hook?access_token=9f8e7d6c5b4a3210&page=2", "9f8e7d6c5b4a3210"),
    ],
)
def test_credentials_in_url_query_parameters(text: str, scrubbed: str) -> None:
    clean, found = Scrubber().scrub(text)
    assert scrubbed not in clean and found
    assert "&user=bob" in clean or "&page=2" in clean or "user=bob" in clean


@pytest.mark.parametrize(
    "text",
    [
        "https://x.io/search?q=password&page=2",
        "?passwordless=true&key=value",
        "if a && password == x",
        "https://x.io/a?token=abc",
    ],
)
def test_query_parameters_that_are_not_credentials(text: str) -> None:
    assert Scrubber().scrub(text)[0] == text
