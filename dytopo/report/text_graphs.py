"""A round's graph as Graphviz dot or a Mermaid flowchart, for people who put graphs in docs.

Agent names come from the trace (user and model text): dot gets them as escaped quoted ids;
Mermaid gets safe ids (n0, n1, ...) and the name as a label with entity codes for anything
its parser reads as syntax.
"""

from __future__ import annotations

from dytopo.errors import ConfigError
from dytopo.report.views import RoundView, RunView


def render_dot(run: RunView, round: int) -> str:
    rnd = _round(run, round)
    agents, rank = _agents(run, rnd)
    routing = rnd.routing
    title = f"round {rnd.number}"
    if routing is not None:
        title += f" · tau {routing.tau} · order: " + " -> ".join(routing.order)
    lines = [f"digraph {_dot(f'round {rnd.number}')} {{", f"  label={_dot(title)};"]
    lines.append("  node [shape=circle, fontname=Helvetica];")
    for agent in agents:
        lines.append(f"  {_dot(agent)} [label={_dot(_label(agent, rank))}];")
    for e in routing.edges if routing else []:
        style = ", style=dashed" if e.forced else ""
        width = 0.8 + 3.2 * min(1.0, max(0.0, e.score))
        attrs = f'label="{e.score:.2f}", penwidth={width:.2f}{style}'
        lines.append(f"  {_dot(e.source)} -> {_dot(e.target)} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(run: RunView, round: int) -> str:
    rnd = _round(run, round)
    agents, rank = _agents(run, rnd)
    ids = {a: f"n{k}" for k, a in enumerate(agents)}
    lines = ["flowchart LR", f"  %% round {rnd.number}"]
    for agent in agents:
        lines.append(f'  {ids[agent]}["{_mermaid(_label(agent, rank))}"]')
    for e in rnd.routing.edges if rnd.routing else []:
        if e.source not in ids or e.target not in ids:
            continue
        arrow = "-.->" if e.forced else "-->"
        note = " forced" if e.forced else ""
        lines.append(f"  {ids[e.source]} {arrow}|{e.score:.2f}{note}| {ids[e.target]}")
    return "\n".join(lines) + "\n"


def _round(run: RunView, number: int) -> RoundView:
    rnd = run.round(number)
    if rnd is None:
        have = ", ".join(str(r.number) for r in run.rounds) or "none"
        raise ConfigError(f"round {number}: the trace has no such round (rounds: {have})")
    return rnd


def _agents(run: RunView, rnd: RoundView) -> tuple[list[str], dict[str, int]]:
    order = rnd.routing.order if rnd.routing else []
    agents = list(run.agents) + [a for a in order if a not in run.agents]
    return agents, {a: k for k, a in enumerate(order, start=1)}


def _label(agent: str, rank: dict[str, int]) -> str:
    return f"{rank[agent]}. {agent}" if agent in rank else agent


def _dot(text: str) -> str:
    """A dot quoted string: backslash and quote escaped, line breaks as dot's \\n."""
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + body.replace("\r", "").replace("\n", "\\n") + '"'


_MERMAID_CODES = {c: f"#{ord(c)};" for c in '"#<>&`|[]{}()'}


def _mermaid(text: str) -> str:
    """A label inside ["..."]: characters Mermaid reads as syntax become entity codes."""
    flat = " ".join(text.split())
    return "".join(_MERMAID_CODES.get(c, c) for c in flat)
