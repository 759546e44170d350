PYTHON ?= python3

.PHONY: bench
bench:  ## speed + accuracy benchmark vs kingfisher and gitleaks (see bench/README.md)
	$(PYTHON) bench/run.py $(BENCH_ARGS)
