"""The systemd units in deploy/: systemd's own analyzer on them, the directives we promise, and
MemoryDenyWriteExecute= tried against our real dependency set.

systemd-analyze must be installed (scripts/system-deps, run by `make test`, installs it): these
tests fail, never skip, without it. `verify` runs with --root on a scratch tree holding the
host's stock units, our units byte for byte, and a stub at ExecStart's path, so the units are
checked exactly as shipped (ExecStart included) without installing anything on this machine.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from archiver.config import DownloadConfig, SyncConfig, load_config, read_client_secret

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
# unit file -> the name systemd-analyze checks it under (a template needs an instance)
UNITS = {
    "zoom-sms-archiver.service": "zoom-sms-archiver.service",
    "zoom-sms-archiver@.service": "zoom-sms-archiver@example.service",
}
MAX_EXPOSURE = 2.0
# Room, after the daemon's hard deadline, for the stop event, flush, fsync and close on a slow
# disk before systemd's SIGKILL.
FINAL_FLUSH = 15.0
# Lines allowed to differ between the two units' [Service] sections.
PER_UNIT_KEYS = {"ExecStart", "User", "StateDirectory", "LoadCredential"}

Unit = dict[str, dict[str, list[str]]]


def daemon_hard_deadline() -> float:
    """`archiver.daemon.HARD_DEADLINE` (how long cancelled work gets after the grace period),
    read from the source so that the unit checks do not hinge on the whole daemon importing."""
    tree = ast.parse((REPO / "archiver" / "daemon.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "HARD_DEADLINE" for t in targets):
            assert node.value is not None
            return float(ast.literal_eval(node.value))
    pytest.fail("archiver/daemon.py defines no HARD_DEADLINE")


def parse_unit(text: str) -> Unit:
    """section -> key -> every value assigned, in order (systemd allows repeats)."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert not line.endswith("\\"), f"continuation lines are not parsed here: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def service(name: str) -> dict[str, list[str]]:
    return parse_unit((DEPLOY / name).read_text())["Service"]


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze not found: run `sudo scripts/system-deps` (make test does, as root) "
            "to check the units in deploy/"
        )
    return path


def timespan_seconds(analyze: str, value: str) -> float:
    """Parse a systemd time span with systemd itself."""
    out = subprocess.run(
        [analyze, "timespan", value], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"μs:\s*(\d+)", out)
    assert match, out
    return int(match.group(1)) / 1_000_000


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory, analyze: str) -> Path:
    root = tmp_path_factory.mktemp("sysroot")
    stock = next(
        (
            Path(p)
            for p in ("/usr/lib/systemd/system", "/lib/systemd/system")
            if Path(p, "sysinit.target").exists()
        ),
        None,
    )
    if stock is None:
        pytest.fail("systemd's stock units (sysinit.target, ...) not found")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copyfile(DEPLOY / name, units / name)
        binary = root / one(service(name), "ExecStart").split()[0].lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(analyze: str, fake_root: Path, name: str) -> None:
    result = subprocess.run(
        [analyze, "verify", f"--root={fake_root}", "--man=no", UNITS[name]],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Warnings do not change the exit code; none may concern our unit.
    assert "zoom-sms-archiver" not in output, output


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_exposure(
    analyze: str, fake_root: Path, name: str, record_property: Callable[[str, object], None]
) -> None:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", f"--root={fake_root}", "--no-pager", UNITS[name]],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    record_property("exposure", exposure)
    print(f"{UNITS[name]}: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, output


def test_template_instance_layout() -> None:
    svc = service("zoom-sms-archiver@.service")
    assert one(svc, "ExecStart").endswith(" run --config /etc/zoom-sms-archiver/%i.toml")
    assert one(svc, "StateDirectory") == "zoom-sms-archiver/%i"
    assert one(svc, "LoadCredential") == "client_secret:/etc/zoom-sms-archiver/%i.secret"
    # One user per account: one compromised instance cannot touch another's archive.
    assert "%i" in one(svc, "User")


def test_single_unit_layout() -> None:
    svc = service("zoom-sms-archiver.service")
    assert one(svc, "ExecStart").endswith(" run --config /etc/zoom-sms-archiver/config.toml")
    assert one(svc, "StateDirectory") == "zoom-sms-archiver"
    assert one(svc, "LoadCredential") == "client_secret:/etc/zoom-sms-archiver/client_secret"


def test_units_share_one_hardening() -> None:
    plain, template = (
        {k: v for k, v in service(name).items() if k not in PER_UNIT_KEYS} for name in UNITS
    )
    assert plain == template


@pytest.mark.parametrize("name", UNITS)
def test_promised_directives(analyze: str, name: str) -> None:
    svc = service(name)
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "UMask": "0077",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
    }
    for key, value in expected.items():
        assert one(svc, key) == value, key
    assert one(svc, "ExecStart").split()[1:3] == ["run", "--config"]
    assert "@system-service" in svc["SystemCallFilter"]
    assert set(one(svc, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "2" in one(svc, "RestartPreventExitStatus").split()  # bad configuration
    assert int(one(svc, "LimitNOFILE")) >= 1024
    assert svc.get("NotifyAccess", ["main"]) == ["main"]
    # The watchdog is pinged every half interval: leave room for a busy loop.
    assert timespan_seconds(analyze, one(svc, "WatchdogSec")) >= 10
    assert timespan_seconds(analyze, one(svc, "RestartSec")) >= 5
    # SIGTERM -> grace for in-flight work -> hard deadline for cancelled work -> flush, fsync,
    # close; systemd's SIGKILL must come after all of that, with room for slow disks.
    shutdown = SyncConfig().shutdown_grace + daemon_hard_deadline() + FINAL_FLUSH
    assert timespan_seconds(analyze, one(svc, "TimeoutStopSec")) >= shutdown
    # Secrets travel by credential, never by environment.
    assert "EnvironmentFile" not in svc
    for value in svc.get("Environment", []):
        assert not re.search(r"(?i)secret|token|passw", value), value


def bytes_value(value: str) -> int:
    """A systemd size (1G, 512M, ...) in bytes: base 1024, as systemd reads MemoryMax=."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    match = re.fullmatch(r"(\d+)([KMGT]?)", value)
    assert match, f"MemoryMax={value}: expected a size such as 1G"
    return int(match.group(1)) * units.get(match.group(2), 1)


# The highest peak RSS measured (the units' comment: `run --once`, 12,798 attachments,
# downloads.workers = 8); MemoryMax= must leave a wide margin above it.
PEAK_RSS = 117_000_000
# Threads besides the download sinks: the event loop, the manifest writer, asyncio's default
# pool (min(32, CPUs + 4)).
FIXED_THREADS = 1 + 1 + 32


@pytest.mark.parametrize("name", UNITS)
def test_resource_ceilings(name: str) -> None:
    svc = service(name)
    memory = bytes_value(one(svc, "MemoryMax"))
    assert 8 * PEAK_RSS <= memory <= 4 << 30, memory
    tasks = int(one(svc, "TasksMax"))
    assert tasks >= 2 * (FIXED_THREADS + DownloadConfig().workers), tasks
    assert tasks <= 1024, tasks


@pytest.mark.parametrize("name", UNITS)
def test_link_local_and_multicast_are_denied(name: str) -> None:
    svc = service(name)
    denied = set(one(svc, "IPAddressDeny").split())
    assert {"169.254.0.0/16", "fe80::/10", "224.0.0.0/4", "ff00::/8"} <= denied, denied
    # Narrowing is the site's drop-in (deploy/README.md); an allow list here would win over
    # the deny list for whatever it names.
    assert "IPAddressAllow" not in svc
    assert "IPAddressAllow=" in (DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("name", UNITS)
def test_proc_subset_pid(name: str) -> None:
    assert one(service(name), "ProcSubset") == "pid"


# ProcSubset=pid, for real: a user and PID namespace with its own /proc mounted subset=pid,
# where the daemon's metrics registry is scraped once.
PROC_SUBSET_PROBE = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import generate_latest
    from archiver.ops.metrics import Telemetry, build_registry
    if os.path.exists("/proc/stat"):
        sys.exit("/proc/stat is visible: not a subset=pid /proc")
    with open("/proc/self/stat") as stat:
        print("STARTTIME", stat.read().rsplit(")", 1)[1].split()[19])
    sys.stdout.write(generate_latest(build_registry(Telemetry(poll_interval=60))).decode())
    """
)


def test_process_metrics_on_a_subset_pid_proc() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare not found: install util-linux")
    mount = 'mount -t proc -o subset=pid proc /proc && exec "$0" -c "$1"'
    command = [unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount"]
    result = subprocess.run(
        [*command, "sh", "-c", mount, sys.executable, PROC_SUBSET_PROBE],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"this kernel or container refuses user namespaces: {result.stderr}")
    assert result.returncode == 0, output
    values = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    for name in ("resident_memory_bytes", "virtual_memory_bytes", "cpu_seconds_total"):
        assert values.get(f"process_{name}", 0) > 0, output
    assert 0 < values["process_open_fds"] <= values["process_max_fds"], output
    # The start time from the boot clock agrees with the kernel's boot time (/proc/stat, seen
    # from outside) to within its whole-second rounding.
    with open("/proc/stat") as stat:
        btime = next(int(x.split()[1]) for x in stat if x.startswith("btime "))
    expected = btime + values["STARTTIME"] / os.sysconf("SC_CLK_TCK")
    assert abs(values["process_start_time_seconds"] - expected) < 2, output


def test_sample_config_matches_the_template() -> None:
    config = load_config(DEPLOY / "zoom-sms-archiver.toml")
    state = one(service("zoom-sms-archiver@.service"), "StateDirectory")
    assert config.archive.root == "/var/lib/" + state.replace("%i", "ACCOUNT")
    # Unset so that $CREDENTIALS_DIRECTORY/client_secret (LoadCredential=) is used.
    assert config.zoom.client_secret_file is None
    assert config.log.format == "json"
    assert config.sync.shutdown_grace == SyncConfig().shutdown_grace


def test_sample_config_reads_the_credential(tmp_path: Path) -> None:
    # What LoadCredential= hands the service: a 0400 file in $CREDENTIALS_DIRECTORY.
    secret = tmp_path / "client_secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o400)
    config = load_config(DEPLOY / "zoom-sms-archiver.toml")
    value = read_client_secret(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert value.reveal() == "s3cr3t-value"


# --- MemoryDenyWriteExecute= -----------------------------------------------------------------

# Installs the seccomp rules systemd adds for MemoryDenyWriteExecute=yes (EPERM for mmap with
# PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC, shmat with SHM_EXEC), then execs
# argv[1:]. libseccomp ships with systemd. Exit 77: the kernel refused the filter.
SECCOMP_MDWE = textwrap.dedent(
    """
    import ctypes, errno, mmap, os, sys
    lib = ctypes.CDLL("libseccomp.so.2")
    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, DENY, MASKED_EQ, SHM_EXEC = 0x7FFF0000, 0x00050000 | errno.EPERM, 7, 0o100000
    WX, X = mmap.PROT_WRITE | mmap.PROT_EXEC, mmap.PROT_EXEC
    ctx = lib.seccomp_init(ALLOW)
    for name, mask in (("mmap", WX), ("mprotect", X), ("pkey_mprotect", X), ("shmat", SHM_EXEC)):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        rule = Cmp(2, MASKED_EQ, mask, mask)
        assert lib.seccomp_rule_add_array(ctx, DENY, nr, 1, ctypes.byref(rule)) == 0, name
    if lib.seccomp_load(ctx) != 0:
        sys.exit(77)
    os.execv(sys.argv[1], sys.argv[1:])
    """
)

# What the daemon does, with every C extension it loads: TLS context, SQLite in WAL mode from
# a thread, fcntl lock, a download's file sink (thread, fadvise, fsync), an aiohttp server and
# client (C parser, gzip) on loopback, JWT, Prometheus, structlog, and an import of every
# module of the archiver package.
WORKLOAD = textwrap.dedent(
    """
    import asyncio, fcntl, hashlib, importlib, mmap, os, pkgutil, sqlite3, ssl, sys
    try:
        mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        if sys.argv[2] == "mdwe":
            sys.exit("a writable+executable mapping was allowed: the filter is not active")

    import aiohttp, asyncio_throttle, jwt, prometheus_client, rich.progress, structlog
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from aiohttp import web
    import archiver
    for module in pkgutil.walk_packages(archiver.__path__, "archiver.", onerror=print):
        if not module.name.endswith(".__main__"):
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                print("IMPORT-FAILED", module.name, repr(exc))

    def database(root):
        con = sqlite3.connect(os.path.join(root, "state.sqlite3"))
        con.execute("pragma journal_mode=wal")
        con.execute("pragma synchronous=full")
        con.execute("create table t (x)")
        con.executemany("insert into t values (?)", [(i,) for i in range(1000)])
        con.commit()
        (count,) = con.execute("select count(*) from t").fetchone()
        con.close()
        return count

    async def handler(request):
        body = await request.json()
        token = jwt.encode({"exp": 2**31}, "k" * 32, algorithm="HS256")
        response = web.json_response({"echo": body, "jwt": token, "pad": "x" * 10000})
        response.enable_compression()
        return response

    async def main(root):
        ssl.create_default_context()
        hashlib.sha256(os.urandom(1 << 20)).hexdigest()
        assert await asyncio.to_thread(database, root) == 1000
        with open(os.path.join(root, "LOCK"), "w") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        from archiver.downloads.sink import FileSink  # how downloads are written
        with ThreadPoolExecutor() as pool:
            sink = FileSink(Path(root) / "blob", pool)
            await sink.write(os.urandom(1 << 20))
            await sink.finish()
        app = web.Application()
        app.router.add_post("/x", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://{host}:{port}/x", json={"a": 1}) as r:
                assert r.headers.get("Content-Encoding") in ("gzip", "deflate"), r.headers
                data = await r.json()
        await runner.cleanup()
        assert data["echo"] == {"a": 1}
        jwt.decode(data["jwt"], "k" * 32, algorithms=["HS256"])
        assert b"process_" in prometheus_client.generate_latest()
        structlog.get_logger().info("mdwe_workload_done")

    asyncio.run(main(sys.argv[1]))
    print("MDWE-OK")
    """
)


def run_workload(root: Path, *, mdwe: bool) -> subprocess.CompletedProcess[str]:
    prefix = [sys.executable, "-c", SECCOMP_MDWE] if mdwe else []
    root.mkdir()
    return subprocess.run(
        [*prefix, sys.executable, "-c", WORKLOAD, str(root), "mdwe" if mdwe else "plain"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def import_failures(stdout: str) -> set[str]:
    return {line for line in stdout.splitlines() if line.startswith("IMPORT-FAILED")}


def test_dependency_set_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    result = run_workload(tmp_path / "mdwe", mdwe=True)
    output = result.stdout + result.stderr
    if result.returncode == 77:
        pytest.skip("this kernel or container refuses seccomp filters")
    if "libseccomp.so.2" in output and "OSError" in output:
        pytest.fail("libseccomp.so.2 not found: install systemd (it depends on libseccomp)")
    assert result.returncode == 0, output
    assert "MDWE-OK" in result.stdout, output
    # A module of ours that does not import at all is not this test's business; one that
    # imports without the filter but not under it is.
    baseline = run_workload(tmp_path / "plain", mdwe=False)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert import_failures(result.stdout) == import_failures(baseline.stdout), output
