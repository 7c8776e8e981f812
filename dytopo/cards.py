"""Role cards: Markdown files with YAML front matter (name, description) and a prompt body."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from dytopo.errors import ConfigError

# Cards shipped in the repository, next to the package (works for source and editable installs).
BUILTIN_CARDS = Path(__file__).resolve().parent.parent / "agents"


class CardError(ConfigError):
    """A role card is missing or malformed."""


class RoleCard(BaseModel):
    name: str
    description: str = ""
    prompt: str
    path: str = ""


def _search_path(base: Path | None) -> list[Path]:
    dirs = []
    if base is not None:
        dirs += [base, base / "agents", base.parent / "agents"]
    dirs += [Path.cwd() / "agents", BUILTIN_CARDS]
    return dirs


def find_card(name: str, base: Path | None = None) -> Path:
    """The card file for `name` (a card name or a path to a .md file)."""
    if name.endswith(".md"):
        for candidate in ([base / name] if base else []) + [Path(name)]:
            if candidate.is_file():
                return candidate
        raise CardError(f"role card file {name} not found (give a path relative to the topology)")
    dirs = _search_path(base)
    for folder in dirs:
        candidate = folder / f"{name}.md"
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in BUILTIN_CARDS.glob("*.md"))
    raise CardError(
        f"no role card {name!r} (looked for {name}.md in {', '.join(str(d) for d in dirs)}; "
        f"shipped cards: {', '.join(shipped)})"
    )


def load_card(name: str, base: Path | None = None) -> RoleCard:
    path = find_card(name, base)
    text = path.read_text(encoding="utf-8")
    meta: dict[str, object] = {}
    body = text
    if text.startswith("---"):
        _, front, body = text.split("---", 2)
        try:
            loaded = yaml.safe_load(front) or {}
        except yaml.YAMLError as exc:
            raise CardError(f"{path}: front matter is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise CardError(f"{path}: front matter must be a mapping (name, description)")
        meta = loaded
    prompt = body.strip()
    if not prompt:
        raise CardError(f"{path}: the card has no prompt text after its front matter")
    return RoleCard(
        name=str(meta.get("name") or path.stem),
        description=str(meta.get("description") or ""),
        prompt=prompt,
        path=str(path),
    )
