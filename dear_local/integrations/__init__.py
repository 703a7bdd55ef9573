"""In-process adapters: DeAR as each RAG framework's own reranker class, over :class:`dear_local.Reranker`.

- :mod:`dear_local.integrations.langchain`: ``DearLocalRerank``, a LangChain document compressor
  (``pip install "dear-local[langchain]"``);
- :mod:`dear_local.integrations.llamaindex`: ``DearLocalRerank``, a LlamaIndex node postprocessor
  (``pip install "dear-local[llamaindex]"``);
- :mod:`dear_local.integrations.haystack`: ``DearLocalRanker``, a Haystack component
  (``pip install "dear-local[haystack]"``).

Each module imports its framework when it is imported, never before: ``import dear_local`` imports
none of them, and importing one without its framework raises :class:`~dear_local.errors.MissingExtraError`
naming the extra.
"""
