"""The batch record file: durable appends, a torn last line skipped, one writer, pinned settings;
and the topology variants a batch runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dytopo.batch import BatchItem, RecordStore, RunRecord, pending, read_records, with_overrides
from dytopo.errors import ConfigError, RunInUse
from dytopo.loader import load_topology

ROOT = Path(__file__).resolve().parents[2]


def record(item: str, mode: str = "dynamic") -> RunRecord:
    return RunRecord.model_validate({"item": item, "mode": mode, "ok": True, "final_answer": "x"})


def test_records_read_back_in_order_and_their_keys_are_done(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    with RecordStore(path) as store:
        store.append(record("a"))
        store.append(record("a", "single"))
        store.append(record("b"))

        assert [r.key for r in read_records(path)] == [
            ("a", "dynamic"),
            ("a", "single"),
            ("b", "dynamic"),
        ]
        assert store.done() == {("a", "dynamic"), ("a", "single"), ("b", "dynamic")}


def test_a_torn_last_line_is_skipped_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    whole = record("a").model_dump_json() + "\n"
    path.write_text(whole + record("b").model_dump_json()[:40])  # killed mid-write

    assert [r.item for r in read_records(path)] == ["a"]
    with RecordStore(path) as store:
        assert store.done() == {("a", "dynamic")}
        store.append(record("c"))
    assert path.read_text() == whole + record("c").model_dump_json() + "\n"


def test_a_damaged_line_in_the_middle_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(
        record("a").model_dump_json() + "\n{oops\n" + record("b").model_dump_json() + "\n"
    )

    with pytest.raises(ConfigError, match=r"records.jsonl:2: not a run record"):
        read_records(path)


def test_one_process_writes_a_record_file(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordStore(path), pytest.raises(RunInUse, match="another dytopo process"):
        RecordStore(path).__enter__()
    with RecordStore(path) as store:  # free again
        store.append(record("a"))


def test_pinned_settings_must_match_on_a_later_run(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordStore(path) as store:
        store.pin({"benchmark": "humaneval", "topology": {"max_rounds": 3, "seed": 7}})
    with RecordStore(path) as store:
        store.pin({"benchmark": "humaneval", "topology": {"max_rounds": 3, "seed": 7}})
        with pytest.raises(ConfigError, match=r"topology.max_rounds \(3 -> 1\)"):
            store.pin({"benchmark": "humaneval", "topology": {"max_rounds": 1, "seed": 7}})
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["topology"]["max_rounds"] == 3


def test_a_setting_added_by_a_newer_version_does_not_stop_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordStore(path) as store:
        store.pin({"topology": {"max_rounds": 3, "routing": {"tau": 0.3}}})
    with RecordStore(path) as store:
        store.pin({"topology": {"max_rounds": 3, "routing": {"tau": 0.3, "top_k": 4}}})
        with pytest.raises(ConfigError, match=r"topology.routing.tau \(0.3 -> 0.5\)"):
            store.pin({"topology": {"max_rounds": 3, "routing": {"tau": 0.5, "top_k": 4}}})


def test_pending_goes_item_by_item_and_skips_done_pairs() -> None:
    items = [BatchItem(id=i, task=f"task {i}") for i in ("a", "b")]

    todo = pending(items, ["single", "dynamic"], {("a", "single")})

    assert [(i.id, m) for i, m in todo] == [("a", "dynamic"), ("b", "single"), ("b", "dynamic")]


def test_overrides_make_a_validated_variant() -> None:
    base = load_topology(ROOT / "topologies" / "humaneval.yaml")

    variant = with_overrides(base, "chain", {"rounds": 1, "seed": 3, "tau": 0.5})

    assert (variant.routing.mode, variant.max_rounds, variant.min_rounds) == ("chain", 1, 1)
    assert (variant.seed, variant.routing.tau) == (3, 0.5)
    assert base.routing.mode == "dynamic"  # the base is untouched
    with pytest.raises(ConfigError, match="unknown override temperature"):
        with_overrides(base, None, {"temperature": 0.1})
    with pytest.raises(ConfigError, match="max_rounds 0"):
        with_overrides(base, None, {"rounds": 0})
    with pytest.raises(ConfigError, match=r"routing\.mode 'ring'"):
        with_overrides(base, "ring")
