PY ?= python3

.PHONY: setup test status bench bd-rewards bd-preview bd-close simulate

setup:            ## install the package and its test tools
	$(PY) -m pip install -e '.[test]'

test:             ## run the whole test suite
	$(PY) -m pytest -q

status:           ## balances and ledger size of this repo's exchange
	tx status

bench:            ## run the benchmarks (figures go to benchmarks/results/)
	$(PY) benchmarks/run_all.py

simulate:
	tx simulate

bd-rewards:
	tx-bd rewards

bd-preview:
	tx-bd preview-all

bd-close:
	tx-bd close $(ISSUE)
