# The two commands a newcomer needs: `make demo` and `make test`. Both set everything up first.
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: setup demo test lint format bench

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/vla demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: setup
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_envs.py
	$(PY) scripts/bench_model.py
	$(PY) scripts/bench_deploy.py
