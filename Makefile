# make demo : install, prepare the offline stdlib corpus, train a tiny LoopGPT on CPU, sample from it
# make test : install test requirements, run the test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev demo test bench

install:
	$(PIP) install -q -r requirements.txt

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

demo: install
	$(PYTHON) prepare.py stdlib
	$(PYTHON) train.py configs/tiny.py
	$(PYTHON) sample.py --out_dir=out-tiny --start="def " --num_samples=2 --max_new_tokens=300

test: install-dev
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) bench.py
