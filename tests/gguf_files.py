"""Small GGUF files that gguf-py writes, and damaged ones, for the tests of the GGUF reader and check
(test_gguf_header.py) and of what quantize and ``env --model`` make of them (test_quant_hostile.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dear_local.gguf_file import Keys


def write_gguf(path: Path, *, arch: str = "llama", alignment: int | None = None) -> Path:
    """A small GGUF with metadata of every value type and tensors of several types (F32, F16, Q8_0, BF16)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("round-trip")
    w.add_block_count(2)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float32("t.f32", 1.5)
    w.add_float64("t.f64", math.pi)
    w.add_bool("t.bool", True)
    w.add_string("t.text", "héllo, 世界 🙂")
    w.add_string("t.empty", "")
    w.add_array("t.strings", ["a", "", "ccc", "日本"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_string(Keys.SOURCE_REPO, "example/repo")
    rng = np.random.default_rng(0)
    w.add_tensor("a.weight", rng.standard_normal((4, 64)).astype(np.float32))
    w.add_tensor("b.weight", rng.standard_normal((3, 32)).astype(np.float16))
    w.add_tensor("c.norm", np.ones(7, dtype=np.float32))
    q8 = np.zeros((2, 34 * 2), dtype=np.uint8)  # 2 rows of 64 Q8_0 weights: 2 blocks of 34 bytes each
    w.add_tensor("d.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # shape (2, 64) from the bytes
    w.add_tensor("e.weight", np.zeros((2, 5, 8), dtype=np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tensor_data_end(path: Path) -> int:
    """Where the last tensor's bytes end, by gguf-py's own reader."""
    import gguf

    r = gguf.GGUFReader(path)
    return max(int(t.data_offset) + int(t.n_bytes) for t in r.tensors)


# Files that are not a GGUF, each made by ``make(path)``, and the message it gets.
DAMAGED = pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"GGML" + bytes(60)), "not a GGUF file"),
        (lambda p: p.write_bytes(b"GGUF"), "truncated"),
        (lambda p: p.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16)), "GGUF version 1"),
        (lambda p: p.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(16)), "GGUF version 99"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
    ids=["empty", "wrong-magic", "magic-only", "version-1", "version-99", "folder"],
)
