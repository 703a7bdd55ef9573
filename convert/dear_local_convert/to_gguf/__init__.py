"""Stage 1: a Hugging Face LlamaForCausalLM checkpoint -> a GGUF file (checkpoint, arch, tensors, tokenizer, writer)."""
