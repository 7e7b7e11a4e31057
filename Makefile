# plugvm: `make demo` and `make test` are the two commands a new user runs (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every in-tree distribution besides the core, installed editable: each plugin, the
# third-party examples (examples/*/, plugins outside plugins/) and remote.
DISTS := $(dir $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml remote/pyproject.toml))

.PHONY: deps install guest test demo bench soak clean

# Debian packages the lab, the images and the tests need (installs only what is missing).
deps:
	@tools/install-deps

# The plugins' flat layout would get setuptools' import-hook finders, which every Python
# start pays (plugvm's, the tests', L1's under TCG): ~20 ms here, ~0.8 s in the lab. An
# ordinary install costs nothing there, and compat mode only puts each folder on sys.path.
# Where a setuptools no longer has compat mode, the default one is used.
$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml remote/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --config-settings editable_mode=compat $(foreach d,$(DISTS),-e $(d)) \
		|| $(BIN)/pip install --quiet $(foreach d,$(DISTS),-e $(d))
	touch $@

# Bytecode for every in-tree module, each time (a second): editable installs leave none,
# and with PYTHONDONTWRITEBYTECODE set (as on our machines and in the lab's L1) Python
# would compile each module again at every start (about a quarter of plugvm's start-up).
install: $(STAMP)
	$(BIN)/python -m compileall -q core plugins remote examples >/dev/null

guest: install
	$(BIN)/plugvm-guest-image

test: deps install guest
	$(BIN)/pytest tests/unit tests/host tests/conformance examples/plugvm-virtio-pmem/tests
	$(BIN)/pytest tests/lab tests/e2e

demo: deps install guest
	$(BIN)/plugvm-lab -- $(BIN)/python demo/demo.py

bench: deps install guest
	$(BIN)/python bench/boot.py
	$(BIN)/python bench/blk.py
	$(BIN)/python bench/disk.py --runs 3
	$(BIN)/python bench/hotplug.py --runs 10
	$(BIN)/python bench/fs.py --runs 2
	$(BIN)/python bench/vsock.py --runs 2

# The lab soak (bench/soak.py): guest runs in a row, counting L1 freezes: boots under
# plugvm and QEMU, then the e2e tests in a loop, each test a run.
SOAK_RUNS ?= 100
SOAK_E2E_RUNS ?= 40
soak: deps install guest
	$(BIN)/python bench/soak.py --runs $(SOAK_RUNS)
	$(BIN)/python bench/soak.py --workload e2e --runs $(SOAK_E2E_RUNS)

clean:
	rm -rf build $(VENV)
