# Two commands do all set-up on a fresh machine:
#   make demo   - install into .venv, then run the whole DVC pipeline on the embedded synthetic corpus (CPU)
#   make test   - install into .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install bench clean-demo gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

demo: install
	$(BIN)/hybridlm demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/hybridlm bench

# The GPU acceptance run (docs/performance.md): on a lent GPU machine, from the repository root, with no install
# (carried wheels in .whl). GPU_CHECK_ARGS passes options, e.g. GPU_CHECK_ARGS="--device cpu --dry-run" here.
gpu-check:
	scripts/gpu_check.sh $(GPU_CHECK_ARGS)
