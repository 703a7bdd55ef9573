"""Stand-in checkpoints for tests and the demo: SmolLM2-135M-Instruct and a tiny random Llama-3.1."""
