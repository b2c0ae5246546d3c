# Everything a fresh machine needs, from the project's own files.
# `make test`: set up (venv, package, dev tools) and run lint, docs build and the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup sysdeps test lint docs pytest demo demo-tiny clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Debian packages: espeak-ng speaks SynthTalk's sentences (libespeak-ng gives phoneme timings).
sysdeps:
	@{ command -v espeak-ng >/dev/null 2>&1 && ldconfig -p | grep -q libespeak-ng; } || { \
		echo "installing Debian packages: espeak-ng"; \
		apt-get update -qq && apt-get install -y -qq espeak-ng libespeak-ng1 >/dev/null; }

setup: sysdeps $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"

lint: setup
	$(BIN)/ruff check src tests examples benchmarks

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site   # not --quiet: it hides the warnings --strict counts

pytest: setup
	$(BIN)/python -m pytest -q

test: lint docs pytest

# The main job (generation) on the embedded default: the trained demo model (SynthTalk) animates the bundled
# held-out portrait with the bundled speech, on CPU, no download; it prints where the mp4 is.
demo: setup
	$(BIN)/fantasytalking demo --overwrite

# The official-layout loading and generation path on tiny RANDOM weights (no download): a noise-like video.
demo-tiny: setup
	$(BIN)/python -m fantasytalking.testing make-tiny-weights outputs/tiny-weights --layout original
	$(BIN)/fantasytalking generate --weights outputs/tiny-weights \
		--image examples/assets/portrait.png --audio examples/assets/speech.wav \
		--output outputs/tiny.mp4 --size 128 --steps 10 --overwrite
	@echo "video: outputs/tiny.mp4 (settings: outputs/tiny.json). The weights are random: see README."

clean:
	rm -rf site .pytest_cache .ruff_cache
