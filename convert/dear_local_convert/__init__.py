"""The workstation side of dear-local (needs the 'convert' extra: torch, transformers, gguf).

Conversion: hf_to_gguf (checkpoint -> GGUF), quantize (llama.cpp quantizer + manifest),
build (pull, convert, quantize a model's ladder), standin and tiny_llama3 (test checkpoints).
"""
