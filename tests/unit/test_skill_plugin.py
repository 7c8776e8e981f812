"""The packaged plugin.json passes what AnythingLLM checks and what its loader relies on.

skill_manifest.schema.json is anything-llm's server/utils/agents/imported-manifest.schema.json
(commit 72aabbd15), unchanged; the loader itself (server/utils/agents/imported.js) checks less
than the schema says, and relies on more: both are tested here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dytopo.skill import SKILL_NAME, export_skill, skill_files

SCHEMA = json.loads(Path(__file__).with_name("skill_manifest.schema.json").read_text())
HARNESS = Path(__file__).with_name("skill_harness.cjs")


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(skill_files()["plugin.json"])
    return loaded


def test_manifest_matches_anythingllm_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(manifest())


def test_exported_presets_still_match_the_schema(tmp_path: Path) -> None:
    target = export_skill(tmp_path, url="http://127.0.0.1:1", token="t", timeout_s=5)
    jsonschema.Draft7Validator(SCHEMA).validate(json.loads((target / "plugin.json").read_text()))


def test_what_the_loader_relies_on() -> None:
    m = manifest()
    # handler.js is found at <hubId>/handler.js; the model calls the tool by hubId.
    assert m["hubId"] == m["name"] == SKILL_NAME
    assert m["active"] is True
    assert m["imported"] is True
    assert m["schema"] == "skill-1.0.0"
    assert m["entrypoint"]["file"] == "handler.js"
    params = m["entrypoint"]["params"]
    assert set(params) == {"task", "topology"}
    assert all(p["type"] in {"string", "number", "boolean"} for p in params.values())
    for name, arg in m["setup_args"].items():
        # Runtime value is `value || default || null`; a required arg without value is dropped.
        # The UI saves only values whose typeof equals `type`: text inputs give strings.
        assert arg["type"] == "string", name
        assert isinstance(arg["value"], str), name
        assert not arg["required"], name
        assert arg["value"] == arg["input"]["default"], name
    for example in m["examples"]:
        call = json.loads(example["call"])  # a JSON string of the arguments
        assert isinstance(call, dict)
        assert "task" in call
        assert set(call) <= set(params)  # additionalProperties: false


def test_handler_reads_only_declared_settings() -> None:
    handler = skill_files()["handler.js"].decode()
    read = set(re.findall(r'text\("(DYTOPO_[A-Z_]+)"\)', handler))
    # DYTOPO_POLL_S is an undeclared tuning knob (tests poll fast); it has a constant default.
    assert read - {"DYTOPO_POLL_S"} == set(manifest()["setup_args"])
    assert "module.exports.runtime" in handler
    assert "handler: async function" in handler


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (18+) on PATH")
def test_the_loader_code_path_loads_it(tmp_path: Path) -> None:
    """Loaded by the loader's own functions: the model sees this tool and these defaults."""
    export_skill(tmp_path)
    proc = subprocess.run(
        ["node", str(HARNESS), str(tmp_path), SKILL_NAME, json.dumps({"task": 1})],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["active"] == [f"@@{SKILL_NAME}"]
    assert report["tool"]["name"] == SKILL_NAME
    assert report["tool"]["parameters"]["properties"] == manifest()["entrypoint"]["params"]
    assert report["runtimeArgs"] == {
        "DYTOPO_URL": "http://host.docker.internal:8765",
        "DYTOPO_TOKEN": None,  # "" || undefined || null
        "DYTOPO_TOPOLOGY": "research",
        "DYTOPO_TIMEOUT_S": "1800",
    }
    assert report["resultType"] == "string"
