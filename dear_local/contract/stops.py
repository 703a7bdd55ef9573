"""The tokens that end a model's answer: one list for the converter, the reference and llama.cpp.

The converter writes these into the GGUF (``eot``, ``eom``, ``eos``), llama.cpp stops on
them, and the transformers reference stops on the same texts, so both sides of the check
end an answer at the same token.
"""

END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>")  # Llama-3.1, ChatML, Phi, Gemma
END_OF_MESSAGE = ("<|eom_id|>",)  # Llama-3.1's end of a tool-call message
END_OF_TEXT = ("<|end_of_text|>", "<|endoftext|>")  # Llama-3, GPT-2 style (SmolLM2)
STOP_TOKENS = END_OF_TURN + END_OF_MESSAGE + END_OF_TEXT
