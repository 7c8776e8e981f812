"""`dytopo compare`: one task in several routing modes on one server, side by side.

Same seed, same server (started once when none is configured), optionally the same fixed number
of rounds; each mode's trace and HTML report, a table of what each cost, and an index page.
"""

from dytopo.compare.page import Comparison, render_index, write_comparison
from dytopo.compare.rows import MODES, ModeRow, parse_modes, relative_tokens, variant
from dytopo.compare.run import prepare, run_modes

__all__ = [
    "MODES",
    "Comparison",
    "ModeRow",
    "parse_modes",
    "prepare",
    "relative_tokens",
    "render_index",
    "run_modes",
    "variant",
    "write_comparison",
]
