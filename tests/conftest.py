"""The per-test time limits `make mutate` gives each mutant's tests (tests/mutation_limits.py;
they do nothing outside a mutmut run)."""

from tests.mutation_limits import pytest_collection_modifyitems

__all__ = ["pytest_collection_modifyitems"]
