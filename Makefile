# Two commands do everything on a fresh machine: `make demo` and `make test`.
.PHONY: demo test bench bench-durable

demo:
	@scripts/bootstrap.sh
	@.venv/bin/python examples/order_saga.py
	@echo
	@.venv/bin/python examples/explore_order_saga.py
	@echo
	@.venv/bin/python examples/durable_crash.py --keep .demo
	@echo
	@echo "The crash demo's store is kept in .demo/sagas.db; look at it in the operations console:"
	@echo "  .venv/bin/spakky-saga console --store .demo/sagas.db"
	@echo "  then open http://127.0.0.1:8000/ (docs/console.md; Ctrl-C stops it)"
	@echo
	@.venv/bin/python examples/payment_policies.py
	@echo
	@.venv/bin/python examples/payment_waits.py
	@echo
	@.venv/bin/python examples/refund_approval.py

test:
	@scripts/test.sh

bench:
	@scripts/bootstrap.sh
	@.venv/bin/python benchmarks/engine_bench.py

# The durable stores against their floors (bare commits) and issue 15's targets; needs the
# machine's PostgreSQL (or add ARGS=--no-postgres). A few minutes; run it on a quiet machine.
bench-durable:
	@scripts/bootstrap.sh
	@.venv/bin/python benchmarks/durable_bench.py $(ARGS)
