# calipers — `make demo` runs the main job, `make test` the CI suite. Both create .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed before the package: on CPU machines pip takes the local CPU wheel of exactly this
# version; a bare range would pull a multi-GB CUDA build. GPU users: make TORCH=torch.
TORCH  ?= torch==2.13.0

.PHONY: venv demo demo-quick test validate validate-uci validate-seg test-slurm test-container bench lint clean

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: venv
	$(BIN)/calipers demo --out runs/demo

demo-quick: venv
	$(BIN)/calipers demo --quick --out runs/demo-quick

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

validate: venv
	$(BIN)/python -m pip install -q -e '.[slurm]'
	$(BIN)/python -m pytest -q -s -m slow $(filter-out validate/test_uci.py,$(wildcard validate/*.py))

# Gal & Ghahramani's UCI table (2018 grid-search protocol, 4000 epochs, T = 10,000); see
# docs/uci.md. Narrow it with CALIPERS_UCI_DATASETS=yacht,energy or CALIPERS_UCI_EPOCHS=400.
validate-uci: venv
	$(BIN)/python -m pytest -q -m slow validate/test_uci.py

# A one-node SLURM cluster on localhost (root; installs slurm-wlm and munge with apt-get when
# missing): cv and permute through --executor slurm equal the serial results. Also in validate.
test-slurm: venv
	$(BIN)/python -m pip install -q -e '.[slurm]'
	PYTHON=$(BIN)/python tests/slurm/run_slurm_test.sh

# Hippocampus (200 volumes, 5-fold CV, CPU recipe of examples/hippocampus.toml): 83 min on
# 2 cores, one fold per core (measured; Dice 0.875 / 0.860, below the 0.88 target, so the test
# fails; docs/segmentation.md). CALIPERS_SEG_RUN_DIR=runs/validate keeps the run (resumable).
validate-seg: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
	CALIPERS_SEG_EXECUTOR=$${CALIPERS_SEG_EXECUTOR:-local:$$(nproc)} \
		$(BIN)/python -m pytest -q -s -m slow \
		validate/test_segmentation.py -k hippocampus

# docker/Dockerfile built with podman on a local debootstrapped Debian base (no registry) and
# run on generated NIfTI volumes: minutes; needs root, podman, runc and debootstrap. Also part of
# `make validate` (validate/test_container.py). See docs/segmentation.md, section 3.
test-container:
	PY=$(BIN)/python bash docker/test_container.sh

bench: venv
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
