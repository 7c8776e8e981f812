from pathlib import Path
from types import SimpleNamespace

import pytest

from dytopo.errors import ConfigError, ToolError
from dytopo.tools import Tool, ToolContext, ToolRegistry, tool
from dytopo.tools import registry as registry_module


@tool
def greet(name: str, excited: bool = False, ctx: ToolContext | None = None) -> str:
    """Greet someone.

    Args:
        name: who to greet.
        excited: add an exclamation mark.
    """
    return f"hello {name}{'!' if excited else ''}"


def test_schema_from_hints_and_docstring_hides_the_context() -> None:
    fn = greet.definition()["function"]
    assert fn["name"] == "greet"
    assert fn["description"] == "Greet someone."
    params = fn["parameters"]
    assert params["required"] == ["name"]
    assert params["additionalProperties"] is False
    assert params["properties"]["name"] == {"description": "who to greet.", "type": "string"}
    assert "ctx" not in params["properties"]
    assert greet.takes_ctx


async def test_call_validates_and_injects_the_context() -> None:
    assert await greet({"name": "Ada", "excited": True}, ToolContext()) == "hello Ada!"
    with pytest.raises(ToolError, match="invalid arguments for greet: name: Field required"):
        await greet({}, ToolContext())


def test_names_are_unique() -> None:
    other = Tool(lambda name: name, name="greet")
    registry = ToolRegistry([greet])
    with pytest.raises(ConfigError, match="two tools are named 'greet'"):
        registry.register(other)
    with pytest.raises(ToolError, match="unknown tool 'nope'; available: greet"):
        registry.get("nope")


def test_tools_from_files_and_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "extra_tools.py"
    module.write_text(
        "from dytopo.tools import tool\n\n"
        "@tool\n"
        "def shout(text: str) -> str:\n"
        '    """Upper-case a text."""\n'
        "    return text.upper()\n"
    )
    fake = SimpleNamespace(load=lambda: greet)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [fake])
    registry = ToolRegistry.discover(["extra_tools.py"], tmp_path)
    assert {"shout", "greet", "calculator", "search_docs"} <= set(registry.names())


def test_a_missing_tool_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        ToolRegistry().load("no_such_module_anywhere")
