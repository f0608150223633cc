# pys3fs developer commands. `make demo` and `make test` work on a fresh Debian machine.
PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=

.PHONY: install setup demo demo-stop test test-ceph lint format clean

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

lint: setup
	.venv/bin/ruff check pys3fs tests
	.venv/bin/ruff format --check pys3fs tests

format:
	.venv/bin/ruff format pys3fs tests
	.venv/bin/ruff check --fix pys3fs tests

clean: demo-stop
	rm -rf .venv .demo build *.egg-info
