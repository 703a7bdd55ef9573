"""The pure-Python GGUF header reader (`dear_local.gguf_file.read_header`), against files gguf-py writes.

Metadata of every value type, arrays decoded or stepped over, tensor infos (name, shape, type,
offset) as gguf-py's own reader sees them; damaged files give the file check's one-line errors;
the `dear_local.*` keys live in one namespace.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dear_local.errors import InvalidModelFileError, ModelNotFoundError
from dear_local.gguf_file import MAGIC, GGUFArray, Keys, check_gguf, has_gguf_magic, read_header
from dear_local.token_ids import first_difference

gguf = pytest.importorskip("gguf")

from gguf_files import DAMAGED, tensor_data_end, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "rt-F32.gguf")


@pytest.mark.parametrize("alignment", [None, 64])
def test_metadata_round_trips_every_value_type(tmp_path, alignment):
    path = write_gguf(tmp_path / "m.gguf", alignment=alignment)
    header = read_header(path, arrays=True)
    fields = {k: f for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}  # its own entries
    assert set(header.metadata) == set(fields)
    for key, field in fields.items():
        want, got = field.contents(), header.metadata[key]
        if isinstance(want, float) or (isinstance(want, list) and want and isinstance(want[0], float)):
            assert got == pytest.approx(want), key
        else:
            assert got == want, key
            assert type(got) is type(want), key
    assert header.get("t.text") == "héllo, 世界 🙂" and header.get("t.u64") == 2**63 + 5
    assert header.get("t.strings") == ["a", "", "ccc", "日本"]
    assert header.get("missing", 7) == 7
    assert header.architecture == "llama" and header.version == 3
    assert header.alignment == (alignment or 32) and header.data_offset % header.alignment == 0


def test_arrays_are_stepped_over_unless_asked_for(written):
    header = read_header(written)
    assert header.get("t.strings") == GGUFArray(element_type=8, count=4)
    assert header.get("t.ints") == GGUFArray(element_type=5, count=3)
    assert header.get("t.text") == "héllo, 世界 🙂"  # strings are always read
    some = read_header(written, arrays={"t.ints"})
    assert some.get("t.ints") == [1, -2, 3] and isinstance(some.get("t.strings"), GGUFArray)


@pytest.mark.parametrize("alignment", [None, 256])
def test_tensor_infos_match_gguf_py(tmp_path, alignment):
    path = write_gguf(tmp_path / "t.gguf", alignment=alignment)
    header = read_header(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(header.tensors, reader.tensors):
        assert ours.shape == tuple(int(d) for d in theirs.shape), ours.name
        assert ours.ggml_type == int(theirs.tensor_type), ours.name
        assert header.data_offset + ours.offset == int(theirs.data_offset), ours.name
        assert ours.n_elements == int(theirs.n_elements) and ours.n_bytes == int(theirs.n_bytes), ours.name
    assert header.data_end == tensor_data_end(path)
    assert header.size == path.stat().st_size


def test_an_unknown_tensor_type_has_no_size(tmp_path):
    from dear_local.gguf_file import TensorInfo

    with pytest.raises(ValueError, match="unknown ggml type 99"):
        TensorInfo("x", (4, 4), 99, 0).n_bytes


def test_the_llama3_vocabulary_header_is_read_fast(llama3_vocab_gguf):
    t0 = time.perf_counter()
    header = read_header(llama3_vocab_gguf)
    elapsed = time.perf_counter() - t0
    assert header.get("tokenizer.ggml.tokens") == GGUFArray(8, 128256)
    assert header.get("tokenizer.ggml.pre") == "llama-bpe"
    assert elapsed < 2  # about 0.03 s: 128k tokens and 280k merges are stepped over, not decoded
    full = read_header(llama3_vocab_gguf, arrays={"tokenizer.ggml.tokens"})
    assert full.get("tokenizer.ggml.tokens")[128000] == "<|begin_of_text|>"


@DAMAGED
def test_damaged_files_get_the_checks_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(InvalidModelFileError, match=message) as info:
        read_header(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ModelNotFoundError):
        read_header(tmp_path / "missing.gguf")


def test_every_cut_inside_the_header_is_truncated_and_the_fix_is_the_callers(written, tmp_path):
    blob = written.read_bytes()
    end = read_header(written).header_end
    for cut in range(4, end, 7):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(blob[:cut])
        with pytest.raises(InvalidModelFileError, match="truncated.*; make it again$"):
            read_header(path, what="thing", fix="make it again")
        path.unlink()


def test_a_cut_in_the_tensor_data_passes_the_reader_but_not_the_check(written, tmp_path):
    path = tmp_path / "short.gguf"
    path.write_bytes(written.read_bytes()[:-8])
    header = read_header(path)
    assert header.data_end > header.size
    with pytest.raises(InvalidModelFileError, match="its tensors need"):
        check_gguf(path)


def test_a_huge_string_array_count_is_truncated_not_a_long_loop(tmp_path):
    body = (0).to_bytes(8, "little") + (1).to_bytes(8, "little")  # no tensors, one key
    body += (1).to_bytes(8, "little") + b"k" + (9).to_bytes(4, "little")  # key "k": an array
    body += (8).to_bytes(4, "little") + (2**62).to_bytes(8, "little")  # of 2**62 strings
    path = tmp_path / "huge.gguf"
    path.write_bytes(MAGIC + (3).to_bytes(4, "little") + body)
    t0 = time.perf_counter()
    with pytest.raises(InvalidModelFileError, match="truncated"):
        read_header(path, arrays=True)
    assert time.perf_counter() - t0 < 1


def test_the_magic_check(tmp_path, written):
    assert has_gguf_magic(written)
    other = tmp_path / "x.bin"
    other.write_bytes(b"GGML")
    assert not has_gguf_magic(other)
    other.write_bytes(b"")
    assert not has_gguf_magic(other)


def test_every_dear_local_key_is_in_keys_and_the_old_names_still_import():
    from dear_local.backends import lora

    from dear_local_convert.lora import gguf_adapter
    from dear_local_convert.quant import imatrix_file
    from dear_local_convert.to_gguf import writer

    keys = {k: v for k, v in vars(Keys).items() if k.isupper()}
    assert all(v.startswith("dear_local.") for v in keys.values())
    assert len(set(keys.values())) == len(keys)
    old = {
        lora.KEY_LORA_REPO: Keys.LORA_REPO, lora.KEY_LORA_REVISION: Keys.LORA_REVISION,
        lora.KEY_LORA_SHA256: Keys.LORA_SHA256, lora.KEY_LORA_BASE: Keys.LORA_BASE_MODEL,
        writer.KEY_SOURCE_REPO: Keys.SOURCE_REPO, writer.KEY_SOURCE_REVISION: Keys.SOURCE_REVISION,
        writer.KEY_VERSION: Keys.VERSION, gguf_adapter.KEY_ADAPTER_BASE: Keys.LORA_BASE_GGUF,
        imatrix_file.KEY_CALIBRATION: Keys.CALIBRATION,
    }  # fmt: skip
    newer = {Keys.KIND, Keys.POINTWISE_TEMPLATE, Keys.POINTWISE_HEAD}  # added after Keys: no old names
    assert all(a == b for a, b in old.items()) and set(old) | newer == set(keys.values())


def test_gguf_facts_read_the_header(written):
    from dear_local_convert.quant.quantize import gguf_facts

    reader = gguf.GGUFReader(written)
    facts = gguf_facts(written)
    assert facts["n_params"] == sum(int(t.n_elements) for t in reader.tensors)
    assert facts["tensor_bytes"] == sum(int(t.n_bytes) for t in reader.tensors)
    assert facts["source_repo"] == "example/repo" and facts["source_revision"] is None


@pytest.mark.parametrize(
    "a, b, at",
    [([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 5, 3], 1), ([1, 2], [1, 2, 3], 2), ([], [4], 0), ([], [], None)],
)
def test_first_difference(a, b, at):
    assert first_difference(a, b) == at
    assert first_difference(b, a) == at


def test_log_capture_joins_cont_lines_to_their_message():
    """The one log capture (runtime and workstation): a message's CONT lines (level 5) belong to it."""
    pytest.importorskip("llama_cpp")
    from dear_local.llama_cpp_lib import LogCapture

    import dear_local_convert.llama_cpp_lib as old_home

    assert old_home.LogCapture is LogCapture  # the workstation's name is the same class
    capture = LogCapture()
    for level, text in [(5, "orphan "), (2, "loading\n"), (4, "llama_adapter_lora_init_impl: failed to "),
                        (5, "apply: shapes differ\n"), (3, "warn\n")]:
        capture._callback(level, text.encode(), None)
    assert capture.messages == ["orphan", "loading", "llama_adapter_lora_init_impl: failed to apply: shapes differ", "warn"]
    assert capture.errors == ["llama_adapter_lora_init_impl: failed to apply: shapes differ"]
