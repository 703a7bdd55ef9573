"""The file formats IR people keep their data in, read and written by dear-local.

- ``shapes``: which request shape a JSONL/JSON file holds (rank_llm, RankGPT, plain documents).
- ``rank_llm``: rank_llm's request records in, its result records out.
- ``trec``: TREC run files (``qid Q0 docid rank score tag``) and qrels (``qid iter docid grade``).
- ``collection``: topics (``qid<TAB>text``) and corpora (TSV, or Pyserini/BEIR JSONL), the
  corpus read in one streaming pass that keeps only the documents asked for.
- ``first_stage``: a first-stage run, its topics and a corpus turned into rerank requests.
- ``results``: the rerank output formats (table, json, trec, rank_llm).
- ``lines``: line-by-line reading with a clear error for bad UTF-8 or a missing file.
"""
