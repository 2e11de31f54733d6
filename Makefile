# Two commands do everything on a fresh machine: `make demo` and `make test`.
.PHONY: demo test bench

demo:
	@scripts/bootstrap.sh
	@.venv/bin/python examples/order_saga.py
	@echo
	@.venv/bin/python examples/explore_order_saga.py
	@echo
	@.venv/bin/python examples/durable_crash.py
	@echo
	@.venv/bin/python examples/payment_policies.py

test:
	@scripts/test.sh

bench:
	@scripts/bootstrap.sh
	@.venv/bin/python benchmarks/engine_bench.py
