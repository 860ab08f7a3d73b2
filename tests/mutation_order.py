"""How `make mutate` runs a mutant's tests (docs/TESTING.md); nothing here acts in other runs.

mutmut runs each mutant against the tests that called the mutated function, in no set order,
and stops at the first failure (`-x`). Two things make that cost what it must and no more:

- order: the tests run fastest first, by their clean time in mutmut's stats, kept together by
  file (so a module's fixtures are set up once). A mutant that one fast test catches is then
  killed in a fraction of a second instead of after every slow test that happened to come first;
  a mutant that survives runs every test either way.
- a per-test time limit, ten times the test's clean time plus 10 s (mutmut's own rule for a
  whole mutant, applied to each test): a mutant that makes one test hang fails that test
  there, with its fixtures torn down (no orphaned `weed mini` or daemon left running), instead
  of holding the whole mutant until mutmut's limit kills the process.

mutmut names the mutant under test in MUTANT_UNDER_TEST ("stats", "fail" and
"list_all_tests" for its own runs) and keeps the clean times in mutmut-stats.json in the
working directory it runs pytest in (mutants/).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
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


def fastest_first(nodeids: Iterable[str], times: Mapping[str, float]) -> list[str]:
    """`nodeids` by clean time, fastest first, each file's tests together: files by their
    fastest test, tests within a file by their own time. Unknown times go last, in the order
    given (a test new since the stats has no time yet)."""
    known = max(times.values(), default=0.0) + 1.0

    def time_of(nodeid: str) -> float:
        return times.get(nodeid, known)

    order = list(nodeids)
    files: dict[str, float] = {}
    for nodeid in order:
        name = nodeid.split("::", 1)[0]
        files[name] = min(files.get(name, known), time_of(nodeid))
    position = {nodeid: i for i, nodeid in enumerate(order)}
    return sorted(
        order,
        key=lambda n: (files[n.split("::", 1)[0]], n.split("::", 1)[0], time_of(n), position[n]),
    )


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
    by_id = {item.nodeid: item for item in items}
    items[:] = [by_id[nodeid] for nodeid in fastest_first(by_id, times)]
    for item in items:
        limit = time_limit(times.get(item.nodeid))
        if limit is not None:
            item.add_marker(pytest.mark.timeout(limit))
