"""The AnythingLLM agent skill `dytopo-swarm`: files shipped as package data, and their export."""

from dytopo.skill.export import SKILL_FILES, SKILL_NAME, export_skill, render_skill, skill_files

__all__ = ["SKILL_FILES", "SKILL_NAME", "export_skill", "render_skill", "skill_files"]
