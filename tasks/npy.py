"""A .npy file written as a stream: 1-D, length unknown until the end (the byte caches of
Text and Retrieval grow one document at a time and are never held in memory)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

_FORMAT = np.lib.format


def _header(dtype: np.dtype, n: int) -> bytes:
    """numpy's own version 1.0 header of a 1-D C-order array of ``n`` items."""
    buf = io.BytesIO()
    d = {"descr": _FORMAT.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    _FORMAT.write_array_header_1_0(buf, d)
    return buf.getvalue()


class NpyStream:
    """Append-only 1-D .npy file. The header is numpy's, written first for the largest
    length (numpy pads every header to a multiple of 64 bytes, so one of any 1-D length has
    the same size) and rewritten in place with the true length on ``close``."""

    def __init__(self, path: Path, dtype=np.uint8):
        self.path, self.dtype, self.n = Path(path), np.dtype(dtype), 0
        self.f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.header_size = len(_header(self.dtype, sys.maxsize))
        self.f.write(b"\0" * self.header_size)

    def write(self, arr: np.ndarray | bytes) -> None:
        buf = bytes(arr) if isinstance(arr, bytes | bytearray) else arr.astype(self.dtype).tobytes()
        self.f.write(buf)
        self.n += len(buf) // self.dtype.itemsize

    def close(self) -> None:
        head = _header(self.dtype, self.n)
        if len(head) != self.header_size:  # pragma: no cover - numpy's padding guarantees it
            raise RuntimeError(f"{self.path}: .npy header changed size ({len(head)} bytes)")
        self.f.seek(0)
        self.f.write(head)
        self.f.close()
