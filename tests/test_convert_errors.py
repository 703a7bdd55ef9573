"""Bad inputs to convert and quantize: each fails with a clear message and leaves no file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dear_local.errors import ConversionError, DearLocalError, UserInputError
from optional import needs

pytestmark = needs("torch", "gguf")


def variant(src: Path, dest: Path, *, drop=(), json_edits=None, files=None) -> Path:
    """A copy of checkpoint ``src`` (files symlinked) with some files dropped, edited or replaced."""
    dest.mkdir()
    for f in src.iterdir():
        if f.name in drop or f.name.startswith("."):
            continue
        if json_edits and f.name in json_edits:
            data = json.loads(f.read_text(encoding="utf-8"))
            json_edits[f.name](data)
            (dest / f.name).write_text(json.dumps(data), encoding="utf-8")
        else:
            (dest / f.name).symlink_to(f)
    for name, content in (files or {}).items():
        (dest / name).unlink(missing_ok=True)
        (dest / name).write_bytes(content)
    return dest


def convert_fails(src: Path, out: Path, *, match: str, **kw) -> ConversionError:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    with pytest.raises(ConversionError, match=match) as info:
        convert_checkpoint(src, out, "f32", name="bad", **kw)
    assert not out.exists() or list(out.iterdir()) == [], f"left behind: {list(out.iterdir())}"
    assert not list(src.glob("*.partial"))
    return info.value


def test_unknown_architecture_is_refused_by_name(tiny_llama3_dir, tmp_path):
    def to_mistral(c):
        c["architectures"] = ["MistralForCausalLM"]
        c["model_type"] = "mistral"

    src = variant(tiny_llama3_dir, tmp_path / "src", json_edits={"config.json": to_mistral})
    err = convert_fails(src, tmp_path / "out", match="MistralForCausalLM is not supported")
    assert "LlamaForCausalLM" in str(err)


def test_missing_tokenizer_is_refused(tiny_llama3_dir, tmp_path):
    src = variant(tiny_llama3_dir, tmp_path / "src", drop={"tokenizer.json"})
    convert_fails(src, tmp_path / "out", match="has no tokenizer.json")


def _shards(d: Path) -> list[Path]:
    return sorted(d.glob("model-*.safetensors"))


def test_truncated_shard_is_refused(tiny_llama3_dir, tmp_path):
    shard = _shards(tiny_llama3_dir)[-1]
    data = shard.read_bytes()
    src = variant(tiny_llama3_dir, tmp_path / "src", files={shard.name: data[: len(data) // 2]})
    err = convert_fails(src, tmp_path / "out", match="truncated or corrupt")
    assert shard.name in str(err)


def test_corrupt_shard_is_refused(tiny_llama3_dir, tmp_path):
    shard = _shards(tiny_llama3_dir)[0]
    src = variant(tiny_llama3_dir, tmp_path / "src", files={shard.name: os.urandom(4096)})
    convert_fails(src, tmp_path / "out", match=f"shard {shard.name} is truncated or corrupt")


def test_missing_shard_is_refused(tiny_llama3_dir, tmp_path):
    shard = _shards(tiny_llama3_dir)[0]
    src = variant(tiny_llama3_dir, tmp_path / "src", drop={shard.name})
    convert_fails(src, tmp_path / "out", match=f"missing shard.*{shard.name}")


def test_pickled_weights_are_refused(tiny_llama3_dir, tmp_path):
    keep = {"config.json", "tokenizer.json", "tokenizer_config.json"}
    drop = {f.name for f in tiny_llama3_dir.iterdir()} - keep
    src = variant(tiny_llama3_dir, tmp_path / "src", drop=drop, files={"pytorch_model.bin": b"\x80\x04pickle"})
    convert_fails(src, tmp_path / "out", match="pickled weights")


def _other_split(tj):
    split = tj["pre_tokenizer"]["pretokenizers"][0]
    split["pattern"]["Regex"] = split["pattern"]["Regex"].replace("\\p{N}{1,3}", "\\p{N}{1,2}")


def test_unknown_pre_tokenizer_names_the_override_flag(tiny_llama3_dir, tmp_path):
    src = variant(tiny_llama3_dir, tmp_path / "src", json_edits={"tokenizer.json": _other_split})
    convert_fails(src, tmp_path / "out", match="unknown pre-tokenizer.*--pre-tokenizer")


def test_wrong_pre_tokenizer_override_is_caught_by_the_tokenizer_check(tiny_llama3_dir, tmp_path):
    src = variant(tiny_llama3_dir, tmp_path / "src", json_edits={"tokenizer.json": _other_split})
    convert_fails(src, tmp_path / "out", match="disagrees with tokenizer.json", pre_tokenizer="llama-bpe")


def test_pre_tokenizer_override_unknown_to_llama_cpp_is_refused(tiny_llama3_dir, tmp_path):
    # the message carries llama.cpp's own error line (its ERROR log level, not its warnings)
    convert_fails(tiny_llama3_dir, tmp_path / "out",
                  match=r"cannot load the converted tokenizer \(.*unknown pre-tokenizer type: 'no-such-pre-tokenizer'",
                  pre_tokenizer="no-such-pre-tokenizer")


def test_output_directory_under_a_file_is_refused(tiny_llama3_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    convert_fails(tiny_llama3_dir, blocker / "out", match="cannot write to output directory")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_output_directory_is_refused(tiny_llama3_dir, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        convert_fails(tiny_llama3_dir, out, match="cannot write to output directory")
    finally:
        out.chmod(0o700)


def test_existing_output_is_kept_unless_forced(tiny_llama3_dir, tmp_path):
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    out = tmp_path / "out"
    out.mkdir()
    existing = out / "tiny-F32.gguf"
    existing.write_bytes(b"keep me")
    assert convert_checkpoint(tiny_llama3_dir, out, "f32", name="tiny") == existing
    assert existing.read_bytes() == b"keep me"
    convert_checkpoint(tiny_llama3_dir, out, "f32", name="tiny", force=True, verify_tokenizer=False)
    assert existing.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in out.iterdir()) == ["tiny-F32.gguf"]


def test_unknown_quant_type_lists_valid_types_and_writes_nothing(tiny_f32_gguf, tmp_path):
    from dear_local_convert.quant.quantize import quantize

    out = tmp_path / "q"
    with pytest.raises(UserInputError, match="unknown quant type.*Q4_K_X.*valid types:.*Q4_K_M"):
        quantize(tiny_f32_gguf, ["Q8_0", "Q4_K_X"], out)
    assert not out.exists()


def test_quantizing_a_non_gguf_file_fails_cleanly(tmp_path):
    from dear_local_convert.quant.quantize import quantize

    bogus = tmp_path / "model-BF16.gguf"
    bogus.write_bytes(b"not a gguf at all")
    with pytest.raises(DearLocalError, match="not a GGUF file"):
        quantize(bogus, ["Q8_0"], tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_cli_reports_conversion_errors_in_one_line(tiny_llama3_dir, tmp_path):
    import subprocess
    import sys

    src = variant(tiny_llama3_dir, tmp_path / "src", drop={"tokenizer.json"})
    proc = subprocess.run(
        [sys.executable, "-m", "dear_local", "convert", str(src), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "tokenizer.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
