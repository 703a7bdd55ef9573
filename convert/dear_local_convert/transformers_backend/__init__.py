"""The reference's backend: transformers on GPU or CPU, behind the same Backend protocol as llama.cpp."""
