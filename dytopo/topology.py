"""Topology files: the YAML format of a swarm, as typed models (`dytopo schema` prints it).

A topology's `tool_modules` are Python code that runs with your rights when a swarm is built from
it, so treat a topology file from elsewhere like a script from elsewhere. Validating a file never
runs them (their source is read, not imported), and a run loads them only from inside the
topology's folder tree or from installed `dytopo.tools` entry points, unless you pass
`--trust-topology` (`trust_topology=True` in Python). Role cards are confined the same way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from dytopo.agents.answer import AnswerSpec
from dytopo.backends.settings import BackendSettings, check_url
from dytopo.backends.types import Sampling
from dytopo.routing.config import RoutingConfig
from dytopo.tools.context import ToolContext


def _module_name(value: str) -> str:
    if not value or len(value) > 1000 or not value.isprintable():
        raise ValueError("give a module name or a .py path of printable characters")
    return value


ModuleName = Annotated[str, AfterValidator(_module_name)]
"""A tool module: a dotted module name, or a .py file or folder relative to the topology."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class BudgetSpec(_Strict):
    """Token budgets of one agent (or the manager)."""

    max_output_tokens: int = Field(default=800, ge=16, le=10_000_000)
    """max_tokens of each reply."""
    context: int | None = Field(default=None, ge=256, le=100_000_000)
    """Prompt + output tokens this agent may use per request. None: a share of the slot."""
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    """Relative share of the slot context when `context` is not set."""


class AgentSpec(_Strict):
    """One swarm member."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
    """Unique name; appears in traces and graphs."""
    card: str | None = None
    """Role card name in agents/ (or a path to a .md file inside the topology's folder tree).
    Default: the id."""
    instructions: str = ""
    """Extra instructions appended to the role card for this topology."""
    tools: list[str] = Field(default_factory=list)
    """Names of the tools this agent may call (`dytopo tools list` shows them)."""
    tool_choice: Literal["auto", "required"] = "auto"
    """required: the agent's first request in a step must call a tool (for small models)."""
    max_tool_rounds: int = Field(default=2, ge=1, le=8)
    """Model turns with tool calls per step."""
    text_work: bool = False
    """Write the private work as plain text, then the JSON (public, query, key) about it in a
    second, cached request. Code and drafts come out whole: inside a JSON string a 1.5B model
    dropped its code or mangled a docstring's quotes."""
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    sampling: Sampling = Field(default_factory=Sampling)


class ManagerSpec(_Strict):
    """The manager: sets goals, decides when to stop, writes the final answer."""

    card: str = "manager"
    instructions: str = ""
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(max_output_tokens=1200))
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.3))


class EmbedderSpec(_Strict):
    """The sentence encoder for need/offer matching."""

    kind: Literal["http", "hash"] = "http"
    """http: llama-server --embeddings or any OpenAI-compatible /v1/embeddings; hash: offline."""
    base_url: str | None = None
    """None: $DYTOPO_EMBED_URL, else the embedded MiniLM server, else the chat server."""
    model: str | None = None
    """Model name to send (OpenAI-compatible services need one)."""
    api_key: str | None = None
    """Bearer token for the embedding endpoint."""

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        return check_url(url)


class Topology(_Strict):
    """A swarm: who is in it, how they talk, which server they use."""

    name: str
    description: str = ""
    task: str | None = None
    """Default task when `dytopo run` gets no --task."""
    backend: BackendSettings = Field(default_factory=BackendSettings)
    backends: list[str] | None = Field(default=None, min_length=1, max_length=256)
    """Several LLM server roots for `dytopo batch`, which spreads its runs over them (each run
    on one). A single run uses the first when `backend.base_url` is unset. The `backend:`
    settings (api_key, timeouts) apply to each."""
    embedder: EmbedderSpec = Field(default_factory=EmbedderSpec)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    max_rounds: int = Field(default=5, ge=1, le=50)
    min_rounds: int = Field(default=2, ge=1, le=50)
    """A manager halt before this round is not accepted (small models halt at once)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    run_token_budget: int | None = Field(default=None, ge=1000, le=10**12)
    """Cap on prompt + generated tokens of the whole run. When the next round would not fit,
    the manager writes the final answer from what it has (halt reason `budget`)."""
    structured_reasks: int = Field(default=2, ge=0, le=5)
    """Re-asks at temperature 0.1 after a malformed structured reply."""
    agent_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    """Each agent's step times out on its own; finished agents keep their results."""
    queue_timeout_s: float | None = Field(default=1800.0, gt=0)
    """Each wait of an agent step for a free server slot (not counted in agent_timeout_s)."""
    on_agent_error: Literal["continue", "abort"] = "continue"
    manager: ManagerSpec = Field(default_factory=ManagerSpec)
    answer: AnswerSpec = Field(default_factory=AnswerSpec)
    """What the final answer is: an agent's latest work put in verbatim (`from: developer`,
    `extract: code`), or, by default, the work the manager picks or the text it writes."""
    agents: list[AgentSpec] = Field(min_length=1)
    tool_modules: list[ModuleName] = Field(default_factory=list)
    """Extra Python modules, .py files or folders whose @tool functions are registered. They are
    code: a run loads them only from this file's folder tree or installed entry points, unless
    trusted (--trust-topology); validation reads their source and never runs it."""
    tool_settings: ToolContext = Field(default_factory=lambda: ToolContext(workspace=Path(".")))
    """Where tools may read and fetch, and their limits; paths are relative to this file."""

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, urls: list[str] | None) -> list[str] | None:
        for url in urls or []:
            check_url(url)
        return urls

    @model_validator(mode="after")
    def _check(self) -> Topology:
        counts = Counter(a.id for a in self.agents)
        dupes = sorted(i for i, n in counts.items() if n > 1)
        if dupes:
            shown = ", ".join(dupes[:5]) + (f" and {len(dupes) - 5} more" if len(dupes) > 5 else "")
            raise ValueError(f"agent ids must be unique; repeated: {shown}")
        if self.routing.hub is not None and self.routing.hub not in counts:
            ids = ", ".join(list(counts)[:10]) + (", ..." if len(counts) > 10 else "")
            raise ValueError(f"routing.hub {self.routing.hub!r} is not an agent id ({ids})")
        for key, agent in (("from", self.answer.source), ("tests_from", self.answer.tests_from)):
            if agent is not None and agent not in counts and (key, agent) != ("tests_from", "task"):
                ids = ", ".join(list(counts)[:10]) + (", ..." if len(counts) > 10 else "")
                raise ValueError(f"answer.{key} {agent!r} is not an agent id ({ids})")
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) > max_rounds ({self.max_rounds})")
        return self
