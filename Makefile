# heatrig: `make run` runs the main job on embedded defaults, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := mosquitto mosquitto-clients mbpoll socat influxdb victoria-metrics chromium chromium-driver gcc libmodbus-dev

.PHONY: run test lint bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A leak scenario served live (embedded MQTT broker, Modbus on 127.0.0.1:5020) with the
# reference controller and leak detector at 60x real time; prints verdicts and the report.
run: $(STAMP)
	$(BIN)/heatrig run scenarios/cdu-leak.yaml --out runs/cdu-leak

# Installs the real servers the integration tests start and the clients the README tour
# uses (Debian packages), when missing.
services:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Style (ruff), types (mypy: strict for twin/) and the architecture's import rules
# (import-linter contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: $(STAMP) services lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
