"""The built-in tools (tools/*.py): each refuses hostile input and does its job on good input."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "examples" / "docs"


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    reg.load(str(ROOT / "tools"))
    return reg


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """notes.md, sub/inner.txt, a binary file, and links into and out of the workspace."""
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "notes.md").write_text("# Notes\nhello from the workspace\n")
    (ws / "sub" / "inner.txt").write_text("inner text")
    (ws / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET")
    (ws / "link_out").symlink_to(outside / "secret.txt")
    (ws / "dir_out").symlink_to(outside)
    (ws / "link_in").symlink_to(ws / "notes.md")
    return ws


async def call(registry: ToolRegistry, name: str, ctx: ToolContext, **arguments: Any) -> str:
    return await registry.get(name)(arguments, ctx)


def test_all_builtin_tools_load_and_hide_ctx(registry: ToolRegistry) -> None:
    names = ["calculator", "http_get", "list_files", "read_file", "run_python", "search_docs"]
    assert registry.names() == names
    for name in names:
        params = registry.get(name).definition()["function"]["parameters"]
        assert "ctx" not in params["properties"]
        assert all(p.get("description") for p in params["properties"].values())


# --- read_file / list_files --------------------------------------------------------------


async def test_read_file_reads_text(registry: ToolRegistry, workspace: Path) -> None:
    ctx = ToolContext(workspace=workspace)
    assert "hello from the workspace" in await call(registry, "read_file", ctx, path="notes.md")
    assert await call(registry, "read_file", ctx, path="sub/inner.txt") == "inner text"
    # An absolute path is fine when it resolves inside the workspace, and so is a link that does.
    inside = str(workspace / "sub" / "inner.txt")
    assert await call(registry, "read_file", ctx, path=inside) == "inner text"
    assert "hello" in await call(registry, "read_file", ctx, path="link_in")


@pytest.mark.parametrize(
    "path",
    ["../outside/secret.txt", "sub/../../outside/secret.txt", "/etc/passwd", "link_out",
     "dir_out/secret.txt"],
)  # fmt: skip
async def test_read_file_refuses_escapes(
    registry: ToolRegistry, workspace: Path, path: str
) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        await call(registry, "read_file", ToolContext(workspace=workspace), path=path)


async def test_read_file_refuses_absolute_path_outside(
    registry: ToolRegistry, workspace: Path
) -> None:
    secret = str(workspace.parent / "outside" / "secret.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        await call(registry, "read_file", ToolContext(workspace=workspace), path=secret)


async def test_read_file_refuses_binary_big_missing_and_folders(
    registry: ToolRegistry, workspace: Path
) -> None:
    ctx = ToolContext(workspace=workspace, max_bytes=1024)
    with pytest.raises(ToolError, match="binary"):
        await call(registry, "read_file", ctx, path="image.bin")
    (workspace / "big.txt").write_text("x" * 5000)
    with pytest.raises(ToolError, match="over read_file's limit of 1024 bytes"):
        await call(registry, "read_file", ctx, path="big.txt")
    with pytest.raises(ToolError, match="no file"):
        await call(registry, "read_file", ctx, path="nope.md")
    with pytest.raises(ToolError, match="is a folder"):
        await call(registry, "read_file", ctx, path="sub")


async def test_read_file_does_not_hang_on_a_fifo(registry: ToolRegistry, workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await call(registry, "read_file", ToolContext(workspace=workspace), path="pipe")


async def test_list_files_lists_sorted_and_hides_links_out(
    registry: ToolRegistry, workspace: Path
) -> None:
    ctx = ToolContext(workspace=workspace)
    listing = (await call(registry, "list_files", ctx)).splitlines()
    assert listing == [
        "image.bin",
        "link_in",
        "notes.md",
        "sub/",
        "(2 symlinks leading outside the workspace are not shown)",
    ]
    assert await call(registry, "list_files", ctx, path="sub") == "sub/inner.txt"


@pytest.mark.parametrize("path", ["..", "/etc", "dir_out", "sub/../.."])
async def test_list_files_refuses_escapes(
    registry: ToolRegistry, workspace: Path, path: str
) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        await call(registry, "list_files", ToolContext(workspace=workspace), path=path)


async def test_list_files_caps_the_listing(registry: ToolRegistry, tmp_path: Path) -> None:
    for i in range(350):
        (tmp_path / f"f{i:03d}.txt").touch()
    lines = (await call(registry, "list_files", ToolContext(workspace=tmp_path))).splitlines()
    assert len(lines) == 301
    assert lines[0] == "f000.txt"
    assert lines[-1].startswith("... 50 more entries")


async def test_list_files_survives_symlink_loops(registry: ToolRegistry, workspace: Path) -> None:
    (workspace / "loop_a").symlink_to("loop_b")
    (workspace / "loop_b").symlink_to("loop_a")
    (workspace / "sub" / "self").symlink_to("self")
    ctx = ToolContext(workspace=workspace)
    listing = (await call(registry, "list_files", ctx)).splitlines()
    assert listing[:5] == [
        "image.bin",
        "link_in",
        "loop_a (symlink loop)",
        "loop_b (symlink loop)",
        "notes.md",
    ]
    assert await call(registry, "list_files", ctx, path="sub") == (
        "sub/inner.txt\nsub/self (symlink loop)"
    )
    with pytest.raises(ToolError, match="symlink loop"):
        await call(registry, "read_file", ctx, path="loop_a")
    with pytest.raises(ToolError, match="symlink loop"):
        await call(registry, "list_files", ctx, path="sub/self")


async def test_links_leading_out_are_never_followed(
    registry: ToolRegistry, workspace: Path
) -> None:
    outside = workspace.parent / "outside"
    (outside / "deeper").mkdir()
    (outside / "deeper" / "plans.txt").write_text("TOP SECRET PLANS")
    (workspace / "hop").symlink_to("link_out")  # inside -> inside -> outside
    (workspace / "sub" / "up").symlink_to("../../outside")  # relative
    (workspace / "root").symlink_to("/")  # absolute
    ctx = ToolContext(workspace=workspace)
    listing = await call(registry, "list_files", ctx)
    assert "(4 symlinks leading outside the workspace are not shown)" in listing
    assert "hop" not in listing
    assert "root" not in listing
    assert "secret" not in listing.lower()
    assert "secret" not in (await call(registry, "list_files", ctx, path="sub")).lower()
    for path in ["hop", "sub/up/secret.txt", "sub/up/deeper/plans.txt", "root/etc/passwd"]:
        with pytest.raises(ToolError, match="outside the workspace"):
            await call(registry, "read_file", ctx, path=path)
    for path in ["sub/up", "sub/up/deeper", "root", "root/etc"]:
        with pytest.raises(ToolError, match="outside the workspace"):
            await call(registry, "list_files", ctx, path=path)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the check reads /proc")
@pytest.mark.parametrize(
    ("tool", "path"), [("read_file", "sub/deep/plans.txt"), ("list_files", "sub/deep")]
)
async def test_a_folder_swapped_for_a_link_after_the_check_is_caught(
    registry: ToolRegistry,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    path: str,
) -> None:
    """The race: `sub` passes the check, then becomes a link out before the file is opened."""
    (workspace / "sub" / "deep").mkdir()
    (workspace / "sub" / "deep" / "plans.txt").write_text("public plans")
    outside = workspace.parent / "outside"
    (outside / "deep").mkdir()
    (outside / "deep" / "plans.txt").write_text("STOLEN")
    module = sys.modules[registry.get(tool).fn.__module__]
    confine = module._confine

    def confine_then_swap(path: str, root: Path) -> Path:
        real = confine(path, root)
        (workspace / "sub").rename(workspace.parent / "old_sub")
        (workspace / "sub").symlink_to(outside)
        return real

    monkeypatch.setattr(module, "_confine", confine_then_swap)
    with pytest.raises(ToolError, match="outside the workspace"):
        await call(registry, tool, ToolContext(workspace=workspace), path=path)


# --- calculator ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 * (3 + 4) ** 2", "98"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16) + log(e)", "5"),
        ("max(3, 7.5, -1) - min(2, 4)", "5.5"),
        ("round(2.567, 2)", "2.57"),
        ("-2 ** 2", "-4"),
        ("7 // 2 + 7 % 2", "4"),
        ("floor(pi) + ceil(e) + abs(-1)", "7"),
        ("2 ** 100", str(2**100)),
        ("2 ** -1", "0.5"),
        ("-" * 490 + "1", "1"),  # deep but legal
    ],
)
async def test_calculator_computes(registry: ToolRegistry, expression: str, expected: str) -> None:
    assert await call(registry, "calculator", ToolContext(), expression=expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('x')", "calling __import__"),
        ("(1).real", "attribute access"),
        ("().__class__", "attribute access"),
        ("x + 1", "the name 'x'"),
        ("open('f')", "calling open"),
        ("'a' * 3", "the literal 'a'"),
        ("[1][0]", "subscripts"),
        ("[i for i in (1, 2)]", "ListComp"),
        ("lambda: 1", "Lambda"),
        ("True + 1", "the literal True"),
        ("1 << 5", "LShift"),
        ("9 ** 9 ** 9", "more than 10000 bits"),
        ("(10 ** 1000) ** 1000", "more than 10000 bits"),
        ("(2 ** 5000) * (2 ** 5000) * 4", "product of more than"),
        ("round(1, -10 ** 9)", "round"),
        ("1 / 0", "division by zero"),
        ("1e308 * 10", "too large"),
        ("exp(1000)", "too large"),
        ("sqrt(-1)", "math domain error"),
        ("(-8) ** (1 / 3)", "complex"),
        ("1 +", "cannot parse"),
        ("\ud800", "cannot read the character '\\\\ud800' at position 0: .* lone surrogate"),
        ("2 * \udfff", "at position 4"),
        ("1\x00", "cannot parse the expression: source code string cannot contain null bytes"),
        ("1if 1 else 2", "cannot parse the expression: invalid decimal literal"),
        ("'\\d'", "invalid escape sequence"),
        ("(" * 201 + "1" + ")" * 201, "cannot parse the expression: too many nested"),
        ("1 + " * 200 + "1", "at most 500 characters"),
    ],
)
async def test_calculator_refuses(registry: ToolRegistry, expression: str, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ToolError, match=message):
        await call(registry, "calculator", ToolContext(), expression=expression)
    assert time.perf_counter() - start < 1.0  # refused before any heavy work


async def test_calculator_parse_warnings_become_the_refusal(registry: ToolRegistry) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ToolError, match="cannot parse the expression: invalid decimal literal"):
            await call(registry, "calculator", ToolContext(), expression="1if 1 else 2")
    assert caught == []  # no SyntaxWarning printed to the user's terminal


_ARITHMETIC = st.sampled_from(
    [*"0123456789.+-*/%(), e", "**", "//", "1e308", "2**9999", "sqrt(", "log(", "round(", "max(",
     "min(", "floor(", "exp(", "pi", "j", "x", "'", "[0]", ".real", "not ", "~", " if ", "\x00",
     "\ud800", "0x", "1_0", "inf", "True", "lambda:", "\\"]
)  # fmt: skip


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(st.text(max_size=80), st.lists(_ARITHMETIC, max_size=40).map("".join)))
def test_calculator_answers_or_refuses_every_input(registry: ToolRegistry, expression: str) -> None:
    calculate = registry.get("calculator").fn
    try:
        result = calculate(expression)
    except ToolError as exc:  # anything else escaping is a bug
        message = str(exc)
        assert "\n" not in message
        message.encode("utf-8")  # printable: no lone surrogate copied from the input
    else:
        assert isinstance(result, str)
        float(result)


# --- run_python -----------------------------------------------------------------------------


def sandbox_ctx(tmp_path: Path, timeout_s: float = 5) -> ToolContext:
    return ToolContext(workspace=tmp_path, timeout_s=timeout_s, python_memory_mb=128)


async def test_run_python_runs_code(registry: ToolRegistry, tmp_path: Path) -> None:
    result = await call(registry, "run_python", sandbox_ctx(tmp_path), code="print(sum(range(10)))")
    assert result == "[exit status 0]\n45\n"
    failed = await call(registry, "run_python", sandbox_ctx(tmp_path), code="1 / 0")
    assert failed.startswith("[exit status 1]")
    assert "ZeroDivisionError" in failed
    assert "_sandbox" not in failed.splitlines()[2]  # the traceback starts at the snippet


async def test_run_python_kills_an_infinite_loop(
    registry: ToolRegistry, tmp_path: Path, new_children: Callable[[], list[psutil.Process]]
) -> None:
    code = "import os\nprint(os.getpid())\nwhile True:\n    pass\n"
    start = time.perf_counter()
    result = await call(registry, "run_python", sandbox_ctx(tmp_path, timeout_s=1), code=code)
    assert time.perf_counter() - start < 4
    assert result.splitlines()[0] == "[timed out after 1 s: the process was killed]"
    assert new_children() == []  # the sandbox is gone, and reaped


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10 ** 10)", "x = []\nwhile True:\n    x.append(bytearray(10 ** 6))"],
)
async def test_run_python_stops_a_memory_bomb(
    registry: ToolRegistry, tmp_path: Path, code: str
) -> None:
    start = time.perf_counter()
    result = await call(registry, "run_python", sandbox_ctx(tmp_path, timeout_s=3), code=code)
    assert time.perf_counter() - start < 3
    assert result.startswith("[exit status 1]")
    assert "MemoryError: the code exceeded its 128 MB memory limit" in result


async def test_run_python_has_no_network(registry: ToolRegistry, tmp_path: Path) -> None:
    code = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n"
    result = await call(registry, "run_python", sandbox_ctx(tmp_path), code=code)
    assert result.startswith("[exit status 1]")
    assert "ConnectionRefusedError" in result  # its own empty network namespace


async def test_run_python_starts_in_a_fresh_scratch_folder(
    registry: ToolRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYTOPO_TEST_SECRET", "s3cret")
    code = (
        "import os\nprint(os.getcwd())\nprint(os.listdir('.'))\nprint(sorted(os.environ))\n"
        "open('scratch.txt', 'w').write('fine')\nprint(open('scratch.txt').read())\n"
    )
    for _ in range(2):  # the second run does not see the first one's file
        result = await call(registry, "run_python", sandbox_ctx(tmp_path), code=code)
        status, cwd, listing, env, wrote = result.splitlines()
        assert status == "[exit status 0]"
        assert cwd == "/scratch"
        assert listing == "[]"
        assert "DYTOPO_TEST_SECRET" not in env
        assert wrote == "fine"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("open({outside!r}, 'w').write('x')", "FileNotFoundError"),
        ("open({workspace_file!r}).read()", "FileNotFoundError"),
        ("open('../escape.txt', 'w')", "Read-only file system"),
        ("import subprocess\nsubprocess.run(['true'])", "FileNotFoundError"),
        ("import os\nassert os.system('true') == 0, 'no shell'", "AssertionError: no shell"),
        ("import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) == 0, 'no'", "Error: no"),
        ("import os\nos.chdir('/')\nopen('x', 'w')", "Read-only file system"),
    ],
)
async def test_run_python_refuses_escapes(
    registry: ToolRegistry, tmp_path: Path, code: str, message: str
) -> None:
    outside = tmp_path / "escape.txt"
    workspace_file = tmp_path / "data.txt"
    workspace_file.write_text("private")
    code = code.format(outside=str(outside), workspace_file=str(workspace_file))
    result = await call(registry, "run_python", sandbox_ctx(tmp_path), code=code)
    assert result.startswith("[exit status 1]")
    assert message in result
    assert not outside.exists()


async def test_run_python_refuses_empty_code(registry: ToolRegistry, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="needs some code"):
        await call(registry, "run_python", sandbox_ctx(tmp_path), code="   ")


# --- http_get (more in test_http_get.py) ------------------------------------------------------

PUBLIC_IP = "93.184.216.34"


def page(mime: str, body: bytes) -> httpx.Response:
    # stream=: a content= body is read (and decoded) by httpx on construction; http_get reads raw.
    return httpx.Response(200, headers={"content-type": mime}, stream=httpx.ByteStream(body))


@pytest.fixture
def web(registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fake web behind httpx.MockTransport; returns the list of URLs requested."""
    seen: list[str] = []
    pages: dict[str, httpx.Response] = {
        "https://docs.example.org/page": page(
            "text/html; charset=utf-8",
            b"<html><head><title>t</title><script>evil()</script></head>"
            b"<body><h1>Caching</h1><p>LRU evicts the least recently used entry.</p></body></html>",
        ),
        "https://docs.example.org/moved": httpx.Response(301, headers={"location": "/page"}),
        "https://docs.example.org/away": httpx.Response(
            302, headers={"location": "https://evil.com/steal"}
        ),
        "https://docs.example.org/loop": httpx.Response(302, headers={"location": "/loop"}),
        "https://docs.example.org/image": page("image/png", b"\x89PNG"),
        "https://docs.example.org/big": page("text/plain", b"a" * 5000),
        "https://docs.example.org/missing": httpx.Response(404),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        # http_get connects to the address it checked and names the host in the Host header.
        assert request.url.host == PUBLIC_IP
        named = f"{request.url.scheme}://{request.headers['host']}{request.url.raw_path.decode()}"
        seen.append(named)
        return pages.get(named, httpx.Response(404))

    async def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_IP]

    module = sys.modules[registry.get("http_get").fn.__module__]
    network = module.Network(transport=httpx.MockTransport(handler), resolve=resolve)
    monkeypatch.setattr(module, "_network", network)
    return seen


def web_ctx(**overrides: Any) -> ToolContext:
    return ToolContext(http_allow=["*.example.org", "api.test"], **overrides)


async def test_http_get_fetches_text_from_an_allowed_host(
    registry: ToolRegistry, web: list[str]
) -> None:
    result = await call(registry, "http_get", web_ctx(), url="https://docs.example.org/moved")
    assert result.startswith("URL: https://docs.example.org/page\nStatus: 200")
    assert "Caching\nLRU evicts the least recently used entry." in result
    assert "evil()" not in result  # scripts are dropped with the markup
    assert web == ["https://docs.example.org/moved", "https://docs.example.org/page"]


async def test_http_get_cuts_the_body(registry: ToolRegistry, web: list[str]) -> None:
    ctx = web_ctx(max_bytes=1024)
    result = await call(registry, "http_get", ctx, url="https://docs.example.org/big")
    assert "(cut at 1024 bytes)" in result
    assert result.endswith("\n\n" + "a" * 1024)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.com/", "host 'evil.com' is not allowed"),
        ("https://example.org/", "host 'example.org' is not allowed"),  # the wildcard's parent
        ("https://evilexample.org/", "not allowed"),
        ("https://api.test.evil.com/", "not allowed"),
        ("file:///etc/passwd", "http:// and https:// URLs only"),
        ("ftp://docs.example.org/x", "http:// and https:// URLs only"),
        ("http://docs.example.org@evil.com/", "user name or password"),
        ("http://user:pw@docs.example.org/", "user name or password"),
        ("http://evil.com\\@docs.example.org/", "user name or password"),
        ("docs.example.org/page", "only"),
        ("https://docs.example.org/away", "redirected to 'https://evil.com/steal'"),
        ("https://docs.example.org/loop", "more than 3 times"),
        ("https://docs.example.org/image", "image/png, not text"),
        ("https://docs.example.org/missing", "HTTP 404"),
    ],
)
async def test_http_get_refuses(
    registry: ToolRegistry, web: list[str], url: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await call(registry, "http_get", web_ctx(), url=url)
    assert not any("evil" in seen for seen in web)


async def test_http_get_is_off_without_an_allowlist(registry: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="disabled"):
        await call(registry, "http_get", ToolContext(), url="https://docs.example.org/")


# --- search_docs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("thundering herd request coalescing", "cache-stampede.md"),
        ("count-min sketch frequency", "lfu-eviction.md"),
        ("write-behind dirty entries durability", "write-policies.md"),
        ("doubly linked list recency", "lru-eviction.md"),
        ("surrogate keys purge edge", "cdn-caching.md"),
        ("keyspace_hits misses counters", "measuring-hit-rate.md"),
        ("TTL jitter versioned keys", "invalidation-and-ttl.md"),
    ],
)
async def test_search_docs_finds_the_right_file(
    registry: ToolRegistry, tmp_path: Path, query: str, source: str
) -> None:
    ctx = ToolContext(workspace=tmp_path, docs_dir=DOCS)
    result = await call(registry, "search_docs", ctx, query=query, k=1)
    assert result.startswith(f"[1] {source} (score ")
    assert "[2]" not in result


async def test_search_docs_bounds_k(registry: ToolRegistry, tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, docs_dir=DOCS)
    many = await call(registry, "search_docs", ctx, query="cache", k=50)
    assert "[10]" in many
    assert "[11]" not in many
    one = await call(registry, "search_docs", ctx, query="cache", k=0)
    assert "[1]" in one
    assert "[2]" not in one


async def test_search_docs_caches_and_notices_changes(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Bloom filters answer membership queries.")
    ctx = ToolContext(workspace=tmp_path, docs_dir=docs)
    module = sys.modules[registry.get("search_docs").fn.__module__]
    assert "a.md" in await call(registry, "search_docs", ctx, query="bloom filter")
    index = module._cache[(str(docs.resolve()), ctx.max_bytes)][1]
    await call(registry, "search_docs", ctx, query="membership")
    assert module._cache[(str(docs.resolve()), ctx.max_bytes)][1] is index  # reused
    (docs / "b.txt").write_text("Consistent hashing spreads keys over cache nodes.")
    assert "b.txt" in await call(registry, "search_docs", ctx, query="consistent hashing")


async def test_search_docs_stays_in_its_folder(registry: ToolRegistry, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Ordinary notes about caches.")
    (tmp_path / "secret.md").write_text("The launch code is swordfish.")
    (docs / "leak.md").symlink_to(tmp_path / "secret.md")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "h.md").write_text("swordfish again")
    (docs / "blob.md").write_bytes(b"swordfish\x00\x01")
    ctx = ToolContext(workspace=tmp_path, docs_dir=docs)
    result = await call(registry, "search_docs", ctx, query="swordfish")
    assert result.startswith("no passage matches")


async def test_search_docs_refusals(registry: ToolRegistry, tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, docs_dir=DOCS)
    with pytest.raises(ToolError, match="no searchable words"):
        await call(registry, "search_docs", ctx, query="the of and")
    missing = ToolContext(workspace=tmp_path, docs_dir=tmp_path / "nope")
    with pytest.raises(ToolError, match="does not exist"):
        await call(registry, "search_docs", missing, query="cache")
    with pytest.raises(ToolError, match=r"no \.md, \.txt or \.rst files"):
        await call(registry, "search_docs", ToolContext(workspace=tmp_path), query="cache")
