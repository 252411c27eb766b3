# cartwise: the one task file. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
DEMO_EVENTS ?= 300000
DEMO_DAYS ?= 14
# The UCI Online Retail log ships with the project (data_sets/online_retail/README.md).
RETAIL ?= data_sets/online_retail/online_retail.csv.gz
# Sizes that train both models in minutes on 2 CPUs; `make train` runs full sizes.
DEMO_TRAIN_ARGS ?= --intent-max-steps 150 --ranker-list-sample 0.3 --ranker-epochs 4
# The demo runs on embedded defaults: no DATABASE_URL/REDIS_URL, everything under $(DATA).
EMBEDDED := env -u DATABASE_URL -u REDIS_URL CARTWISE_DATA_DIR=$(DATA) BENTOML_HOME=$(abspath $(DATA))/bentoml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv services lint format test demo bench bench-scale bench-spark clean serve train stop retrain loop

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## create the virtualenv and install cartwise with its pinned dependencies

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,load,spark]'
	touch $@

services:  ## make sure the local PostgreSQL and Redis answer (starts them when they are down)
	@bash .ci/services

lint: venv  ## ruff: lint and format check (make test runs it first)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv  ## ruff: apply the formatter and the safe lint fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: venv services lint  ## lint, then run the test suite against real PostgreSQL and Redis
	$(PY) -m pytest

demo: venv  ## run the whole job end to end on embedded defaults (no DATABASE_URL/REDIS_URL)
	$(EMBEDDED) $(PY) -m governance.db migrate
	# The simulated shop ends yesterday, so its features are fresh for the online store.
	$(EMBEDDED) $(PY) -m governance.simulate --out $(DATA)/sim --preset demo \
	  --events $(DEMO_EVENTS) --days $(DEMO_DAYS) \
	  --start $$(date -u -d "-$$(( $(DEMO_DAYS) + 1 )) days" +%F)
	$(EMBEDDED) $(PY) -m governance.ingest sim $(DATA)/sim > $(DATA)/ingest-sim.jsonl
	@if [ -f "$(RETAIL)" ]; then \
	  $(EMBEDDED) $(PY) -m governance.ingest online-retail "$(RETAIL)" > $(DATA)/ingest-retail.jsonl; \
	else echo "Online Retail file not found at $(RETAIL): skipped (set RETAIL=PATH)"; fi
	$(EMBEDDED) $(PY) -m governance.ingest summary
	@echo "quality reports: $(DATA)/reports/batch-*.md"
	$(EMBEDDED) $(PY) -m features.pipeline
	$(EMBEDDED) $(PY) -m features.feast_cli apply
	$(EMBEDDED) $(PY) -m features.feast_cli materialize-incremental
	$(EMBEDDED) $(PY) -m features.show --rows 2
	$(EMBEDDED) $(PY) -m features.consistency --sample 20
	$(EMBEDDED) $(PY) -m training.all --out-dir $(DATA)/runs --truth $(DATA)/sim/truth/impressions.parquet \
	  $(DEMO_TRAIN_ARGS)
	$(EMBEDDED) $(PY) -m serving.demo --sim $(DATA)/sim --start
	$(MAKE) --no-print-directory loop LOOP_REQUESTS=$(DEMO_LOOP_REQUESTS)

train: venv  ## train both models at full size on the demo's embedded stores (after make demo)
	$(EMBEDDED) $(PY) -m features.pipeline
	$(EMBEDDED) $(PY) -m features.feast_cli apply
	$(EMBEDDED) $(PY) -m training.all --out-dir $(DATA)/runs --truth $(DATA)/sim/truth/impressions.parquet

PORT ?= 3000
SERVICE_URL ?= http://127.0.0.1:$(PORT)
retrain: venv  ## features -> training set with served lists -> train -> gate -> register -> reload SERVICE_URL
	$(EMBEDDED) $(PY) -m training.retrain --service-url $(SERVICE_URL) --out-dir $(DATA)/runs

# Closed loop: a server with the ranker against random ordering, the simulator's users clicking
# by its truth; prints per-variant CTR with intervals against the oracle's.
LOOP_PORT ?= 3017
LOOP_REQUESTS ?= 600
DEMO_LOOP_REQUESTS ?= 300
LOOP_EXPERIMENT ?= {"name": "ranker-vs-random", "variants": [{"name": "ranker", "model": "cartwise-ranker:latest", "share": 0.5}, {"name": "random", "model": "random", "share": 0.5}]}
loop: venv  ## closed-loop simulation against a fresh server (after make demo)
	@$(EMBEDDED) CARTWISE_EXPERIMENT='$(LOOP_EXPERIMENT)' $(VENV)/bin/bentoml serve serving.service:Cartwise \
	  --host 127.0.0.1 --port $(LOOP_PORT) > $(DATA)/loop-serve.log 2>&1 & pid=$$!; \
	  $(EMBEDDED) $(PY) -m training.closed_loop --url http://127.0.0.1:$(LOOP_PORT) --sim $(DATA)/sim \
	    --requests $(LOOP_REQUESTS) --wait-ready 300 --json $(DATA)/closed-loop.json; rc=$$?; \
	  kill $$pid; wait $$pid; exit $$rc

serve: venv  ## serve the HTTP API on embedded defaults (models from the BentoML store); OpenAPI at /docs
	$(EMBEDDED) $(VENV)/bin/bentoml serve serving.service:Cartwise --port $(PORT)

bench: venv services  ## run the benchmarks, write benchmarks/results/latest.json
	$(PY) -m benchmarks

# Not part of bench or test: hours at the default 10M events (CARTWISE_BENCH_EVENTS).
bench-scale: venv services  ## the whole path at scale, seconds and peak RSS per stage: results/scale.json, scale.png
	nice -n 10 $(PY) -m benchmarks.bench_scale

# Not part of bench or test: the Spark path next to PostgreSQL (default 1M events).
bench-spark: venv services  ## Spark vs PostgreSQL pipeline and PIT, local[1] vs local[2]: results/spark.json
	nice -n 10 $(PY) -m benchmarks.bench_spark

stop:  ## stop the embedded PostgreSQL that make demo/serve/train leave running
	$(EMBEDDED) $(PY) -m governance.db stop

clean:  ## remove generated data (the embedded PostgreSQL in $(DATA)/pg stays: make stop)
	rm -rf $(DATA)/sim $(DATA)/reports
