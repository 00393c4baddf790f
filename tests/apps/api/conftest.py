from tests.apps.web.conftest import locked, make_batch, step_log  # noqa: F401
