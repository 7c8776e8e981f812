"""Many runs of one topology: items x modes, one record per finished run, resumable.

    with RecordStore(out / "records.jsonl") as store:
        new = await run_batch(items, ["single", "dynamic"], topology, store,
                              traces_dir=out / "traces", grader=grade)

`run_one` is the unit of work (data in, a RunRecord out); `run_batch` runs the pairs `store` has
no record of, in order, on one server.
"""

from dytopo.batch.models import BatchItem, Key, RunRecord
from dytopo.batch.overrides import OVERRIDES, with_overrides
from dytopo.batch.run import Grader, pending, run_batch, run_one, trace_name
from dytopo.batch.store import RecordStore, latest, read_records

__all__ = [
    "OVERRIDES",
    "BatchItem",
    "Grader",
    "Key",
    "RecordStore",
    "RunRecord",
    "latest",
    "pending",
    "read_records",
    "run_batch",
    "run_one",
    "trace_name",
    "with_overrides",
]
