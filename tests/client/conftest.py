from tests.backend.conftest import backend, loop, make_backend  # noqa: F401  (the same fixtures)
