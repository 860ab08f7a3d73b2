"""The suite's one conftest: the order and time limits `make mutate` gives each mutant's tests
(tests/mutation_order.py; it does nothing outside a mutmut run)."""

from tests.mutation_order import pytest_collection_modifyitems

__all__ = ["pytest_collection_modifyitems"]
