"""Stage 2: GGUF quant types through llama.cpp's quantizer, and the importance matrix that guides the low-bit ones."""
