"""The eval data's source files: pinned by URL and sha256, read from the offline mirror or downloaded.

A file is read from the offline mirror named by ``DEAR_LOCAL_DATA`` when it is set
(laid out like ``noveleval/queries.tsv``, ``dl19/qrels.dl19-passage.txt``), otherwise
from the download cache under ``DEAR_LOCAL_HOME/data``, downloading it first when
needed. Either way its sha256 is checked before its path is returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dear_local.errors import DataError, DearLocalError
from dear_local.fileio import download, sha256_file
from dear_local.settings import get_settings

RANKGPT_COMMIT = "0d62bc3855c7c118048a7c47c18e719b938e291a"
RANK_LLM_COMMIT = "97f5fc162a4c6d664d14b1b930d56a6c759faf3a"
# anserini-tools is fetched from its default branch: no commit is pinned for it, so the sha256
# below is what pins the content.
ANSERINI_TOOLS_REF = "master"

_RANKGPT = f"https://raw.githubusercontent.com/sunnweiwei/RankGPT/{RANKGPT_COMMIT}/NovelEval"
_RANK_LLM = f"https://raw.githubusercontent.com/castorini/rank_llm/{RANK_LLM_COMMIT}"
_ANSERINI = (
    f"https://raw.githubusercontent.com/castorini/anserini-tools/{ANSERINI_TOOLS_REF}/topics-and-qrels"
)


@dataclass(frozen=True)
class SourceFile:
    """One pinned input file: where it lives in a mirror, where to download it, its sha256."""

    relpath: str
    url: str
    sha256: str


NOVELEVAL_QUERIES = SourceFile(
    "noveleval/queries.tsv",
    f"{_RANKGPT}/queries.tsv",
    "78ed1ab0c4cc42a9b2d3a774d85a751cb792b01a7dfd9c1fa1401278b4736519",
)
NOVELEVAL_CORPUS = SourceFile(
    "noveleval/corpus.tsv",
    f"{_RANKGPT}/corpus.tsv",
    "a62a5609a69ab2ec330d48c72bcd5a1bf3eb243ffcb2fa355013ab2512b1a99a",
)
NOVELEVAL_QRELS = SourceFile(
    "noveleval/qrels.txt",
    f"{_RANKGPT}/qrels.txt",
    "39b0be49af40899346a32caa4e8c4aa79c15b03d7e8eef4cb0682db14109750f",
)
DL19_RUN = SourceFile(
    "dl19/retrieve_results_dl19.json",
    f"{_RANK_LLM}/retrieve_results/BM25/retrieve_results_dl19.json",
    "4f3e4aba8bb68c1b38405da010f44537f31d3b5fff7088ef97c03caed1076674",
)
DL19_QRELS = SourceFile(
    "dl19/qrels.dl19-passage.txt",
    f"{_ANSERINI}/qrels.dl19-passage.txt",
    "8a1f10d550732e4cd91d7fc49846a3784de4040972f583e69285a88f3c5fee92",
)
DL19_TOPICS = SourceFile(
    "dl19/topics.dl19-passage.txt",
    f"{_ANSERINI}/topics.dl19-passage.txt",
    "518992da259fb61f64e4790791df91a7b42ea5773f374aed59220ebb51d58d90",
)


def fetch(src: SourceFile) -> Path:
    """A verified local copy of ``src``: from the offline mirror, the cache, or a download."""
    settings = get_settings()
    if settings.data_dir is not None:
        path = settings.data_dir / src.relpath
        if not path.is_file():
            raise DataError(
                f"{src.relpath} is missing from the offline data mirror {settings.data_dir} "
                f"(DEAR_LOCAL_DATA); put the file from {src.url} at {path}, or unset "
                "DEAR_LOCAL_DATA to download it"
            )
        _verify(path, src, f"the offline data mirror (DEAR_LOCAL_DATA={settings.data_dir})")
        return path

    path = settings.data_cache / src.relpath
    if path.is_file():
        if sha256_file(path) == src.sha256:
            return path
        path.unlink()  # a stale or damaged cache entry: fetch it again below
    if settings.offline:
        raise DataError(
            f"{src.relpath} is not in the data cache ({path}) and offline mode is on; set "
            "DEAR_LOCAL_DATA to an offline mirror of the eval data (laid out like "
            "noveleval/queries.tsv, dl19/qrels.dl19-passage.txt), or unset DEAR_LOCAL_OFFLINE "
            f"and HF_HUB_OFFLINE to download it from {src.url}"
        )
    try:
        return download(src.url, path, src.sha256, desc=src.relpath)
    except DearLocalError as exc:
        raise DataError(
            f"{exc}; or set DEAR_LOCAL_DATA to an offline mirror of the eval data"
        ) from exc


def _verify(path: Path, src: SourceFile, where: str) -> None:
    got = sha256_file(path)
    if got != src.sha256:
        raise DataError(
            f"{path} in {where} does not match its pinned sha256 (expected {src.sha256}, got {got}); "
            f"it is a different or damaged copy: replace it with the file from {src.url}"
        )


def combined_sha256(sources: tuple[SourceFile, ...]) -> str:
    lines = "".join(f"{s.relpath} {s.sha256}\n" for s in sorted(sources, key=lambda s: s.relpath))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()
