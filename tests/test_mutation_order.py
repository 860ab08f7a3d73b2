"""tests/mutation_order.py: the order and the time limits `make mutate` gives a mutant's tests,
and that it leaves every other run alone (a real pytest in a subprocess, a real stats file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation_order import (
    LIMIT_FACTOR,
    LIMIT_FLOOR,
    clean_times,
    fastest_first,
    mutant_under_test,
    time_limit,
)

ROOT = Path(__file__).resolve().parent.parent


def test_files_go_by_their_fastest_test_and_tests_by_their_own_time() -> None:
    times = {"a.py::slow": 9.0, "a.py::quick": 0.1, "b.py::one": 0.5, "b.py::two": 0.2}
    given = ["b.py::one", "a.py::slow", "b.py::two", "a.py::quick"]
    assert fastest_first(given, times) == ["a.py::quick", "a.py::slow", "b.py::two", "b.py::one"]


def test_tests_without_a_time_go_last_in_the_order_given() -> None:
    times = {"a.py::known": 5.0}
    given = ["c.py::new2", "a.py::known", "c.py::new1", "a.py::also_new"]
    assert fastest_first(given, times) == [
        "a.py::known",
        "a.py::also_new",
        "c.py::new2",
        "c.py::new1",
    ]


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
import time

def test_slow():
    time.sleep(0.3)

def test_fast():
    pass

def test_hangs():
    time.sleep(60)
"""


def run_sample(tmp_path: Path, mutant: str | None) -> str:
    """pytest on a sample file in `tmp_path`, with this suite's conftest and a stats file that
    times test_hangs at 0.01 s (so its limit is 10.1 s), as mutmut would run it."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("", "utf-8")
    for name in ("conftest.py", "mutation_order.py"):
        (tmp_path / "tests" / name).write_text((ROOT / "tests" / name).read_text("utf-8"))
    (tmp_path / "tests" / "test_sample.py").write_text(SAMPLE, "utf-8")
    times = {
        "tests/test_sample.py::test_slow": 0.3,
        "tests/test_sample.py::test_fast": 0.0,
        "tests/test_sample.py::test_hangs": 0.01,
    }
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": times}))
    env = {k: v for k, v in os.environ.items() if k != "MUTANT_UNDER_TEST"}
    if mutant is not None:
        env["MUTANT_UNDER_TEST"] = mutant
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-x", "tests"]
    if mutant is None:
        args += ["--deselect", "tests/test_sample.py::test_hangs"]
    done = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout


def ran_in(out: str) -> list[str]:
    """The tests pytest -v reported running, in order."""
    prefix = "tests/test_sample.py::"
    return [
        line.removeprefix(prefix).split()[0] for line in out.splitlines() if line.startswith(prefix)
    ]


def test_a_mutants_tests_run_fastest_first_and_a_hang_fails_at_its_limit(tmp_path: Path) -> None:
    out = run_sample(tmp_path, "archiver.x.x_f__mutmut_1")
    # test_slow never runs: -x stops the run at the hang, which its limit made a failure.
    assert ran_in(out) == ["test_fast", "test_hangs"], out
    assert "Timeout" in out and "1 failed" in out, out


def test_outside_a_mutants_run_the_order_is_the_files(tmp_path: Path) -> None:
    out = run_sample(tmp_path, None)
    assert ran_in(out) == ["test_slow", "test_fast"], out
