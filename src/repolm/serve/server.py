"""Starting `repolm serve`: which models (every model of a run, or model paths), API keys from
a flag, `REPOLM_API_KEY` or a file, the address (loopback unless asked, and then only with a
key), and the process's two threads: the batches on the main thread, which loaded the models
(see `Runner`), and uvicorn on another, which finishes or cancels in-flight requests on
shutdown (SIGINT or SIGTERM; a second SIGINT forces it).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from repolm.errors import RepolmError
from repolm.layout import RunLayout
from repolm.logs import log
from repolm.serve.app import ServedModel, Settings, create_app
from repolm.serve.engine import Engine, Runner

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_keys(keys: list[str] | None, key_file: Path | None) -> tuple[str, ...]:
    """The keys a client may give: flags, the REPOLM_API_KEY variable (comma-separated) and a
    file of one key per line."""
    found = [k for k in keys or [] if k]
    found += [k.strip() for k in os.environ.get("REPOLM_API_KEY", "").split(",") if k.strip()]
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise RepolmError(
                f"cannot read the key file {key_file}: {e.strerror}", "fix --api-key-file"
            ) from None
        found += [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    return tuple(dict.fromkeys(found))


def served_models(
    out: Path | None, paths: list[str] | None, context: int, max_batch: int, max_queue: int
) -> list[ServedModel]:
    """Every trained model of the run in `out` (its id is its name, its parent its base), and
    each of `paths` (its id is the path). Their engines share one runner."""
    from repolm.lm import load_model

    chosen: list[tuple[str, str, str | None]] = []
    if out is not None:
        layout = RunLayout(out)
        for name, spec in layout.models().items():
            path = layout.model_dir(name)
            if path.is_dir():
                chosen.append((name, str(path), (spec or {}).get("base")))
            else:
                log.warning(f"serve: model {name} is not trained yet ({path}); not served")
    chosen += [(p, p, None) for p in paths or []]
    if not chosen:
        raise RepolmError("no model to serve", "give --out DIR (a trained run) or --model PATH")
    served, runner = [], Runner()
    for name, path, parent in chosen:
        lm = load_model(path, max_len=context)
        served.append(
            ServedModel(name, lm, Engine(lm, max_batch, max_queue, runner=runner), parent)
        )
        log.info(f"serve: {name} ({path}), window {lm.max_len}")
    return served


def check_address(host: str, settings: Settings, allow_remote: bool) -> None:
    """Loopback, or another address asked for with `--allow-remote` and behind a key."""
    if host not in LOOPBACK:
        if not allow_remote:
            raise RepolmError(
                f"--host {host} would serve beyond this machine",
                "add --allow-remote (and an API key) to mean it, or keep the default 127.0.0.1",
            )
        if not settings.api_keys:
            raise RepolmError(
                f"serving on {host} needs an API key",
                "give --api-key, --api-key-file or REPOLM_API_KEY",
            )


def serve(
    models: list[ServedModel], host: str, port: int, settings: Settings, allow_remote: bool
) -> None:
    """Serve `models` (whose engines share a runner) until SIGINT or SIGTERM."""
    import uvicorn

    check_address(host, settings, allow_remote)
    runner = models[0].engine.runner
    if any(m.engine.runner is not runner for m in models):
        raise ValueError("the served models' engines must share one runner")
    config = uvicorn.Config(
        create_app(models, settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    log.info(
        f"serve: http://{host}:{port}/v1 ({len(models)} model(s); keys: {len(settings.api_keys)})"
    )
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in handled}
    try:
        runner.run_while(server.run)
    except SystemExit:  # uvicorn could not start; it said why
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for m in models:
            m.engine.close(grace_s=5)
    if not server.started:
        raise RepolmError(
            f"could not serve on {host}:{port} (uvicorn's message above says why)",
            "is something listening there already? choose another --port",
        )
