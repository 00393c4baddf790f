# The two commands a newcomer needs: `make run` and `make test` (which runs `make lint` first).
.PHONY: run test test-fast lint format lock bootstrap

run:
	scripts/bootstrap.sh run
	.venv/bin/python scripts/run_node.py

# The suite waits on real servers more than it computes: 4 processes (pytest-xdist) on a
# 2-CPU machine halve it. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4

test: lint
	scripts/test_services.sh
	.venv/bin/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast:
	.venv/bin/python -m pytest -n $(TEST_WORKERS) -m "not e2e" $(PYTEST_ARGS)

# ruff (lint rules and formatting) and mypy, configured in pyproject.toml.
lint:
	scripts/bootstrap.sh test
	.venv/bin/ruff check sendit tests scripts
	.venv/bin/ruff format --check sendit tests scripts
	.venv/bin/mypy

# Rewrites the files: import order and other safe fixes, then formatting.
format:
	.venv/bin/ruff check --fix sendit tests scripts
	.venv/bin/ruff format sendit tests scripts

# The pinned installs, from pyproject.toml's dependencies (run after changing them).
lock:
	.venv/bin/pip-compile -q --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml
	.venv/bin/pip-compile -q --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--extra test --extra lint --extra bench -o requirements-dev.lock pyproject.toml
