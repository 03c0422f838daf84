"""repolm.filter.secrets: planted credentials and PII are replaced by typed placeholders, exactly
over their span; code that only looks like a secret is left alone; nothing leaks.

Secret values are assembled at runtime from pieces, so this file itself trips no secret scanner.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter

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
