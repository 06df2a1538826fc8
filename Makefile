# Two commands do everything on a fresh machine with Python 3 and pip:
#   make demo   - virtual environment, package, generated layouts, the Phase 1.4 demo (9 runs) and its report
#   make test   - the test suite (installs headless Chromium for the report's browser test where apt-get exists)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU build here (a wheel on this disk); clusters get their CUDA build from environment.yml.
TORCH  ?= torch==2.13.0
DEMO_DATA ?= data/demo_layouts

.PHONY: demo test venv browser clean bench mutate mutate-runs soak

$(BIN)/imginav: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

venv: $(BIN)/imginav

$(DEMO_DATA)/manifest.csv: | $(BIN)/imginav
	$(BIN)/imginav make-layouts $(DEMO_DATA) --n 320 --size 64 --seed 0

demo: $(BIN)/imginav $(DEMO_DATA)/manifest.csv
	$(BIN)/imginav run params/phase1_4_demo.yaml --jobs 2

# Chromium + chromedriver for the report's browser test (Debian packages; needs root, as in CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	    echo "warning: could not install chromium; the browser test will be skipped"; }

# One torch thread per test process: the tests train tiny models, where a second thread only adds contention
# (and the subprocess-vs-in-process comparisons then run the same kernels).
test: $(BIN)/imginav browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: $(BIN)/imginav
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/report_bench.py
	$(BIN)/python bench/prepare_bench.py

# Mutation testing (not in CI; 25 min measured on 2 idle cores, 2,317 mutants): the modules and the tests it runs are [tool.mutmut] in
# pyproject.toml. MUTANTS narrows it to functions (mutmut's names, globs allowed): every function of the loss,
# metric, boundary, atomic-write, palette, statistics and step modules, and the decision's rules. Left out: the
# decision's sentences and its orchestration (decide, design_words, _paragraph, _aux_words, _head_words) and the
# informative boundary row, which the report tests check. `make mutate MUTANTS=` mutates every function there.
DECISION_RULES = primary_metric call_for stability_call aux_helps pick preference_order _leader _compare _stability_tests \
	_heads_criteria _mse_criteria _stab_criteria _gaps _scored _same_heads_call _sureness _alpha_at
MUTANTS ?= imginav_lib.model.losses.* imginav_lib.model.metrics.* imginav_lib.model.boundary.* imginav_lib.files.* imginav_lib.palette.* \
	imginav_lib.analysis.stats.* imginav_lib.analysis.ablation.* imginav_lib.data.dataset.x_rgb_to_classes_torch* \
	$(foreach f,$(DECISION_RULES),imginav_lib.analysis.decision.x_$(f)__mutmut_*)
mutate: $(BIN)/imginav
	rm -rf mutants
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2 $(foreach m,$(MUTANTS),'$(m)')
	@echo "survivors (mutmut show NAME for the diff):"
	@$(BIN)/mutmut results | grep -v "not checked" || true

# Mutation testing of the cluster and run-folder layers (mutate-runs.toml: the modules and the tests). mutmut reads
# its settings from ./pyproject.toml only, so it runs in build/mutate-runs/, where that file is mutate-runs.toml and
# the code, tests and data are links to this checkout. MUTANTS_RUNS narrows it (mutmut's names, globs allowed).
MUTANTS_RUNS ?=
mutate-runs: $(BIN)/imginav
	rm -rf build/mutate-runs && mkdir -p build/mutate-runs
	for d in imginav_lib tests params notebooks docs hpc; do ln -s ../../$$d build/mutate-runs/$$d; done
	cp mutate-runs.toml build/mutate-runs/pyproject.toml
	cd build/mutate-runs && OMP_NUM_THREADS=1 IMGINAV_REAL_LAYOUTS=$(abspath ..)/shared/real_layouts ../../$(BIN)/mutmut run --max-children 2 $(foreach m,$(MUTANTS_RUNS),'$(m)')
	@echo "survivors (cd build/mutate-runs && mutmut show NAME for the diff):"
	@cd build/mutate-runs && ../../$(BIN)/mutmut results | grep -v "not checked" || true

# kill -9 a training process 20 times over a run, resuming each time; the result must equal an uninterrupted run
soak: $(BIN)/imginav
	$(BIN)/python bench/crash_soak.py --kills 20

clean:
	rm -rf runs .cache data reports/*.html
