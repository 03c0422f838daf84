"""The n8n workflows of examples/n8n, imported and executed headless by a real n8n against
`repolm serve` on a tiny model, loopback only. n8n is not a dependency (2.4 GB, ~5 minutes
to install: examples/n8n/README.md); the test runs where `REPOLM_N8N` names its binary or
`n8n` is on PATH, and is skipped elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import save_base_model
from test_serve import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "n8n"
N8N = os.environ.get("REPOLM_N8N") or shutil.which("n8n")


@pytest.mark.slow  # n8n starts in seconds, three times per workflow
@pytest.mark.skipif(N8N is None, reason="needs n8n (set REPOLM_N8N to its binary)")
def test_the_n8n_workflows_run_against_repolm_serve(tmp_path: Path) -> None:
    path = save_base_model(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # the workflows ask for 256 tokens
    (path / "config.json").write_text(json.dumps(config))
    port = free_port()
    flows = tmp_path / "n8n"
    shutil.copytree(EXAMPLES, flows)
    for file in flows.glob("*.json"):  # this server's port and model id
        text = file.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        text = text.replace("model: 'main'", f"model: '{path}'")
        file.write_text(text.replace('"value": "main"', f'"value": "{path}"'))
    command = [sys.executable, "-m", "repolm", "serve", "--model", str(path), "--port", str(port)]
    command += ["--context", "4096", "--api-key", "change-me"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        n8n_env = {**env, "N8N_USER_FOLDER": str(tmp_path / "home")}
        n8n_env["N8N_RUNNERS_BROKER_PORT"] = str(free_port())
        ran = subprocess.run(
            [str(flows / "run.sh"), str(N8N)],
            env=n8n_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.terminate()
        server.wait(30)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    for flow in ("http-chat", "llm-chain", "llm-chain-chat-completions"):
        assert any(line.startswith(f"{flow}: OK: ") for line in lines), ran.stdout
