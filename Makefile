# make demo: set up and run the offline demo audit.  make test: set up and run every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := build/.system-packages

.PHONY: demo test setup system clean

setup: $(STAMP)

# System packages: WeasyPrint's pango/harfbuzz/fontconfig (fc-list checks the report's glyph coverage), fonts for
# names in any script (DejaVu: Latin, Greek, Cyrillic, Arabic, Hebrew; Noto CJK: Chinese, Japanese, Korean), Chromium
# and poppler for the report tests. Re-checked when this file changes, so a new package reaches existing checkouts.
$(SYSSTAMP): Makefile
	@mkdir -p build
	@need=""; \
	for pkg in libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libfontconfig1 fontconfig fonts-dejavu-core fonts-noto-cjk chromium poppler-utils; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || need="$$need $$pkg"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing system packages:$$need"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$need; \
	fi
	@touch $@

$(STAMP): pyproject.toml requirements.txt | $(SYSSTAMP)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

demo: $(STAMP)
	$(PY) examples/credit/train.py
	$(VENV)/bin/amulet-audit examples/credit/model.pt --policy eu_ai_act --out build/demo --profile quick --exit-zero

# Tests run in one process per core (pytest-xdist), a test file's tests in the same process (they share fixtures).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

clean:
	rm -rf build dist
