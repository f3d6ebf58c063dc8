# ConvLab. `make demo`: set up, prepare MNIST, train and evaluate the default experiment.
#          `make test`: set up, prepare MNIST, run the test suite (what CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Datasets: research/data/sources.py decides where they go ($TFDS_DATA_DIR, else the repo's
# git-ignored .data/tfds) and where their original files are ($TFDS_MANUAL_DIR, else
# ../shared/datasets when it exists: no download), for the Makefile and the experiments alike.
DATASETS ?= mnist
# glibc's allocator tuned for XLA:CPU (research/runtime.py; `python -m experiments.*` sets it
# itself): huge pages, no per-step page faults for the step's buffers.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295
# pytest-xdist workers for `make test` (compilation is single-threaded: 2 workers on 2 cores
# took 11 min 47 s where one took 17 min 45 s; 3 were no faster than 2 on 2 AMD cores, 19 min
# 8 s against 18 min 15 s, README).
TEST_WORKERS ?= 2
DEMO_CONFIG ?= configs/classification/mnist_cnn.py
DEMO_WORKDIR ?= runs/demo

.PHONY: setup data demo test test-all clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[prepare,test,export,sweeps]"
	touch $@

data: $(STAMP)
	$(PY) -m research.data.prepare $(DATASETS)

demo: data
	$(PY) -m experiments.classification --config=$(DEMO_CONFIG) --workdir=$(DEMO_WORKDIR)
	@echo "summary: $(DEMO_WORKDIR)/summary.json"; cat $(DEMO_WORKDIR)/summary.json

# The segmentation tests read real ISBI 2012 as well.
test test-all: DATASETS = mnist isbi2012_em

test: data
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS)

test-all: data
	$(PY) -m pytest -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) .data runs .pytest_cache
