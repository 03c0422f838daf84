# The whole set-up on a fresh machine with python3, git and make.
# `make run` mines and trains on this repository; `make test` runs the test suite.
# Installs come from the lock (requirements/lock.txt); `make lock` moves it to newer releases.
PYTHON ?= python3
VENV ?= .venv
LOCK := requirements/lock.txt
TORCH_PIN := requirements/torch.txt
BASE_PIN := requirements/offline-base.txt
TORCH_SPEC ?= $(shell grep -m1 '^torch==' $(TORCH_PIN))
BIN := $(VENV)/bin
STAMP := $(VENV)/.repolm-installed
# `make run` fine-tunes the offline pretrained base (docs/benchmarks.md: it beats tiny-cpu from
# scratch on every repository measured); `make run PRESET=tiny-cpu` trains the tiny model instead
PRESET ?= smollm2-cpu

.PHONY: run test test-slow lint bench install lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the project's metadata or the lock changed. A CPU torch goes in first
# when the environment has none, so pip never pulls a multi-GB CUDA build; GPU users keep
# their own (the lock leaves torch out). Everything else is exactly the lock's versions, and
# the offline base model goes in without its dependencies (requirements/offline-base.txt).
$(STAMP): pyproject.toml $(LOCK) $(TORCH_PIN) $(BASE_PIN) | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps -r $(BASE_PIN)
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/repolm run --repo . --preset $(PRESET)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# the multi-second end-to-end tests (subprocess CLI runs, kill-and-resume, two processes)
test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mine.py .

# Re-resolve every dependency (base, dev and gpu extras; Python 3.10 and newer; every
# platform) to the newest releases, install them and run the suite: a deliberate step,
# committed only when it passes. torch moves separately, by editing $(TORCH_PIN).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
		--upgrade --constraint $(TORCH_PIN) --no-emit-package torch \
		--custom-compile-command "make lock" --output-file $(LOCK)
	$(MAKE) test test-slow

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
