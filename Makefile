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
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,export]'
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

# Only what the project generated: the venv and build files, the demo's run (which `make demo`
# recreates), the synthetic clip stores and the clip caches decoded from datasets under data/.
# Never data/<name> itself (users put their datasets there) nor checkpoints/ (their trained runs).
clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache .hypothesis checkpoints/demo
	rm -rf data/synthetic/clips_*
	test ! -d data || find data -mindepth 2 -maxdepth 2 -type d -name .clipstore -prune -exec rm -rf {} +
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
