"""`codesift tune`: the command of the tune area (see codesift/cli.py)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    """Add `tune` to the root app (heavy imports go inside the command)."""

    @app.command("tune")
    def tune_cmd(
        path: str = typer.Argument(".", help="Root of a git repository (a full clone with a clean tree)."),
        minutes: float = typer.Option(10.0, "--minutes", help="Time budget of the whole run, training included."),
        index: str = typer.Option(None, "--index", help="Index directory (default PATH/.codesift)."),
        out: str = typer.Option(None, "--out", help="Also write the tuned model here, as a sentence-transformers "
                                "folder (usable with --model DIR or CODESIFT_MODEL=DIR)."),
        revert: bool = typer.Option(False, "--revert", help="Go back to the base model (re-embeds the index)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Fine-tune the index's model on this repository's history; install it only if it wins on the newest
        commits, held out."""
        from codesift.tune.run import TuneConfig, tune
        from codesift.tune.run import revert as revert_tune

        if revert:
            summary = revert_tune(path, index)
        else:
            summary = tune(path, index, TuneConfig(minutes=minutes), out).to_dict()
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            typer.echo(summary["message"])
