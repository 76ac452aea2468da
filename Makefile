# One-command set-up, tests and demo. Everything runs inside .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONHASHSEED := 0

.PHONY: setup kernel test test-all lint format demo check-results bench bench-targets gpu-check tables clean

setup: $(VENV)/.installed  ## create .venv with the right torch and the package (editable, dev + cluster extras)

$(VENV)/.installed: pyproject.toml scripts/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	PYTHON=$(PY) bash scripts/install_torch.sh
	$(PY) -m pip install --quiet -e ".[dev,cluster]"
	$(PY) -c "import torch, triton, hydra, wandb, datasets, torchmetrics; print('torch', torch.__version__, '| triton', triton.__version__, '| cuda', torch.cuda.is_available())"
	$(MAKE) --no-print-directory kernel
	touch $@

kernel:  ## build the compiled suRNN CPU kernel once per source version (build/torch_extensions/<name>-<key>/; ~80 s on 2 cores); without a compiler: a warning, the eager path runs
	$(PY) -c "from surnn.ops import compiled; print('compiled CPU kernel:', 'ready' if compiled.available() else 'unavailable (' + str(compiled._STATE['error']) + '): the eager cpu path runs')"

test: setup  ## the whole CPU test suite (Triton kernels under TRITON_INTERPRET=1)
	$(PY) -m pytest tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup  ## ListOps run sized for a 2-core CPU (about 4 min); summary in results/demo/
	$(PY) run.py experiment=demo_listops

check-results: setup  ## rerun the committed results/demo runs and compare every outcome (~40 min on 2 cores; not in CI)
	$(PY) scripts/check_results.py $(RESULTS)

bench: setup
	$(PY) scripts/bench_surnn.py

# The compiled kernel's CPU targets as committed (setting:repetitions), one setting per file.
TARGETS ?= big:15 small:30 padded:15 stream:80 crossover:3 surrogate:15
BENCH_OUT ?= results/bench
bench-targets: setup  ## rerun the committed CPU targets into $(BENCH_OUT)/surnn_cpu_targets_<setting>.* (~27 min on 2 cores; run nothing else meanwhile)
	for t in $(TARGETS); do \
	  $(PY) scripts/bench_surnn.py --suite targets --impl compiled --threads 2 \
	    --settings $${t%%:*} --reps $${t##*:} --out $(BENCH_OUT)/surnn_cpu_targets_$${t%%:*}.json \
	    --label 'quiet 2-core VM (nothing else running; load average recorded)' || exit 1; \
	done

gpu-check:  ## Triton kernels on CUDA + timings vs cuDNN (no setup needed where python3 has CUDA torch)
	bash scripts/gpu_check.sh

tables: setup
	$(PY) scripts/make_tables.py outputs/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
