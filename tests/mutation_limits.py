"""The time limit `make mutate` gives each test of a mutant (docs/TESTING.md); nothing here
acts in other runs.

mutmut runs each mutant against the tests that called the mutated function, fastest first by
their clean time, and stops at the first failure (`-x`). Here each of those tests gets a
pytest-timeout limit of ten times its clean call time plus 10 s, on the call only
(`func_only`: mutmut's clean time leaves out set-up and teardown, which start servers): a
mutant that makes one test hang fails that test there, with its fixtures torn down, instead of
holding the whole mutant until mutmut's own limit kills the process and orphans what the test
started.

mutmut names the mutant under test in MUTANT_UNDER_TEST ("stats", "fail", "list_all_tests" or
"" for its own runs) and keeps the clean times in mutmut-stats.json in the working directory
it runs pytest in (mutants/).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest

STATS = Path("mutmut-stats.json")
LIMIT_FACTOR = 10.0
LIMIT_FLOOR = 10.0


def mutant_under_test() -> str | None:
    """The mutant mutmut is running now, None outside a mutant's run."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    return name if "__mutmut_" in name else None


@cache
def clean_times(path: Path = STATS) -> Mapping[str, float]:
    """Test node id -> its clean run time, from mutmut's stats ({} when there are none)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    times = data.get("duration_by_test", {}) if isinstance(data, dict) else {}
    return {str(k): float(v) for k, v in times.items() if isinstance(v, int | float)}


def time_limit(clean: float | None) -> float | None:
    """The per-test limit under a mutant; None (the suite's own) when its time is unknown."""
    if clean is None:
        return None
    return LIMIT_FACTOR * clean + LIMIT_FLOOR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if mutant_under_test() is None:
        return
    times = clean_times()
    if not times:
        return
    for item in items:
        limit = time_limit(times.get(item.nodeid))
        if limit is not None:
            item.add_marker(pytest.mark.timeout(limit, func_only=True))
