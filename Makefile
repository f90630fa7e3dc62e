# The two set-up commands of the README: `make run` (the main job on an embedded default:
# a real search on the CPU with local Ray and a SQLite MLflow store) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-quick lint bench dashboard

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# each `make run` is a new search (a name taken by an earlier one needs --resume)
run: $(VENV)/.installed
	$(PY) -m mixmo_search.tune --space search_spaces/quickstart.yaml --gpus 0 \
		--name quickstart-$(shell date +%Y%m%d-%H%M%S)

test: $(VENV)/.installed
	$(PY) -m pytest

# the development loop: no real search, multi-node cluster, browser or long training
test-quick: $(VENV)/.installed
	$(PY) -m pytest -m "not slow and not cluster and not browser"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

# make dashboard PORT=8502: the dashboard on http://127.0.0.1:PORT (loopback only)
PORT ?= 8501
dashboard: $(VENV)/.installed
	$(VENV)/bin/streamlit run app/dashboard.py --server.address 127.0.0.1 --server.port $(PORT)
