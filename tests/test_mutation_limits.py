"""tests/mutation_limits.py: the time limit `make mutate` gives each test of a mutant, on the
test's call only, and that it leaves every other run alone (real pytest subprocesses, a real
stats file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation_limits import (
    LIMIT_FACTOR,
    LIMIT_FLOOR,
    clean_times,
    mutant_under_test,
    time_limit,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_limit_is_ten_times_the_clean_time_plus_ten_seconds() -> None:
    assert time_limit(None) is None
    assert time_limit(0.0) == LIMIT_FLOOR
    assert time_limit(2.5) == pytest.approx(LIMIT_FACTOR * 2.5 + LIMIT_FLOOR)
    assert (LIMIT_FACTOR, LIMIT_FLOOR) == (10.0, 10.0)  # mutmut's own rule, per test


def test_only_a_mutants_run_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for own in ("stats", "fail", "list_all_tests", ""):
        monkeypatch.setenv("MUTANT_UNDER_TEST", own)
        assert mutant_under_test() is None
    monkeypatch.delenv("MUTANT_UNDER_TEST")
    assert mutant_under_test() is None
    name = "archiver.store.verify.x_hash_at__mutmut_3"
    monkeypatch.setenv("MUTANT_UNDER_TEST", name)
    assert mutant_under_test() == name


def test_stats_that_are_missing_or_not_json_give_no_times(tmp_path: Path) -> None:
    assert clean_times(tmp_path / "absent.json") == {}
    (tmp_path / "bad.json").write_text("{not json", "utf-8")
    assert clean_times(tmp_path / "bad.json") == {}
    (tmp_path / "good.json").write_text(
        json.dumps({"duration_by_test": {"t.py::a": 1.5, "t.py::b": "x"}}), "utf-8"
    )
    assert clean_times(tmp_path / "good.json") == {"t.py::a": 1.5}


SAMPLE = """
import os
import time

import pytest

PAST_LIMIT = 10.5  # each sleep outlasts the 10 s limit of a test whose clean time is 0


@pytest.fixture
def slow_setup():
    time.sleep(PAST_LIMIT)  # set-up is not the call: mutmut's clean time leaves it out


def test_slow_setup(slow_setup):
    pass


def test_hangs():
    time.sleep(60 if os.environ.get("MUTANT_UNDER_TEST") else PAST_LIMIT)
"""


def start_sample(directory: Path, mutant: str | None) -> subprocess.Popen[str]:
    """pytest -v -x on a sample file in `directory`, with this suite's conftest and a stats file
    that times both tests at 0 s, as mutmut would run it (or, `mutant` None, as anyone else)."""
    (directory / "tests").mkdir(parents=True)
    (directory / "tests" / "__init__.py").write_text("", "utf-8")
    for name in ("conftest.py", "mutation_limits.py"):
        (directory / "tests" / name).write_text((ROOT / "tests" / name).read_text("utf-8"))
    (directory / "tests" / "test_sample.py").write_text(SAMPLE, "utf-8")
    times = {"tests/test_sample.py::test_slow_setup": 0.0, "tests/test_sample.py::test_hangs": 0.0}
    (directory / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": times}))
    env = {k: v for k, v in os.environ.items() if k != "MUTANT_UNDER_TEST"}
    if mutant is not None:
        env["MUTANT_UNDER_TEST"] = mutant
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-x", "tests"]
    return subprocess.Popen(
        args, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def outcomes(out: str) -> dict[str, str]:
    """Test name -> PASSED/FAILED as pytest -v reported it."""
    prefix = "tests/test_sample.py::"
    found = {}
    for line in out.splitlines():
        if line.startswith(prefix):
            name, *status = line.removeprefix(prefix).split()
            found[name] = status[0] if status else ""
    return found


def test_under_a_mutant_a_hang_fails_at_its_limit_and_set_up_is_not_counted(
    tmp_path: Path,
) -> None:
    mutant = start_sample(tmp_path / "mutant", "archiver.x.x_f__mutmut_1")
    plain = start_sample(tmp_path / "plain", None)  # side by side: both take about 21 s
    out, _ = mutant.communicate(timeout=120)
    plain_out, _ = plain.communicate(timeout=120)
    assert outcomes(out) == {"test_slow_setup": "PASSED", "test_hangs": "FAILED"}, out
    assert "Timeout (>10.0s)" in out, out
    # Outside a mutant's run there is no such limit: the same 10.5 s sleep passes.
    assert outcomes(plain_out) == {"test_slow_setup": "PASSED", "test_hangs": "PASSED"}, plain_out
