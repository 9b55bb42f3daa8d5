# Common chains. `make demo` sets up and runs the pipeline on the default real data (fetched);
# `make test` sets up and runs the tests. Both create the virtualenv on first use.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
REREC   := $(BIN)/rerec
WORKDIR ?= workdir
export REREC_WORKDIR := $(WORKDIR)
# The demo evaluates 24 test queries (the same seeded sample for every run); answers end at
# their box, 192 new tokens at most (the sft's lookup answers run to ~120). In batches of 16 (the
# default): one batch of 24 took 69.6 s against 57.9 s for the demo's sft.
DEMO_EVAL := --limit 24 --max-new-tokens 192 --quiet

.PHONY: demo test test-lowest install lint fetch lock clean-workdir help experiment

help:
	@echo "make demo    set up, fetch real data + SmolLM2-135M, run every stage (CPU)"
	@echo "make test    set up and run the test suite (no network needed)"
	@echo "make test-lowest  the suite again on transformers 5.17, the lowest supported (fetches it)"
	@echo "make experiment  base/sft/sft->grpo/sft->rerec + ablations on 500 test queries (hours, resumable)"
	@echo "make lint    ruff check + format check"
	@echo "make lock    regenerate constraints/cpu.txt from the current virtualenv"

$(BIN)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints/cpu.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

fetch: install
	$(REREC) fetch all

demo: install
	$(REREC) fetch all
	$(REREC) build-graph
	$(REREC) build-graph --source book-crossing --k-core 5
	$(REREC) pretrain-cf --quiet
	$(REREC) make-queries
	$(REREC) make-queries --check queries
	$(REREC) make-queries --graph graph-books
	$(REREC) sft --steps 48 --batch-size 4 --lr 5e-4 --candidate-facts index --max-length 2304
	$(REREC) train --model sft --steps 4 --prompts-per-step 1 -G 4 --max-completion-length 192
	$(REREC) eval --model smollm2-135m --candidate-facts index --named-facts $(DEMO_EVAL)
	$(REREC) eval --policy sft $(DEMO_EVAL)
	$(REREC) eval $(DEMO_EVAL)
	for b in random popular lightgcn attribute; do $(REREC) eval --baseline $$b --limit 24 || exit 1; done
	$(REREC) report eval-policy eval-sft eval-base eval-random eval-popular eval-lightgcn eval-attribute
	$(REREC) recommend "a comedy directed by Woody Allen" --max-new-tokens 192
	$(REREC) artifacts list

# The paper's comparison at our scale (configs/experiment/smollm2-cpu.yaml; the first run,
# with compact prompts, is smollm2-cpu-compact.yaml). Its own workdir, ~/rerec-runs/<the
# config's name> unless EXPERIMENT_WORKDIR says otherwise, outside the checkout, so it survives
# a fresh checkout and resumes where it stopped.
EXPERIMENT_CONFIG ?= configs/experiment/smollm2-cpu.yaml
EXPERIMENT_WORKDIR ?=
experiment: install
	REREC_WORKDIR=$(EXPERIMENT_WORKDIR) $(BIN)/python benchmarks/experiment.py --config $(EXPERIMENT_CONFIG)

test: install
	$(BIN)/python -m pytest -q

# The lowest transformers rerec supports (5.17, the one the `gpu` extra's vLLM needs) and the
# hub release it takes, laid over the virtualenv: the suite on that end of the range too.
LOWEST := $(VENV)-transformers-5.17
$(LOWEST)/.installed: $(BIN)/.installed
	rm -rf $(LOWEST)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--target $(LOWEST) transformers==5.17.0 huggingface_hub==1.33.0 httpx==0.28.1 httpcore==1.0.9
	touch $@

test-lowest: $(LOWEST)/.installed
	PYTHONPATH=$(LOWEST) $(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lock: install
	{ sed -n '1,2p' constraints/cpu.txt; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints/cpu.txt.new
	mv constraints/cpu.txt.new constraints/cpu.txt

clean-workdir:
	find $(WORKDIR) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
