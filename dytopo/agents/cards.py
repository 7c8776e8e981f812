"""Role cards: Markdown files with YAML front matter (name, description) and a prompt body.

A card named by a topology is confined to the topology's folder tree and the `agents/` folders
(next to the topology's folder, in the working folder, and the shipped one): a card is sent to
the LLM server, so a topology must not pull arbitrary files into prompts unless trusted.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel

from dytopo.errors import CardError

# The repository's cards in a source checkout (an editable install); in an installed wheel the
# copies its build put inside the package (build_scaffold.py): site-packages/agents would be any
# distribution's folder.
_PACKAGE = Path(__file__).resolve().parents[1]  # dytopo/ (this file is dytopo/agents/cards.py)
_CHECKOUT = _PACKAGE.parent
BUILTIN_CARDS = (
    _CHECKOUT / "agents"
    if (_CHECKOUT / "pyproject.toml").is_file()
    else _PACKAGE / "scaffold" / "folder" / "agents"
)
MAX_CARD_BYTES = 100_000
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RoleCard(BaseModel):
    name: str
    description: str = ""
    prompt: str
    path: str = ""


def _search_path(base: Path) -> list[Path]:
    return [base, base / "agents", base.parent / "agents", Path.cwd() / "agents", BUILTIN_CARDS]


def _roots(base: Path) -> list[Path]:
    """Folders whose cards a topology in `base` may use."""
    return [
        p.resolve() for p in (base, base.parent / "agents", Path.cwd() / "agents", BUILTIN_CARDS)
    ]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long or with a NUL byte is no file
        return False


@cache
def _shipped() -> str:
    return ", ".join(sorted(p.stem for p in BUILTIN_CARDS.glob("*.md")))


def _confined(path: Path, name: str, base: Path, trust_topology: bool) -> Path:
    real = path.resolve()
    if trust_topology or any(real.is_relative_to(root) for root in _roots(base)):
        return path
    raise CardError(
        f"role card {name} ({real}) is outside the topology's folder and the agents/ folders: "
        "move it there, or pass --trust-topology (trust_topology=True in Python) if you trust it"
    )


def find_card(name: str, base: Path | None = None, *, trust_topology: bool = False) -> Path:
    """The card file for `name` (a card name or a path to a .md file), relative to `base` (the
    topology's folder; default: the working folder) and confined as the module says."""
    base = base if base is not None else Path.cwd()
    if name.endswith(".md"):
        for candidate in (base / name, Path(name)):
            if _is_file(candidate):
                return _confined(candidate, name, base, trust_topology)
        raise CardError(f"role card file {name} not found (give a path relative to the topology)")
    dirs = _search_path(base)
    for folder in dirs:
        candidate = folder / f"{name}.md"
        if _is_file(candidate):
            return _confined(candidate, name, base, trust_topology)
    raise CardError(
        f"no role card {name!r} (looked for {name}.md in {', '.join(str(d) for d in dirs)}; "
        f"shipped cards: {_shipped()})"
    )


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise CardError(f"{path}: cannot read the role card ({exc.strerror})") from None
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"{path}: a role card may be at most {MAX_CARD_BYTES:,} bytes; shorten it")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CardError(f"{path}: the role card is not UTF-8 text; save it as UTF-8") from None


def _front_matter(path: Path, front: str) -> dict[str, str]:
    try:
        loaded = yaml.load(front, Loader=_Loader)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise CardError(f"{path}: front matter is not valid YAML: {problem}") from None
    if not isinstance(loaded, dict | None):
        raise CardError(f"{path}: front matter must be a mapping (name, description)")
    meta = loaded or {}
    # Only text is used: aliases are shared, not copied, so a nested "billion laughs" value
    # stays small unless something turns it into a string.
    for key in ("name", "description"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise CardError(f"{path}: front matter `{key}` must be text")
    return {k: v for k, v in meta.items() if isinstance(k, str) and isinstance(v, str)}


def load_card(name: str, base: Path | None = None, *, trust_topology: bool = False) -> RoleCard:
    """Find and parse a role card (see `find_card` for where it may come from)."""
    path = find_card(name, base, trust_topology=trust_topology)
    text = _read(path)
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---"):
        parts = text.split("---", 2)
        if len(parts) < 3:
            raise CardError(f"{path}: front matter has no closing `---` line; add one")
        meta = _front_matter(path, parts[1])
        body = parts[2]
    prompt = body.strip()
    if not prompt:
        raise CardError(f"{path}: the card has no prompt text after its front matter")
    return RoleCard(
        name=meta.get("name") or path.stem,
        description=meta.get("description") or "",
        prompt=prompt,
        path=str(path),
    )
