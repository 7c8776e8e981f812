"""Agents and the manager: their interfaces, role cards, prompts, replies, memory and work."""

from dytopo.agents.answer import AnswerSpec, Work
from dytopo.agents.base import Agent, AgentOutput, FunctionAgent, StepContext
from dytopo.agents.cards import RoleCard, load_card
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import (
    FinalAnswer,
    LLMManager,
    Manager,
    ManagerDecision,
    PublicMessage,
    TeamMember,
)
from dytopo.agents.memory import MemoryItem

__all__ = [
    "Agent",
    "AgentOutput",
    "AnswerSpec",
    "FinalAnswer",
    "FunctionAgent",
    "LLMAgent",
    "LLMManager",
    "Manager",
    "ManagerDecision",
    "MemoryItem",
    "PublicMessage",
    "RoleCard",
    "StepContext",
    "TeamMember",
    "Work",
    "load_card",
]
