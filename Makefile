# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the CPU wheel of torch, pinned in the same pip call as everything else
TORCH := torch==2.13.0
OPEN_CLIP_WHEEL := open_clip_torch==3.3.0
export RRNET_CACHE ?= $(CURDIR)/.cache/rrnet
BPE := $(RRNET_CACHE)/clip/bpe_simple_vocab_16e6.txt.gz
STAMP := $(VENV)/.installed

.PHONY: setup vocab demo test world-experiment clean

setup: $(STAMP) $(BPE)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[test,fid,serve]"
	touch $(STAMP)

# SD's CLIP BPE vocabulary ships inside the open_clip_torch wheel; take the file, not the package
# (installing open_clip would pull torchvision and a CUDA torch).
vocab: $(BPE)
$(BPE): | $(STAMP)
	$(BIN)/pip download --quiet --no-deps "$(OPEN_CLIP_WHEEL)" -d .cache/wheels
	$(BIN)/python -m rrnet.backbones.clip_vocab .cache/wheels/open_clip_torch-3.3.0-py3-none-any.whl

demo: setup
	$(BIN)/rrnet demo --output_dir outputs/demo

test: setup
	$(BIN)/python -m pytest

# The paper's tables in the mini world (CPU, resumable: run again to continue): two vertical and two
# horizontal train pairs; the unseen set is every held-out and control pair, one phrase per axis.
WORLD := outputs/world-experiment
WORLD_PAIRS := --pair "red circle" "blue square" y --pair "green triangle" "yellow diamond" y \
	--pair "red circle" "green triangle" x --pair "blue square" "purple cross" x
world-experiment: setup
	$(BIN)/rrnet world benchmark --output_dir $(WORLD)/data/benchmark $(WORLD_PAIRS) --relations above "left of" \
		--unseen_dir $(WORLD)/data/unseen --reference_dir $(WORLD)/data/reference --reference_images 1000
	$(BIN)/rrnet experiment --model src/rrnet/world/mini_sd --benchmark $(WORLD)/data/benchmark \
		--unseen $(WORLD)/data/unseen --transfer_from red_circle_above_blue_square --output_dir $(WORLD)/run \
		--alpha 0.2 0.4 0.6 1.0 1.2 --ablation_alpha 0.6 --num_images 50 \
		--batch_size 50 --fid_reference $(WORLD)/data/reference

clean:
	rm -rf $(VENV) .cache outputs
