"""`dytopo tools list|call`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from dytopo.backends.types import ToolCall
from dytopo.cli._common import check_seconds, fail, out, run_async
from dytopo.cli._terminal import visible
from dytopo.errors import ConfigError
from dytopo.tools.context import ToolContext
from dytopo.tools.executor import ToolExecutor
from dytopo.tools.registry import ToolRegistry

app = typer.Typer(help="List the registered tools or call one directly.", no_args_is_help=True)


def _registry(modules: list[str] | None) -> ToolRegistry:
    # The user names these modules on the command line: that is the trust a topology lacks.
    return ToolRegistry.discover(modules or [], Path.cwd(), trust_topology=True)


def _arguments(args: str) -> str:
    """`--args` as compact JSON of one object; ConfigError naming the fix otherwise."""
    example = """give one JSON object, e.g. --args '{"expression": "2 + 2"}'"""
    try:
        value = json.loads(args)
    except RecursionError:
        raise ConfigError(f"--args is nested too deeply; {example}") from None
    except ValueError as exc:
        raise ConfigError(f"--args is not JSON ({exc}); {example}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--args must be a JSON object, not {type(value).__name__}; {example}")
    return json.dumps(value)


@app.command("list")
def list_tools(
    module: list[str] | None = typer.Option(None, "--module", "-m", help="Extra tool module/file."),
    as_json: bool = typer.Option(False, "--json", help="Print the OpenAI tool definitions."),
) -> None:
    """Every tool with its JSON schema."""
    registry = _registry(module)
    tools = [registry.get(n) for n in registry.names()]
    if as_json:
        print(json.dumps([t.definition() for t in tools], indent=2))
        return
    table = Table(title="tools")
    table.add_column("name")
    table.add_column("description")
    table.add_column("arguments", overflow="fold")
    for t in tools:
        schema = t.definition()["function"]["parameters"]
        required = set(schema.get("required", []))
        args = ", ".join(
            f"{name}{'' if name in required else '?'}: {prop.get('type', 'any')}"
            for name, prop in schema.get("properties", {}).items()
        )
        table.add_row(t.name, t.description, args)
    out.print(table)


@app.command("call")
def call_tool(
    name: str = typer.Argument(..., help="Tool name."),
    args: str = typer.Option("{}", "--args", help="Arguments as one JSON object."),
    workspace: Path = typer.Option(Path("."), help="Folder file tools are confined to."),
    docs: Path | None = typer.Option(None, help="Folder search_docs searches."),
    allow: list[str] | None = typer.Option(None, "--allow", help="Host http_get may fetch."),
    timeout: float = typer.Option(20.0, help="Time limit in seconds."),
    module: list[str] | None = typer.Option(None, "--module", "-m", help="Extra tool module/file."),
) -> None:
    """Run one tool exactly as an agent would (validation, limits, errors as text)."""
    check_seconds("--timeout", timeout)
    arguments = _arguments(args)
    registry = _registry(module)
    tool = registry.get(name)
    ctx = ToolContext(
        workspace=workspace.resolve(),
        docs_dir=docs.resolve() if docs else None,
        http_allow=allow or [],
        timeout_s=timeout,
    )
    outcome = run_async(ToolExecutor([tool], ctx).run(ToolCall(name=name, arguments=arguments)))
    if not outcome.ok:
        fail(outcome.error)
    print(visible(outcome.result))  # the tool's output is data, not terminal commands
