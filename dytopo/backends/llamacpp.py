"""The llama.cpp server client (also speaks to any OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import structlog

from dytopo.backends.base import Backend, estimate_tokens
from dytopo.backends.http import (
    TRANSIENT_STATUS,
    HttpTransport,
    TransientStatus,
    build_client,
    error_for,
)
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.meter import admit, settle, spend_abandoned
from dytopo.backends.settings import BackendSettings
from dytopo.backends.sse import Assembler, events
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ServerInfo,
    Usage,
)
from dytopo.errors import BackendError, ConfigError

log = structlog.get_logger("dytopo.backend")

# Servers without /props (vLLM, Ollama, llama-cpp-python) get these unless configured.
FALLBACK_SLOTS = 1
FALLBACK_N_CTX = 4096


class LlamaCppBackend(Backend):
    """Chat completions against llama-server, never more requests in flight than it has slots."""

    def __init__(
        self, settings: BackendSettings | str, *, client: httpx.AsyncClient | None = None
    ) -> None:
        if isinstance(settings, str):
            settings = BackendSettings(base_url=settings)
        if not settings.base_url:
            raise ConfigError("backend.base_url is empty (set it, or use the embedded server)")
        self.settings = settings
        self._own_client = client is None
        self.http = HttpTransport(settings.base_url, settings, client or build_client(settings))
        self.limiter = SlotLimiter(settings.slots or FALLBACK_SLOTS)
        self._info: ServerInfo | None = None
        self._connect_lock = asyncio.Lock()
        self._usage = Usage()
        self._token_cache: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return self.http.base_url

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def info(self) -> ServerInfo:
        if self._info is None:
            raise RuntimeError("call `await backend.connect()` first")
        return self._info

    async def connect(self) -> ServerInfo:
        async with self._connect_lock:
            if self._info is None:
                self._info = await self._discover()
                self.limiter.resize(self._info.slots)
                log.info("backend.connected", **self._info.model_dump())
        return self._info

    async def _discover(self) -> ServerInfo:
        s = self.settings
        response, _ = await self.http.send("GET", "/props")
        if response.status_code == 200:
            props = response.json()
            gen = props.get("default_generation_settings", {})
            n_ctx = gen.get("n_ctx") or props.get("n_ctx")
            caps = props.get("chat_template_caps") or {}
            return ServerInfo(
                base_url=self.base_url,
                model=str(props.get("model_alias") or props.get("model_path") or "unknown"),
                slots=s.slots or int(props.get("total_slots", FALLBACK_SLOTS)),
                n_ctx_per_slot=s.n_ctx_per_slot or int(n_ctx or FALLBACK_N_CTX),
                supports_tools=caps.get("supports_tools"),
                llamacpp=True,
                build=str(props.get("build_info", "")),
            )
        # Not llama.cpp: learn the model name if we can, take the rest from config.
        models, _ = await self.http.send("GET", "/v1/models")
        model = s.model or "unknown"
        if models.status_code == 200:
            data = models.json().get("data") or [{}]
            model = s.model or str(data[0].get("id", "unknown"))
        if s.slots is None or s.n_ctx_per_slot is None:
            log.warning(
                "backend.no_props",
                url=self.base_url,
                slots=s.slots or FALLBACK_SLOTS,
                n_ctx_per_slot=s.n_ctx_per_slot or FALLBACK_N_CTX,
                fix="set backend.slots and backend.n_ctx_per_slot to the server's real values",
            )
        return ServerInfo(
            base_url=self.base_url,
            model=model,
            slots=s.slots or FALLBACK_SLOTS,
            n_ctx_per_slot=s.n_ctx_per_slot or FALLBACK_N_CTX,
            llamacpp=False,
        )

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [m.to_openai() for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sampling = request.sampling.model_dump(exclude_none=True)
        if self._info is not None and not self._info.llamacpp:
            sampling = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "seed")}
        body.update(sampling)
        if self.settings.model:
            body["model"] = self.settings.model
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "strict": True, "schema": request.json_schema},
            }
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice:
                body["tool_choice"] = request.tool_choice
        if request.stop:
            body["stop"] = request.stop
        return body

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await self.connect()
        await admit(self, request)  # the run's token cap (dytopo.backends.meter)
        body = self._body(request)
        path = "/v1/chat/completions"
        started: float | None = None

        async def once() -> ChatResponse:
            nonlocal started
            # The slot is held per attempt, never across a retry's backoff sleep: a request
            # waiting to retry must not keep the server's slot from everyone else.
            async with self.limiter:
                started = started or time.monotonic()
                assembler: Assembler | None = None
                try:
                    async with self._open(path, body) as response:
                        assembler = Assembler(str(response.url))
                        async for chunk in events(response):
                            assembler.feed(chunk)
                        return assembler.result()
                except BaseException:
                    # Accepted (the stream opened), never completed: the server did work no
                    # reply will report. A refused request or one cancelled before the server
                    # answered is not counted.
                    if assembler is not None:
                        self._abandoned(request, assembler)
                    raise

        reply, attempts = await self.http.retrying(path, once)
        assert started is not None  # set by the attempt that produced the reply
        reply.attempts, reply.wall_s = attempts, time.monotonic() - started
        self._usage = self._usage + reply.usage
        settle(reply.usage)
        log.debug(
            "backend.chat",
            tag=request.tag,
            attempts=attempts,
            wall_s=round(reply.wall_s, 3),
            prompt=reply.usage.prompt_tokens,
            cached=reply.usage.cached_tokens,
            completion=reply.usage.completion_tokens,
        )
        return reply

    def _abandoned(self, request: ChatRequest, assembler: Assembler | None) -> None:
        """Count a request that was sent and never completed: its prompt (exact when it was
        counted before, else estimated high) and the pieces that streamed, none cached."""
        known = self._token_cache.get(_count_key(request.messages, request.tools)[0])
        prompt = known or estimate_tokens(request.messages, request.tools)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=assembler.pieces if assembler is not None else 0,
            requests=1,
        )
        self._usage = self._usage + usage
        spend_abandoned(usage)

    @asynccontextmanager
    async def _open(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """POST a streaming request; error statuses raise (transient ones for the retry policy)."""
        async with self.http.client.stream(
            "POST", self.http.url(path), json=body, headers=self.http.headers
        ) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                if response.status_code in TRANSIENT_STATUS:
                    raise TransientStatus(response, text)
                raise error_for(response.status_code, text, self.http.url(path))
            yield response

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[str]]:
        """Text deltas as they arrive (no retry once tokens flow: they were already shown).

        Every failure, on opening or mid-stream (the server died, the stream was cut short),
        surfaces as a BackendError.
        """
        await self.connect()
        await admit(self, request)  # the run's token cap (dytopo.backends.meter)
        body = self._body(request)
        path = "/v1/chat/completions"
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.limiter)
            with self.http.translating(path):
                response = await stack.enter_async_context(self._open(path, body))
            assembler = Assembler(str(response.url))

            async def deltas() -> AsyncIterator[str]:
                with self.http.translating(path):
                    async for chunk in events(response):
                        text = assembler.feed(chunk)
                        if text:
                            yield text
                self._usage = self._usage + assembler.usage
                settle(assembler.usage)

            # Only the opening and the deltas are translated, never the caller's own code.
            yield deltas()

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """Exact prompt tokens via the server's own template and tokenizer, cached by content."""
        info = await self.connect()
        if not info.llamacpp:
            return estimate_tokens(messages, tools)
        key, payload = _count_key(messages, tools)
        if key not in self._token_cache:
            response, _ = await self.http.send("POST", "/apply-template", json=payload)
            self.http.raise_for_status(response, "/apply-template")
            prompt = response.json()["prompt"]
            self._token_cache[key] = len(await self.tokenize(prompt))
        return self._token_cache[key]

    async def tokenize(self, text: str) -> list[int]:
        """Token ids as the server tokenizes a prompt (special tokens parsed, BOS added)."""
        body = {"content": text, "add_special": True, "parse_special": True}
        response, _ = await self.http.send("POST", "/tokenize", json=body)
        self.http.raise_for_status(response, "/tokenize")
        return [t if isinstance(t, int) else t["id"] for t in response.json()["tokens"]]

    async def busy_slots(self) -> int:
        """Slots generating right now, per the server's /slots (llama.cpp only)."""
        response, _ = await self.http.send("GET", "/slots", retry=False)
        if response.status_code != 200:
            raise BackendError(
                f"{self.http.url('/slots')} answered HTTP {response.status_code} "
                "(start llama-server with --slots)",
                url=self.http.url("/slots"),
                status=response.status_code,
            )
        return sum(1 for s in response.json() if s.get("is_processing"))

    async def aclose(self) -> None:
        if self._own_client:
            await self.http.client.aclose()


def _count_key(
    messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None
) -> tuple[str, dict[str, Any]]:
    """The token cache's key for a prompt, and the /apply-template payload it hashes."""
    payload: dict[str, Any] = {"messages": [m.to_openai() for m in messages]}
    if tools:
        payload["tools"] = list(tools)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest(), payload
