# relujax: the two quick-start commands are `make train` and `make test`.
# Each (re)creates .venv from pyproject.toml when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Extras installed into .venv. CI adds `torch` (PyTorch parity tests); without it they skip.
EXTRAS ?= test
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=
TRAIN_ARGS ?=

.PHONY: venv test train bench lint format plot clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

train: $(STAMP)
	$(PY) -m train $(TRAIN_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.activations --quick
	$(PY) -m benchmarks.train_step --quick
	$(PY) -m benchmarks.compile_time --quick
	$(PY) -m benchmarks.step_isolated --quick
	$(PY) -m benchmarks.profile_step --quick

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

plot: $(STAMP)
	$(PY) -m relujax.plot

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# One prepared accelerator check (benchmarks/README.md); ACCEL_ARGS e.g. --data-dir DIR --quick.
ACCEL_OUT ?= benchmarks/out/accel
.PHONY: accel-check
accel-check:
	PYTHONPATH=. $(PYTHON) -m benchmarks.accel_check --out $(ACCEL_OUT) $(ACCEL_ARGS)
