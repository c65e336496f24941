# Every target installs what it needs first (scripts/setup.sh is idempotent).
PY := .venv/bin/python
SETUP := bash scripts/setup.sh

.PHONY: setup test demo bench fuzz clean

setup:
	@$(SETUP)

test: setup
	$(PY) -m pytest tests

demo: setup
	.venv/bin/xdplb lab demo

bench: setup
	.venv/bin/xdplb bench

fuzz: setup
	$(PY) -m xdplb.fuzz --frames 1000000

clean:
	rm -rf .venv .pytest_cache
