"""read_file and list_files: text files of the workspace, and nothing outside it.

Confinement is decided on the *resolved* path (every symlink followed, every `..` collapsed), so
`../x`, `/etc/passwd` and a link pointing out of the workspace all land outside and are refused.
"""

from __future__ import annotations

import os
import stat
from itertools import islice
from pathlib import Path

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, tool

MAX_ENTRIES = 300
# Names read from one folder before sorting: bounds the time a huge folder can cost.
SCAN_LIMIT = 10_000
_HINT = "use a path relative to the workspace, e.g. 'notes.md' (list_files shows what is there)"


def _shown_name(name: str) -> str:
    """A file name as text a prompt can carry: bytes that are not UTF-8 appear as \\xNN (the
    name as read holds lone surrogates instead, which no request to the server can encode)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _workspace(ctx: ToolContext) -> Path:
    try:
        return ctx.workspace.resolve(strict=True)
    except OSError:
        raise ToolError(f"the workspace folder {ctx.workspace} does not exist") from None


def _confine(path: str, root: Path) -> Path:
    """The real path of `path`, or ToolError if it is anywhere but inside `root`."""
    if "\x00" in path:
        raise ToolError("the path contains a NUL character")
    try:
        os.fsencode(path)
    except UnicodeEncodeError as exc:  # a lone surrogate: no file name is spelt that way
        raise ToolError(
            f"the path has a character that is not valid Unicode at position {exc.start}"
        ) from None
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        raise ToolError(f"{path!r} cannot be resolved (a symlink loop?)") from None
    if not real.is_relative_to(root):
        raise ToolError(f"{path!r} is outside the workspace; {_HINT}")
    return real


def _open_inside(path: str, real: Path, root: Path, flags: int) -> int:
    """Open a confined path and check where the descriptor really points (Linux: /proc).

    `real` was resolved a moment ago, but a folder on the way could since have been swapped for
    a link leading out; O_NOFOLLOW guards only the last component.
    """
    fd = os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc (not Linux): the resolution above is all there is
        return fd
    if not opened.is_relative_to(root):
        os.close(fd)
        raise ToolError(f"{path!r} is outside the workspace (a link changed on the way); {_HINT}")
    return fd


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes; one past the size limit, so a file that grew since fstat is caught."""
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


@tool
def read_file(path: str, ctx: ToolContext) -> str:
    """Read a text file of the workspace.

    Args:
        path: the file, relative to the workspace, e.g. "notes/plan.md".
    """
    root = _workspace(ctx)
    real = _confine(path, root)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the tool; regular files ignore the flag.
        fd = _open_inside(path, real, root, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ToolError(f"there is no file {path!r}; {_HINT}") from None
    except OSError as exc:
        raise ToolError(f"cannot read {path!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{path!r} is a folder; use list_files to see inside it")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{path!r} is not a regular file; read_file reads text files only")
        data = _read_at_most(fd, ctx.max_bytes + 1) if info.st_size <= ctx.max_bytes else b""
    finally:
        os.close(fd)
    if info.st_size > ctx.max_bytes or len(data) > ctx.max_bytes:
        raise ToolError(
            f"{path!r} is {max(info.st_size, len(data))} bytes, over read_file's limit of "
            f"{ctx.max_bytes} bytes"
        )
    if b"\x00" in data:
        raise ToolError(f"{path!r} looks binary (it contains NUL bytes); read_file reads text only")
    return data.decode("utf-8", errors="replace") or "(empty file)"


def _link_kind(link: Path, root: Path) -> str:
    """ "dir" or "file" for a link that stays inside, "outside", or "loop" (nowhere to go)."""
    try:
        target = link.resolve(strict=False)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return "loop"
    if not target.is_relative_to(root):
        return "outside"
    return "dir" if target.is_dir() else "file"


@tool
def list_files(path: str = ".", *, ctx: ToolContext) -> str:
    """List a folder of the workspace: one entry per line, folders end with "/".

    Args:
        path: the folder, relative to the workspace; "." is the workspace itself.
    """
    root = _workspace(ctx)
    folder = _confine(path, root)
    try:
        is_folder = folder.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ToolError(f"cannot list {path!r}: {exc.strerror}") from None
    if not is_folder:
        raise ToolError(f"{path!r} is not a folder; {_HINT}")
    try:
        fd = _open_inside(path, folder, root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ToolError(f"cannot list {path!r}: {exc.strerror}") from None
    try:
        with os.scandir(fd) as entries:
            found = sorted(islice(entries, SCAN_LIMIT), key=lambda e: e.name)
    except OSError as exc:
        raise ToolError(f"cannot list {path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    lines: list[str] = []
    hidden = 0
    for entry in found:
        if len(lines) == MAX_ENTRIES:
            break
        shown = _shown_name((folder / entry.name).relative_to(root).as_posix())
        if entry.is_symlink():
            kind = _link_kind(folder / entry.name, root)
            if kind == "outside":
                hidden += 1  # naming the target would already leak what lies outside
                continue
            lines.append(shown + {"dir": "/", "file": "", "loop": " (symlink loop)"}[kind])
        else:
            lines.append(shown + "/" if entry.is_dir(follow_symlinks=False) else shown)
    rest = len(found) - len(lines) - hidden
    if rest > 0 or len(found) == SCAN_LIMIT:
        more = f"{rest}+" if len(found) == SCAN_LIMIT else str(rest)
        lines.append(f"... {more} more entries not shown; list a subfolder to narrow down")
    if hidden:
        lines.append(f"({hidden} symlinks leading outside the workspace are not shown)")
    return "\n".join(lines) or "(empty folder)"
