"""The llama.cpp server client (also speaks to any OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog

from dytopo.backends.base import Backend, estimate_tokens
from dytopo.backends.http import HttpTransport, build_client
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.settings import BackendSettings
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ServerInfo,
    Timings,
    ToolCall,
    Usage,
)
from dytopo.errors import BackendError, ConfigError, MalformedReply

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

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [m.to_openai() for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": stream,
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
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await self.connect()
        body = self._body(request, stream=False)
        async with self.limiter:
            started = time.monotonic()
            response, attempts = await self.http.send("POST", "/v1/chat/completions", json=body)
            wall = time.monotonic() - started
        self.http.raise_for_status(response, "/v1/chat/completions")
        try:
            reply = parse_chat_completion(response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise MalformedReply(
                f"unreadable chat completion from {self.base_url}: {exc}",
                url=self.http.url("/v1/chat/completions"),
                status=response.status_code,
                body=response.text[:2000],
            ) from exc
        reply.attempts, reply.wall_s = attempts, wall
        self._usage = self._usage + reply.usage
        log.debug(
            "backend.chat",
            tag=request.tag,
            attempts=attempts,
            wall_s=round(wall, 3),
            prompt=reply.usage.prompt_tokens,
            completion=reply.usage.completion_tokens,
        )
        return reply

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[str]]:
        await self.connect()
        body = self._body(request, stream=True)
        url = self.http.url("/v1/chat/completions")
        async with (
            self.limiter,
            self.http.client.stream("POST", url, json=body, headers=self.http._headers) as response,
        ):
            if response.status_code >= 400:
                await response.aread()
                self.http.raise_for_status(response, "/v1/chat/completions")
            yield self._deltas(response)

    async def _deltas(self, response: httpx.Response) -> AsyncIterator[str]:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if chunk.get("usage"):
                self._usage = self._usage + _usage(chunk)
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """Exact prompt tokens via the server's own template and tokenizer, cached by content."""
        info = await self.connect()
        if not info.llamacpp:
            return estimate_tokens(messages, tools)
        payload: dict[str, Any] = {"messages": [m.to_openai() for m in messages]}
        if tools:
            payload["tools"] = list(tools)
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
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


def _usage(payload: dict[str, Any]) -> Usage:
    u = payload.get("usage") or {}
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or (payload.get("timings") or {}).get("cache_n", 0)
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens", 0)),
        completion_tokens=int(u.get("completion_tokens", 0)),
        cached_tokens=int(cached or 0),
        requests=1,
    )


def parse_chat_completion(payload: dict[str, Any]) -> ChatResponse:
    """Read an OpenAI chat-completion object (llama-server adds `timings`)."""
    choice = payload["choices"][0]
    message = choice.get("message") or {}
    calls = [
        ToolCall(
            id=str(c.get("id") or ""),
            name=str(c["function"]["name"]),
            arguments=c["function"].get("arguments") or "{}",
        )
        for c in message.get("tool_calls") or []
    ]
    timings = payload.get("timings")
    return ChatResponse(
        content=message.get("content") or "",
        tool_calls=calls,
        finish_reason=str(choice.get("finish_reason") or "stop"),
        usage=_usage(payload),
        timings=Timings.model_validate(timings) if isinstance(timings, dict) else None,
    )
