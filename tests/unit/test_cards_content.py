"""The shipped role cards: no example descriptors (a 1.5B model copied them into its own needs
and offers, so routing matched the examples, not the work), and the manager's names no roles
(its goals named a Solver and a Verifier on a code team)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dytopo.agents.cards import load_card

ROOT = Path(__file__).resolve().parents[2]
CARDS = sorted((ROOT / "agents").glob("*.md"))


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_no_card_carries_example_needs_or_offers(path: Path) -> None:
    text = load_card(path.stem, ROOT).prompt
    assert not re.search(r'"(query|key)"\s*:', text), "an example descriptor"
    assert not re.search(r"^\s*(Good|Bad)\s*:", text, re.MULTILINE)


def test_the_manager_card_names_no_role() -> None:
    text = load_card("manager", ROOT).prompt
    roles = {p.stem.replace("_", "") for p in CARDS} - {"manager"}
    named = {r for r in roles if re.search(rf"\b{r}\s*:", text, re.IGNORECASE)}
    assert not named, named
