"""`codesift embed`, `codesift models`, `codesift info`: the engine from the command line."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer

MODEL_HELP = ("Model: hub id, local folder, .gguf file, or codesift-mini (shipped). Default: $CODESIFT_MODEL, else "
              "jinaai/jina-code-embeddings-0.5b on a GPU machine that has it, else codesift-mini.")


def load_embedder(model: str | None, **kwargs):
    """Build an Embedder for a CLI command (one place for the CLI's model default)."""
    from codesift.model.embedder import Embedder
    from codesift.model.loading import default_model

    return Embedder(model or default_model(), **kwargs)


def _read_inputs(texts: list[str], input_file: Path | None) -> list[str]:
    """The texts to embed: arguments, else the lines (or JSONL items) of --input or stdin; all valid UTF-8, none empty."""
    from codesift.model.inputs import check_text, decode_utf8

    if texts and input_file:
        raise ValueError("give texts as arguments or with --input, not both")
    if texts:
        for n, t in enumerate(texts, 1):
            check_text(t, f"argument {n}")
            if not t:
                raise ValueError(f"argument {n} is empty; every text must have at least one character")
        return texts
    if input_file is not None and str(input_file) != "-":
        if input_file.is_dir():
            raise ValueError(f"--input {input_file} is a directory; pass a .jsonl or text file")
        if not input_file.exists():
            raise FileNotFoundError(f"input file {input_file} does not exist")
        lines = decode_utf8(input_file.read_bytes(), str(input_file)).splitlines()
    elif input_file is not None or not sys.stdin.isatty():
        lines = decode_utf8(sys.stdin.buffer.read(), "stdin").splitlines()
    else:
        raise ValueError("no input: pass texts as arguments, pipe lines on stdin, or use --input FILE.jsonl")
    is_jsonl = input_file is not None and input_file.suffix in (".jsonl", ".json")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{input_file}:{n}: not JSON ({exc.msg}); each line must be a string or an object with 'text'") from None
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise ValueError(f"{input_file}:{n}: object has no 'text' field")
                obj = obj["text"]
            if not isinstance(obj, str):
                raise ValueError(f"{input_file}:{n}: expected a string or an object with 'text'")
            check_text(obj, f"{input_file}:{n}")
            if not obj:
                raise ValueError(f"{input_file}:{n}: the text is empty; every text must have at least one character")
            out.append(obj)
        else:
            out.append(line)
    if not out:
        raise ValueError("no input: every line is blank")
    return out


OUTPUT_SUFFIXES = (".npy", ".jsonl", ".json")


def _write_vectors(vecs, output: Path | None) -> None:
    """Vectors as .npy or JSONL (one {"index", "embedding"} a line), to ``output`` or stdout."""
    if output is not None and output.suffix == ".npy":
        import numpy as np

        with open(output, "wb") as fh:
            np.save(fh, vecs)
        typer.echo(f"wrote {vecs.shape[0]} x {vecs.shape[1]} vectors to {output}", err=True)
        return
    with open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout) as sink:
        for i, v in enumerate(vecs):
            sink.write(json.dumps({"index": i, "embedding": [round(float(x), 7) for x in v]}) + "\n")
        sink.flush()


def _embed_on_ray(items: list[str], address: str, output: Path, *, model: str | None, workers: int | None,
                  shard_size: int, **options):
    """`codesift embed --ray`: the corpus on Ray workers (model/distributed.py); the vectors in input order."""
    from codesift.model.distributed import EmbedSpec, embed_on_ray
    from codesift.model.loading import default_model

    shards = output.with_name(output.name + ".shards")
    spec = EmbedSpec(model=str(model or default_model()), **options)
    result = embed_on_ray(items, spec, shards, address=address, workers=workers, shard_size=shard_size)
    how = (f"on {result.workers} Ray workers x {result.threads} threads (startup {result.startup_seconds:.1f} s)"
           if result.workers else "(all shards reused)")
    typer.echo(f"embedded {len(items)} texts {how} in {result.seconds:.1f} s: {len(result.computed)} shards "
               f"computed, {len(result.skipped)} reused from {shards}", err=True)
    return result.vectors, shards


def embed_command(
    texts: list[str] = typer.Argument(None, help="Texts to embed (else --input or stdin lines)."),
    input_file: Path | None = typer.Option(None, "--input", "-i", help="A .jsonl file (strings or {'text': ...}) or a text file, one input a line; '-' for stdin."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write .npy (array) or .jsonl (also for a name without a suffix); default JSONL on stdout."),
    task: str = typer.Option("nl2code", help="nl2code, qa, code2code, code2nl, code2completion (or nl2code.query ...)."),
    role: str | None = typer.Option(None, help="query or document (passage); default query, or the role in --task."),
    dim: int | None = typer.Option(None, help="Matryoshka dimension (truncate, then re-normalise)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    truncate: bool = typer.Option(False, help="Cut over-long inputs instead of failing (the prefix is kept)."),
    batch_tokens: int | None = typer.Option(None, help="Token budget per batch (padded tokens)."),
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto", help="auto (bf16 where the hardware has it, else float32), int8 "
                                            "(encoders on the CPU: ONNX Runtime), float32, bfloat16, float16."),
    ray: str | None = typer.Option(None, "--ray", help="Embed on Ray workers: 'local' (this machine) or a "
                                   "cluster's HOST:PORT (e.g. head:6379) or ray://HOST:PORT. Needs --output; "
                                   "finished shards are kept in OUTPUT.shards/ so a rerun resumes."),
    workers: int | None = typer.Option(None, help="With --ray: workers (each loads the model once). Default: "
                                       "one per 4 CPUs of the cluster; the CPUs are split between them."),
    shard_size: int = typer.Option(512, help="With --ray: texts per shard (the unit of work, retry and resume)."),
    keep_shards: bool = typer.Option(False, help="With --ray: keep OUTPUT.shards/ after the output is written."),
) -> None:
    """Embed texts with a task's query or document prefix."""
    if output is not None and output.suffix and output.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output {output}: unknown format {output.suffix!r}; use a .npy (array) or "
                         ".jsonl file (a name without a suffix gets JSONL too)")
    if batch_tokens is not None and batch_tokens < 1:
        raise ValueError(f"--batch-tokens must be at least 1, got {batch_tokens}")
    if ray is None and (workers is not None or keep_shards):
        raise ValueError("--workers and --keep-shards go with --ray local|HOST:PORT")
    if ray is not None and output is None:
        raise ValueError("--ray needs --output FILE (.npy or .jsonl): finished shards are kept beside it "
                         "in FILE.shards/ so that an interrupted job resumes")
    items = _read_inputs(texts or [], input_file)
    shards = None
    if ray is not None:
        vecs, shards = _embed_on_ray(items, ray, output, model=model, task=task, role=role or "query", dim=dim,
                                     truncate=truncate, batch_tokens=batch_tokens, device=device, dtype=dtype,
                                     workers=workers, shard_size=shard_size)
    else:
        emb = load_embedder(model, device=device, dtype=dtype)
        vecs = emb.encode(items, task=task, role=role or "query", dim=dim, truncate=truncate,
                          batch_tokens=batch_tokens, show_progress=None)
    try:
        _write_vectors(vecs, output)
    except OSError as exc:
        raise ValueError(f"could not write the vectors to {output or 'stdout'}: "
                         f"{exc.strerror or type(exc).__name__}") from None
    if shards is not None and not keep_shards:  # only once the output is safely written
        import shutil

        shutil.rmtree(shards, ignore_errors=True)

def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the models available on this machine and the default."""
    from codesift.model.registry import local_models

    rows = local_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="codesift models")
    for col in ("name", "kind", "where", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["path"] or "-", r["note"])
    Console().print(table)

def info_command(
    model: str | None = typer.Argument(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Load a model and show its dimension, Matryoshka dims, pooling, prefixes and limits."""
    emb = load_embedder(model)
    facts = {
        "model": emb.name,
        "layout": emb.source.layout,
        "path": str(emb.source.path / (emb.source.gguf_file or "")),
        "architecture": emb.model.config.model_type,
        "decoder": emb.is_decoder,
        "dimension": emb.dimension,
        "matryoshka_dims": list(emb.matryoshka_dims),
        "pooling": emb.pooling,
        "max_length": emb.max_length,
        "device": emb.device.type,
        "dtype": emb.precision,
        "tokenizer_appends_eos": emb.appends_eos,
        "padding_side": emb.tokenizer.padding_side,
        "uses_prefixes": emb.uses_prefixes(),
        "nl2code_query_prefix": emb.prefix("nl2code", "query"),
        "nl2code_document_prefix": emb.prefix("nl2code", "document"),
        "fingerprint": emb.fingerprint,
        "offline_fallback": emb.source.is_fallback,
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    for k, v in facts.items():
        typer.echo(f"{k:24} {v!r}" if isinstance(v, str) and "\n" in v else f"{k:24} {v}")


def register(app: typer.Typer) -> None:
    """Add the engine's commands to the root app (heavy imports go inside the commands)."""
    app.command("embed")(embed_command)
    app.command("models")(models_command)
    app.command("info")(info_command)
