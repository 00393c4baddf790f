# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test test-fast bootstrap

run:
	scripts/bootstrap.sh run
	.venv/bin/python scripts/run_node.py

test:
	scripts/bootstrap.sh test
	scripts/test_services.sh
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-fast:
	.venv/bin/python -m pytest -m "not e2e" $(PYTEST_ARGS)
