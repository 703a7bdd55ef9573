"""The workstation commands of the ``dear-local`` CLI, added to it from this package.

Each module has a ``register(app: typer.Typer) -> None`` that adds its commands to dear-local's
typer app; ``pyproject.toml`` declares them in the ``dear_local.commands`` entry-point group, which
:mod:`dear_local.cli.plugins` reads. The runtime never imports this package; these modules import
the runtime's shared CLI pieces (``dear_local.cli.options``, ``dear_local.errors``) instead.

- ``convert``: convert, convert-lora, quantize, build (the `convert` extra).
- ``agreement``: reference, check, demo (check needs only the `check` extra).
- ``imatrix``: imatrix (the `convert` extra).
"""
