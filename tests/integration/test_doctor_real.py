"""`dytopo doctor`'s prompt-cache check against the real embedded server."""

from __future__ import annotations

from dytopo.backends import LlamaCppBackend
from dytopo.doctor import DoctorReport, check_prompt_cache
from dytopo.managed import ManagedStack


async def test_the_embedded_server_reuses_a_repeated_prefix(stack: ManagedStack) -> None:
    report = DoctorReport(url=stack.chat_url)
    async with LlamaCppBackend(stack.chat_url) as backend:
        check = await check_prompt_cache(backend, report)
    assert check.ok
    assert not check.warning, check
    cache = report.prompt_cache
    # The ~470-token system prefix comes from the cache; only the question is processed.
    assert cache.prompt > 250
    assert cache.reused >= cache.prompt - 20
    assert check.detail == f"reused {cache.reused} of {cache.prompt} prompt tokens"
