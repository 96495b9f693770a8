VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test fuzz demo docs docs-serve bench arm64-check arm64-train-check install-check interop-check pi-cost clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[train,camera,dev,beam,docs,mqtt]'
	touch $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

# The property tests at length: 25 times the examples of `make test`, at random; a failure is kept in
# .hypothesis/ and replayed first next time (see docs/robustness.md).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz nice -n 10 $(PYTHON) -m pytest -q tests/test_properties.py --hypothesis-show-statistics

demo: $(STAMP)
	$(PYTHON) scripts/demo.py

# The documentation site into site/; --strict fails on a broken link or a page missing from the nav.
# Not --quiet: it silences the warnings --strict counts. NO_MKDOCS_2_WARNING: Material's banner about MkDocs' future, printed on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict

arm64-check: $(STAMP)
	bash scripts/arm64_check.sh $(ARM64_CHECK_ARGS)

# Train and convert --quantize under qemu-aarch64 in make arm64-check's bookworm root; compare with x86.
arm64-train-check: $(STAMP)
	bash scripts/arm64_train_check.sh $(ARM64_TRAIN_CHECK_ARGS)

# pip's resolver, dry run, for every platform and Python docs/platforms.md claims (needs PyPI).
install-check: $(STAMP)
	$(PYTHON) scripts/install_check.py $(INSTALL_CHECK_ARGS)

# MediaPipe Tasks on the demo's converted models (run `make demo` first); MediaPipe gets its own venv.
interop-check: $(STAMP)
	bash scripts/interop_check.sh $(INTEROP_CHECK_ARGS)

# aarch64 instructions per inference on a Pi 4 and Pi 5 under qemu (run `make arm64-check` and `make demo` first).
pi-cost: $(STAMP)
	bash scripts/pi_cost.sh $(PI_COST_ARGS)

clean:
	rm -rf $(VENV) demo_output site
