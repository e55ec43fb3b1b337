"""PNG files from RGB arrays, fast: each row "Up"-filtered with numpy, then zlib.

Pillow chooses a filter per row and deflates at level 6 by default: at 512x512 that took 119 ms
for a picture here, Pillow at level 1 18 ms, this 8 ms (for a file 7% larger than Pillow's at
level 1). On a GPU that is the difference between encoding costing less than drawing or more.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
UP = 2  # PNG filter type: each byte minus the byte above it


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    """A PNG of an (height, width, 3) uint8 array; `level` is zlib's, 0-9."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("encode_png takes an (height, width, 3) uint8 array")
    height, width, _ = rgb.shape
    rows = np.ascontiguousarray(rgb).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:], dtype=np.uint8, casting="unsafe")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
