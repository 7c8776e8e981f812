"""The round loop: a run's rounds, steps, delivery, state, checkpoints, trace and result."""

from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import HaltReason, RoundRecord, RunResult
from dytopo.swarm.trace import Observer

__all__ = ["HaltReason", "Observer", "RoundRecord", "RunResult", "Swarm"]
