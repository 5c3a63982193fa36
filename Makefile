# make demo : install, prepare the offline stdlib corpus, train a tiny LoopGPT on CPU, sample from it
# make test : install test requirements, run the test suite
# make reproduce : train the cheapest run of a committed study again and compare it with its record (python -m experiments.reproduce)
# make gpu-check : on a CUDA machine, check bf16 + compile training, the KV cache, DDP and bench (pass/fail table)
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev demo test bench gpu-check reproduce

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
	$(PYTHON) -m tools.bench

gpu-check:
	$(PYTHON) -m tools.gpu_check

reproduce:
	$(PYTHON) -m experiments.reproduce
