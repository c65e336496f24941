# Every target installs what it needs first (scripts/setup.sh is idempotent).
PY := .venv/bin/python
SETUP := bash scripts/setup.sh

.PHONY: setup test demo bench fuzz compare test-ipvs install uninstall clean

setup:
	@$(SETUP)

test: setup
	$(PY) -m pytest tests --durations=15

demo: setup
	.venv/bin/xdplb lab demo

bench: setup
	.venv/bin/xdplb bench

# The long runs: 10^6 fuzzed frames, then the kill -9 tests with 10x the
# sampled write points and outside kills of `make test`.
fuzz: setup
	$(PY) -m tests.fuzz --frames 1000000
	XDPLB_CRASH_SCALE=10 $(PY) -m pytest -q -s tests/test_crash.py

# Kernel IPVS and xdplb side by side (seed-000 demo, then the benchmark's fwd and cps
# parts): here if this kernel has IPVS, else Debian 12's kernel under qemu.
compare: setup
	.venv/bin/xdplb lab compare

# Opt-in: the qemu comparison as a test (about 7 minutes without KVM).
test-ipvs: setup
	XDPLB_TEST_IPVS=1 $(PY) -m pytest -s -k qemu tests/test_vagrant.py

# xdplb as a system tool: /opt/xdplb, /usr/local/sbin, systemd units (scripts/install.sh).
install: setup
	bash scripts/install.sh install

uninstall:
	bash scripts/install.sh uninstall

clean:
	rm -rf .venv .pytest_cache
