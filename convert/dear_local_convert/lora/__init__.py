"""LoRA adapters (PEFT): read and check one, fold it into a conversion, or write it as a GGUF adapter."""
