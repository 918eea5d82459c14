# vidpipe: the two Quick start commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: demo test install system-deps player-deps lint bench bench-smoke
BENCHES := ladder pipeline first_playable analysis vision transcribe search upload service

## Install vidpipe into .venv and process the committed sample video.
demo: install
	$(VENV)/bin/vidpipe process samples/bigbuckbunny_720p_51.mp4

## Install everything (Python, Chromium, hls.js) and run lint, types, the whole suite
## and every bench in its smoke mode (tiny input, one round), so none can rot.
test: install system-deps player-deps lint
	$(PY) -m pytest
	$(MAKE) --no-print-directory bench-smoke

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-nodeps.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

## Debian's Chromium plays the ladder in the player test; espeak-ng speaks test clips.
system-deps:
	@command -v chromium >/dev/null && command -v espeak-ng >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium espeak-ng; }

## hls.js and playwright-core, pinned by package-lock.json (no browser download).
player-deps:
	cd tests/player && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
	cd tests/tus && npm ci --no-audit --no-fund --silent

lint: install
	$(VENV)/bin/ruff check vidpipe tests bench
	$(VENV)/bin/mypy

## Every bench at full size, one after another (see bench/README.md; about an hour).
bench: install
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py; done

## Every bench once on tiny input: what CI runs; each fails on a wrong result, never on speed.
bench-smoke: install
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py --smoke"; $(PY) bench/$$b.py --smoke; done
