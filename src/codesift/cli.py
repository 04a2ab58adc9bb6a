"""The `codesift` command line: thin commands, each one calls the library.

Each area of the package registers its own commands from ``codesift/<area>/cli.py`` through a
``register(app)`` function; those modules import heavy libraries (torch, transformers, ...) only
inside the commands, so ``codesift --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

app = typer.Typer(
    name="codesift",
    help="Code embeddings from code generation models: embed, mine, train, evaluate, index, search, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_AREAS = (
    "codesift.model.cli",
    "codesift.data.cli",
    "codesift.eval.cli",
    "codesift.train.cli",
    "codesift.index.cli",
    "codesift.serve.cli",
    "codesift.tune.cli",
)
for _module in _AREAS:
    importlib.import_module(_module).register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line instead of a traceback."""
    import warnings

    from codesift.model.distributed import RayEmbedError
    from codesift.model.inputs import printable
    from codesift.model.loading import ModelNotAvailableError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # hides transformers' weight-loading bars too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        app()
    except (UserError, ValueError, OSError, ModelNotAvailableError, RayEmbedError) as exc:
        # OSError: a file the user named cannot be read or written (directory, full disk, permissions)
        if os.environ.get("CODESIFT_DEBUG"):
            raise
        typer.secho(f"error: {printable(str(exc))}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
