# `make demo` and `make test` each create .venv when missing and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench bench-results reports clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,demo,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxtransfer rank --layers stage6 --out jaxtransfer-demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# `make bench` writes to jaxtransfer-output/ (git-ignored); `make bench-results` and `make reports`
# overwrite the committed results on purpose.
bench: $(STAMP)
	$(BIN)/python bench/bench_speed.py --out jaxtransfer-output/bench/speed.json

bench-results: $(STAMP)
	$(BIN)/python bench/bench_speed.py --out bench/results/speed.json

reports: $(STAMP)
	$(BIN)/jaxtransfer reproduce keypoints --out bench/results/quality --no-progress
	$(BIN)/jaxtransfer reproduce attributes --out bench/results/quality --no-progress

clean:
	rm -rf $(VENV) build dist *.egg-info
