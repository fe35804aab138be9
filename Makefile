# mmctr-kit: `make demo` (set up + sample data + Task 1 & 2 + submission zip), `make test`.
# Point at the real data with DATA=/path/to/data (the folder holding MicroLens_1M_x1/).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      ?= $(VENV)/bin/python
DATA    ?= data/sample
TRACK   ?= task1_2
RUNS    ?= runs/$(TRACK)
T1_CONFIG ?= task1/configs/default.yaml
T2_CONFIG ?= task2/configs/transformer_dcn.yaml
DEMO_T2_CONFIG ?= task2/configs/transformer_dcn_small.yaml
DIN_CONFIG ?= task2/configs/din_baseline.yaml
OFFICIAL_ITEM_INFO = $(DATA)/MicroLens_1M_x1/item_info.parquet
SAMPLE_ARGS ?=
IMAGE   ?= mmctr-kit:latest

.PHONY: help setup sample validate task1 task1-eval task2 submit track1 track2 track12 demo test \
        bench bench-task1 bench-task2 notebook lint-docker docker-build docker-smoke clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create the venv with the pinned deps (requirements.lock)
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(DATA)/MicroLens_1M_x1/train.parquet: | setup
	$(PY) -m mmctr sample --out $(DATA) $(SAMPLE_ARGS)

sample: $(DATA)/MicroLens_1M_x1/train.parquet  ## write the MicroLens-shaped sample data (DATA=...)

validate: setup  ## check DATA against the data contract
	$(PY) -m mmctr validate --data-dir $(DATA)

task1: setup  ## Task 1: build item_info.parquet with new 128-D embeddings into $(RUNS)/task1
	$(PY) -m task1 build --data-dir $(DATA) --config $(T1_CONFIG) --out $(RUNS)/task1

task1-eval: setup  ## fixed baseline DIN on the new item_info vs the provided one
	$(PY) -m task1 evaluate --data-dir $(DATA) --item-info $(RUNS)/task1/item_info.parquet --out $(RUNS)/task1-eval

task2: setup  ## Task 2: train the CTR model on $(RUNS)/task1's item_info (or the provided one) and predict test
	$(PY) -m task2 train --data-dir $(DATA) --config $(T2_CONFIG) --out $(RUNS)/task2 \
	  --item-info $$( [ -f $(RUNS)/task1/item_info.parquet ] && echo $(RUNS)/task1/item_info.parquet || echo $(OFFICIAL_ITEM_INFO) )
	$(PY) -m task2 predict --run $(RUNS)/task2 --data-dir $(DATA) --track $(TRACK)

submit: setup  ## check the rules for TRACK and pack $(RUNS)/submission.zip
	$(PY) -m submission check --track $(TRACK) --runs $(RUNS) --data-dir $(DATA)
	$(PY) -m submission pack --track $(TRACK) --runs $(RUNS) --data-dir $(DATA) --out $(RUNS)/submission.zip

track1:  ## Task 1 only: new embeddings + the fixed baseline DIN (tuned by `task1 tune` into $(RUNS)/task1-tune when there)
	$(MAKE) task1 task2 submit TRACK=task1 T2_CONFIG='$$(or $$(wildcard $$(RUNS)/task1-tune/best_din.yaml),$(DIN_CONFIG))'

track2:  ## Task 2 only: provided embeddings + our CTR model
	$(MAKE) task2 submit TRACK=task2

track12:  ## Task 1 & 2: new embeddings + our CTR model
	$(MAKE) task1 task2 submit TRACK=task1_2

demo: sample  ## fresh machine: set up, make sample data, run Task 1 & 2, pack the zip
	$(MAKE) track12 DATA=$(DATA) T2_CONFIG=$(DEMO_T2_CONFIG)
	@echo "demo done: $(RUNS)/submission.zip"

test: setup  ## run the test suite
	$(PY) -m pytest -q

bench-task1: setup  ## task1 throughput (items/s, images/s) and AUC vs random/text-only
	$(PY) bench/bench_task1.py --data-dir $(DATA)

bench-task2: setup  ## task2 samples/s and valid AUC vs the baseline DIN and the oracle
	$(PY) bench/bench_task2.py --data-dir $(DATA)

bench: bench-task1 bench-task2

notebook: setup  ## export a self-contained notebook that runs TRACK end to end
	$(PY) -m submission notebook --track $(TRACK) --out $(RUNS)/mmctr_$(TRACK).ipynb

lint-docker: setup  ## hadolint the Dockerfile
	$(VENV)/bin/hadolint docker/Dockerfile

docker-build:  ## build the CUDA image (docker or podman)
	docker/build.sh $(IMAGE)

docker-smoke:  ## build against a local base and run the demo inside it on CPU (podman)
	docker/smoke.sh

clean:  ## remove runs and sample data (not the venv)
	rm -rf runs data/sample
