"""The workstation side of dear-local: convert, quantize, record the reference, check the quants.

Stages, in pipeline order (a stage imports only earlier ones and the shared modules):

- ``to_gguf``: an HF checkpoint -> a GGUF (``convert_checkpoint``); needs the ``convert`` extra.
- ``lora``: PEFT LoRA adapters, part of stage one: checked (``read_adapter``), merged while
  converting (``convert_checkpoint(..., lora=)``) or written as GGUF adapters (``convert_adapter``).
- ``quant``: llama.cpp's quantizer and the importance matrix (``quantize``, ``make_imatrix``).
- ``agreement``: the reference file (``write_reference``), runs, the check (``check``,
  ``run_check``), gates, metrics and the report; the check itself needs only the ``check`` extra.
- ``standins``: the SmolLM2 and tiny Llama-3.1 checkpoints the tests and the demo use.
- ``build`` and ``demo`` on top; ``slices``/``slice_files`` (eval data) and
  ``transformers_backend`` (the reference's backend) are shared by the stages.
- ``cli``: the workstation commands of ``dear-local``, added to its CLI through the
  ``dear_local.commands`` entry points (the runtime never imports this package).
"""
