"""GGUF files read and written in plain Python, for the test models of tests/vocab_models.py
(gguf-py's reader takes 12 s over a 128k vocabulary's strings; this one 0.12 s).

Key-values are (type, value): scalars as Python values, strings as bytes, arrays as (item
type, list of bytes or numpy array).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

# GGUF value types.
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_GGML_F32, _GGML_F16 = 0, 1
ALIGNMENT = 32


def write_gguf(
    file: Any, kv: dict[str, tuple[int, Any]], tensors: list[tuple[str, np.ndarray]]
) -> None:
    """A GGUF v3 file: the key-values, then the tensors (f16 or f32, numpy's row order)."""
    header = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(kv))]
    header += [_string(k.encode()) + _value(kind, value) for k, (kind, value) in kv.items()]
    offset = 0
    for name, array in tensors:
        ggml_type = _GGML_F16 if array.dtype == np.float16 else _GGML_F32
        dims = array.shape[::-1]  # ggml lists the fastest-varying dimension first
        header.append(
            _string(name.encode())
            + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)
        )
        offset += _padded(array.nbytes)
    blob = b"".join(header)
    file.write(blob + bytes(_padded(len(blob)) - len(blob)))
    for _, array in tensors:
        file.write(array.tobytes() + bytes(_padded(array.nbytes) - array.nbytes))


def _padded(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value: Any) -> bytes:
    kind_bytes = struct.pack("<I", kind)
    if kind == STRING:
        return kind_bytes + _string(value)
    if kind != ARRAY:
        return kind_bytes + struct.pack("<" + _SCALARS[kind], value)
    item_kind, items = value
    head = kind_bytes + struct.pack("<IQ", item_kind, len(items))
    if item_kind == STRING:
        return head + b"".join(struct.pack("<Q", len(s)) + s for s in items)
    return head + np.asarray(items, dtype="<" + _SCALARS[item_kind]).tobytes()


def read_metadata(data: bytes) -> dict[str, tuple[int, Any]]:
    """A GGUF file's key-values: scalars as Python values, strings as bytes, arrays as
    (item type, list of bytes or numpy array)."""
    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    version, _, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    position = 24
    unpack = struct.unpack_from

    def string() -> bytes:
        nonlocal position
        (size,) = unpack("<Q", data, position)
        position += 8 + size
        return data[position - size : position]

    def value(kind: int) -> Any:
        nonlocal position
        if kind == STRING:
            return string()
        if kind != ARRAY:
            fmt = "<" + _SCALARS[kind]
            position += struct.calcsize(fmt)
            return unpack(fmt, data, position - struct.calcsize(fmt))[0]
        item_kind, count = unpack("<IQ", data, position)
        position += 12
        if item_kind == STRING:
            return item_kind, [string() for _ in range(count)]
        dtype = np.dtype("<" + _SCALARS[item_kind])
        items = np.frombuffer(data, dtype=dtype, count=count, offset=position).copy()
        position += dtype.itemsize * count
        return item_kind, items

    result = {}
    for _ in range(n_kv):
        key = string().decode()
        (kind,) = unpack("<I", data, position)
        position += 4
        result[key] = (kind, value(kind))
    return result
