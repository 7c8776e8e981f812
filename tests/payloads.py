"""Hostile payloads shared by unit and integration tests."""

from __future__ import annotations

import gzip
import struct
import zlib

MiB = 1 << 20


def gzip_bomb(mib: int, byte: bytes = b"a") -> bytes:
    """gzip(gzip(`mib` MiB of one byte)), a few KB, built in well under a second: after a full
    flush deflate emits the same block for every further MiB, so that block is repeated."""
    block = byte * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    end = b"\x03\x00" + struct.pack("<II", crc, (mib * MiB) & 0xFFFFFFFF)  # empty last block
    return gzip.compress(first + again * (mib - 1) + end, 9)
