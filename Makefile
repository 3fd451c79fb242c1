# The README's contract: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: install demo test bench clean

install: $(STAMP)

# Re-run only when the dependency files change (idempotent).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job on the built-in synthetic dataset: prepare, train a small model, evaluate it.
demo: install
	rm -rf checkpoints/demo
	$(PY) main.py --mode train --config demo
	$(PY) main.py --mode eval --config demo --all_checkpoints
	$(PY) main.py --mode report --config demo
	@echo "demo done: open checkpoints/demo/report.html; metrics in checkpoints/demo/metrics.json, samples in checkpoints/demo/samples/"

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_train.py --ngf 16 --ndf 16
	$(PY) benchmarks/bench_video.py --quick

clean:
	rm -rf $(VENV) checkpoints data *.egg-info
