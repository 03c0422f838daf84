"""The filter stage end to end: planted credentials, committed and later deleted, appear in no
output of the stage and in no log; exclusions and dedup are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repolm.config import load_config
from repolm.pipeline.runner import run_pipeline


def planted() -> dict[str, str]:
    """Realistic fake credentials, assembled at run time so this file holds none of them."""
    return {
        "aws": "AKIA" + "Q3EGRK7XH2" + "B4VNDZ",  # 20 characters, as AWS key ids are
        "aws_secret": "wJalrXUtnFEMI" + "/K7MDENG/bPxRfiCY" + "ZQ9X3KTW8B",
        "github": "ghp_" + "Xq7mZ2vLk9Rt4Bn8" + "Wc3Yp6Hs1Jd5Fg0Ae2Qu",
        "password": "Tr0ub4dor" + "&3-horse",
        "db_password": "s3cr3t-" + "db-pa55word",
        "slack": "https://hooks.slack.com/services/"
        + "T01ABCDEF/B02GHIJKL/"
        + "aBcDeFgHiJkLmNoPqRsTuVwX",
        "key_body": "MIIEowIBAAKCAQEA"
        + "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0",
        "yaml_password": "pl4in-" + "yaml-value9",  # on the line below its key
        "email": "jane.doe" + "@corp-internal.io",
        "author_email": "dev.person" + "@private-mail.net",
    }


@pytest.fixture
def secret_repo(git_repo):
    s = planted()
    r = git_repo("leaky")
    r.write("src/app.py", "def main():\n    return 1\n")
    r.commit("init")
    r.write(
        "config/settings.py",
        f'AWS_ACCESS_KEY_ID = "{s["aws"]}"\nAWS_SECRET_ACCESS_KEY = "{s["aws_secret"]}"\n'
        f'GITHUB_TOKEN = "{s["github"]}"\npassword = "{s["password"]}"\n'
        f'SLACK_WEBHOOK = "{s["slack"]}"\n',
    )
    r.write(".env", f"DB_PASSWORD={s['db_password']}\n")
    r.write("config/db.yaml", f"db:\n  user: app\n  password:\n    {s['yaml_password']}\n")
    r.write(
        "deploy/id_rsa",
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + s["key_body"]
        + "\n"
        + s["key_body"][::-1]
        + "\n-----END RSA PRIVATE KEY-----\n",
    )
    r.commit(f"add config (contact {s['email']})", env={"GIT_AUTHOR_EMAIL": s["author_email"]})
    r.remove("config/settings.py")
    r.remove(".env")
    r.remove("deploy/id_rsa")
    r.commit("remove secrets")
    for i in range(6):
        r.write(f"src/m{i}.py", f"def f{i}():\n    return {i}\n")
        r.commit(f"feature {i}")
    r.write("vendor/lib/x.py", "def vendored():\n    pass\n")
    r.write("Cargo.lock", "# lock\n")
    r.write("src/dup_a.py", "".join(f"def g{i}(x):\n    return x * {i} + 1\n\n" for i in range(40)))
    r.write("src/dup_b.py", "".join(f"def g{i}(x):\n    return x * {i} + 1\n\n" for i in range(40)))
    r.commit("vendored, lockfile, duplicate")
    for i in range(3):
        r.write(f"late{i}.txt", f"{i}\n")
        r.commit(f"late {i}")
    return r


def test_no_planted_secret_reaches_filter_outputs_tokenizer_or_logs(secret_repo, tmp_path: Path):
    out = tmp_path / "run"
    run_pipeline(
        out, secret_repo.path, load_config(overrides=["tokenize.vocab_size=600"]), until="tokenize"
    )
    outputs = sorted(
        p for d in ("filter", "tokenizer") for p in (out / d).rglob("*") if p.is_file()
    )
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert {p.name for p in outputs} >= {
        "files.parquet",
        "commits.parquet",
        "changes.parquet",
        "chunks.parquet",
        "stats.json",
    }
    texts = []
    for p in outputs:
        texts.append(p.read_bytes().decode("latin-1"))  # raw bytes: compressed pages too
        if p.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(p).to_pylist(), default=str))
    texts += [p.read_text() for p in (out / "logs").glob("*.log")]
    texts.append((out / "manifest.json").read_text())
    for name, value in planted().items():
        for needle in {value, value[:20]}:
            assert not any(needle in t for t in texts), f"{name} leaked"

    stats = json.loads((out / "filter" / "stats.json").read_text())
    assert stats["secrets"].get("aws_access_key", 0) >= 1
    assert stats["secrets"].get("private_key", 0) >= 1
    assert stats["secrets"].get("github_token", 0) >= 1
    files = stats["files"]["excluded"]
    assert files.get("vendored") == 1 and files.get("lockfile") == 1
    assert files.get("duplicate_exact", 0) + files.get("duplicate_near", 0) == 1
    commits = pq.read_table(out / "filter" / "commits.parquet").to_pylist()
    assert all(c["author_email"].startswith("h:") for c in commits)
    assert {c["split"] for c in commits} == {"train", "val", "test"}
    changes = pq.read_table(out / "filter" / "changes.parquet").to_pylist()
    assert any("<SECRET:" in (c["patch"] or "") for c in changes)  # scrubbed, not dropped
    assert not any(c["path"].startswith("vendor/") for c in changes)


def test_nothing_left_is_a_clear_error(secret_repo, tmp_path: Path) -> None:
    from repolm.errors import RepolmError

    cfg = load_config(overrides=["filter.languages=[Haskell]"])
    with pytest.raises(RepolmError, match="nothing is left after filtering.*language_not_allowed"):
        run_pipeline(tmp_path / "run", secret_repo.path, cfg, until="filter")
