"""Tool modules without running them: names from the source's syntax tree, and where code may come
from.

A topology's `tool_modules` are Python code that runs with the user's rights when the swarm is
built. Validation therefore never imports them: it reads their source and finds the top-level
functions decorated with `@tool` (or `name = tool(fn)`). Loading them for a run is allowed only
from inside the topology's folder tree or from installed `dytopo.tools` entry points, unless the
user says they trust the topology.
"""

from __future__ import annotations

import ast
import sys
from importlib.metadata import entry_points
from pathlib import Path

from dytopo.errors import ConfigError
from dytopo.syntax import parse

ENTRY_POINT_GROUP = "dytopo.tools"
# Tools shipped in the repository, next to the package (like the role cards). An installed
# wheel has no repository: its build copies them into dytopo/scaffold/builtin_tools
# (build_scaffold.py). Never site-packages/tools: another distribution's.
_CHECKOUT = Path(__file__).resolve().parents[2]
BUILTIN_TOOLS = (
    _CHECKOUT / "tools"
    if (_CHECKOUT / "pyproject.toml").is_file()
    else Path(__file__).resolve().parents[1] / "scaffold" / "builtin_tools"
)
MAX_SOURCE_BYTES = 2_000_000
TRUST_HINT = "pass --trust-topology (trust_topology=True in Python) if you trust it"


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, or with a NUL byte, is no folder
        return False


def target_path(target: str, base: Path | None) -> Path | None:
    """The file or folder a `tool_modules` entry names, or None when it is a module name."""
    path = Path(target) if Path(target).is_absolute() or base is None else base / target
    return path if target.endswith(".py") or _is_dir(path) else None


def module_files(path: Path) -> list[Path]:
    """The .py files a file or folder entry loads (a folder's files not starting with `_`)."""
    if _is_dir(path):
        return sorted(f for f in path.glob("*.py") if not f.name.startswith("_"))
    return [path]


def _is_tool(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("tool", "Tool")


def _name_keyword(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            value = keyword.value.value
            return value if isinstance(value, str) else None
    return None


def tools_in_source(source: str, filename: str = "<tools>") -> dict[str, str]:
    """Binding name -> tool name of every top-level `@tool` function (or `x = tool(fn)`)."""
    tree = parse(source, filename)
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                if _is_tool(deco):
                    found[node.name] = node.name
                elif isinstance(deco, ast.Call) and _is_tool(deco.func):
                    found[node.name] = _name_keyword(deco) or node.name
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _is_tool(node.value.func)
        ):
            call = node.value
            fn = call.args[0] if call.args else None
            default = fn.id if isinstance(fn, ast.Name) else None
            name = _name_keyword(call) or default
            for target in node.targets:
                if name and isinstance(target, ast.Name):
                    found[target.id] = name
    return found


def tools_in_file(path: Path) -> dict[str, str]:
    """`tools_in_source` of a file; ConfigError when it cannot be read or parsed."""
    try:
        if not path.is_file():
            raise ConfigError(f"tool file {path} does not exist (give a .py path or a module)")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SOURCE_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tool file {path} cannot be read ({exc})") from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise ConfigError(f"tool file {path} is larger than {MAX_SOURCE_BYTES:,} bytes")
    try:
        return tools_in_source(raw.decode("utf-8"), str(path))
    except SyntaxError as exc:
        raise ConfigError(f"tool file {path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        msg = f"tool file {path} is not readable Python source (save it as UTF-8)"
        raise ConfigError(msg) from None


def find_module(name: str) -> list[Path]:
    """The source files of a dotted module and its parent packages, found without importing any
    of them (importlib.util.find_spec would import the parents). Empty when not found as source."""
    if not all(part.isidentifier() for part in name.split(".")):
        return []
    files: list[Path] = []
    search: list[str] | None = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        fullname = ".".join(parts[:depth])
        spec = None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, search) if find_spec else None
            if spec is not None:
                break
        if spec is None:
            return []
        if spec.origin and spec.has_location:
            files.append(Path(spec.origin))
        if depth < len(parts):
            if spec.submodule_search_locations is None:
                return []
            search = list(spec.submodule_search_locations)
    last = files[-1] if files else None
    return files if last is not None and last.suffix == ".py" and last.is_file() else []


def entry_point_modules() -> list[tuple[str, str]]:
    """(module, attribute or '') of each installed tool entry point."""
    out: list[tuple[str, str]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module, _, attr = str(getattr(ep, "value", "")).partition(":")
        if module.strip():
            out.append((module.strip(), attr.strip()))
    return out


def _inside(file: Path, root: Path) -> bool:
    try:
        return file.resolve().is_relative_to(root)
    except (OSError, ValueError, RuntimeError):  # too long, a NUL byte, a symlink loop
        return False


def check_confined(target: str, base: Path | None) -> None:
    """ConfigError unless `target` lies in `base`'s folder tree (symlinks followed) or is an
    installed entry point: a topology may only name code that the user already placed or
    installed."""
    root = (base or Path.cwd()).resolve()
    path = target_path(target, base)
    if path is None:
        if any(target == module for module, _ in entry_point_modules()):
            return
        files = find_module(target)
        if not files:
            raise ConfigError(
                f"tool module {target!r} not found as Python source "
                "(give a .py path relative to the topology, or install the package)"
            )
        where = f"tool module {target!r} ({files[-1]})"
    else:
        files = [path, *(module_files(path) if _is_dir(path) else [])]
        where = f"tool module {target}"
    for file in files:
        if not _inside(file, root):
            raise ConfigError(
                f"{where} is outside the topology's folder {root} and is not an installed "
                f"`{ENTRY_POINT_GROUP}` entry point; a tool module is code that runs with your "
                f"rights: move it under {root}, install it as an entry point, or {TRUST_HINT}"
            )


def tool_names(target: str, base: Path | None) -> list[str]:
    """Tool names a `tool_modules` entry defines, read from its source; ConfigError when it is
    missing or defines none."""
    path = target_path(target, base)
    if path is None:
        files = find_module(target)
        if not files:
            raise ConfigError(
                f"tool module {target!r} not found as Python source "
                "(give a .py path relative to the topology, or install the package)"
            )
        sources = [files[-1]]
    else:
        sources = module_files(path)
    names = [name for file in sources for name in tools_in_file(file).values()]
    if not names:
        raise ConfigError(
            f"tool module {target} defines no tools (decorate top-level functions with "
            "@dytopo.tools.tool)"
        )
    return names


def installed_tool_names() -> set[str]:
    """Names of the shipped tools and the installed entry points' tools, read from source.
    An entry point whose source cannot be found or read contributes nothing."""
    names: set[str] = set()
    if BUILTIN_TOOLS.is_dir():
        for file in module_files(BUILTIN_TOOLS):
            names.update(tools_in_file(file).values())
    for module, attr in entry_point_modules():
        files = find_module(module)
        try:
            found = tools_in_file(files[-1]) if files else {}
        except ConfigError:
            continue
        names.update(found.values() if not attr else [found[attr]] if attr in found else [])
    return names
