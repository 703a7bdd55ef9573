"""Upper bounds on numbers a user passes, shared by the Python API, the CLI's flags and ``serve``.

Plain constants, importable without the ``serve`` extra or llama.cpp. Past them a value is a
mistake (``inf``, ``1e308``) that would otherwise fail deep inside (an OverflowError in a
deadline, an allocation without limit).
"""

MAX_DOCUMENTS = 1000  # documents per query
MAX_POINTWISE_BATCH = 256  # documents per llama.cpp call of a pointwise ranker
MAX_REQUEST_TIMEOUT = 86400.0  # seconds per server request: one day
MAX_SERVER_RETRIES = 10  # retries on one server: the waits then add up to about 8.5 minutes
MAX_LORA_SCALE = 100.0  # |--lora-scale|
MAX_SERVE_TIMEOUT = 86400.0  # seconds per served request (serve --timeout)
MAX_BODY_BYTES = 2**30  # serve --max-body-bytes
MAX_QUEUE = 100_000  # serve --max-queue
MAX_IN_FLIGHT = 1024  # requests or queries ranked at once
MAX_CTX = 1 << 20  # tokens of llama.cpp context (n_ctx, --n-ctx)
MAX_THREADS = 1024  # llama.cpp CPU threads (n_threads, --threads)
MAX_GPU_LAYERS = 1 << 16  # layers offloaded to a GPU (n_gpu_layers, --gpu-layers)
