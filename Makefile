# pys3fs developer commands. `make demo` and `make test` work on a fresh Debian machine.
PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install setup demo demo-stop test test-ceph bench bench-peers lint format clean

setup:
	scripts/setup.sh

# Put `pys3fs` on the PATH that mount(8) and systemd use (needs root).
install: setup
	ln -sf "$(CURDIR)/.venv/bin/pys3fs" /usr/local/bin/pys3fs
	@echo "installed /usr/local/bin/pys3fs"

demo:
	scripts/demo.sh

demo-stop:
	scripts/demo-stop.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The same tests against Ceph RGW, a real S3 gateway (scripts/ceph-rgw.sh installs it).
test-ceph: setup
	$(PYTHON) -m pytest --s3-server=ceph $(PYTEST_ARGS)

# Benchmark on a throw-away Ceph RGW (needs root): raw boto3 vs pys3fs through a real mount.
# `make bench-peers` adds s3fs-fuse and rclone mount and writes bench/results.md and .png.
# BENCH_ARGS=--quick runs small sizes (results-quick.* then).
bench: setup
	$(PYTHON) -m pip install -q -e '.[bench]'
	$(PYTHON) -m bench $(BENCH_ARGS)

bench-peers: setup
	$(PYTHON) -m pip install -q -e '.[bench]'
	$(PYTHON) -m bench --peers --write-results $(BENCH_ARGS)

lint: setup
	.venv/bin/ruff check pys3fs tests bench
	.venv/bin/ruff format --check pys3fs tests bench

format:
	.venv/bin/ruff format pys3fs tests bench
	.venv/bin/ruff check --fix pys3fs tests bench

clean: demo-stop
	rm -rf .venv .demo build *.egg-info
