# relujax: the two quick-start commands are `make train` and `make test`; `make docs` builds the site.
# Each (re)creates .venv from pyproject.toml when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pytest runs on 2 workers (pytest-xdist); PYTEST_ARGS= runs it serially.
# Extras installed into .venv (editable): `test` brings the training application's (`train`) and
# the test tools, `docs` the site's. CI adds `torch` (PyTorch parity tests); without it they skip.
EXTRAS ?= test,docs
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?= -n 2
TRAIN_ARGS ?=

.PHONY: venv test train docs dist bench lint format plot clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

train: $(STAMP)
	$(PY) -m relujax.train $(TRAIN_ARGS)

# The documentation site, in site/: strict, so a broken reference or link fails the build.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

# Wheel and sdist in dist/ (relujax only, plus its package data).
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .

bench: $(STAMP)
	$(PY) -m benchmarks.activations --quick
	$(PY) -m benchmarks.train_step --quick
	$(PY) -m benchmarks.train_step --quick --isolated --models netresdeep2 --rounds 1
	$(PY) -m benchmarks.train_step --quick --profile --models netresdeep2 --impls app,plain
	$(PY) -m benchmarks.train_step --quick --depths 2,8
	$(PY) -m benchmarks.allocator --quick

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

plot: $(STAMP)
	$(PY) -m relujax.plot

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site dist build *.egg-info

# One prepared accelerator check (benchmarks/README.md); ACCEL_ARGS e.g. --data-dir DIR --quick.
ACCEL_OUT ?= benchmarks/out/accel
.PHONY: accel-check
accel-check:
	PYTHONPATH=. $(PYTHON) -m benchmarks.accel_check --out $(ACCEL_OUT) $(ACCEL_ARGS)
