"""`codesift` commands of the index area: index, search, status, watch (see codesift/cli.py; `mcp` is serve's)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import typer


def find_index_dir(path: str | None, index: str | None) -> Path:
    """The index directory: ``--index``, else PATH/.codesift, else the nearest .codesift above the cwd."""
    from codesift.index.config import DB_NAME, INDEX_DIRNAME

    if index:
        return Path(index)
    if path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{path} does not exist; pass an indexed source directory")
        return p / INDEX_DIRNAME
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / INDEX_DIRNAME / DB_NAME).is_file():
            return d / INDEX_DIRNAME
    raise FileNotFoundError(f"no {INDEX_DIRNAME} index here or above {here}; run `codesift index PATH` first")


def _sqlite_errors(index_dir: Path):
    """SQLite failures on the index in ``index_dir`` as named errors (a full disk, read-only, damaged: rebuild)."""
    from codesift.index.config import DB_NAME
    from codesift.index.manifest import sqlite_errors

    return sqlite_errors(Path(index_dir) / DB_NAME)


def _progress_printer(bar: bool, lines_every_s: float = 15.0):
    """A (phase, done, total) callback on stderr: a rich progress bar per phase (files; repositories and chunks when
    there are several repositories) (``bar``), else a line every ``lines_every_s`` seconds (logs, CI, an agent's
    captured stderr); returns (the bar or None, the callback)."""
    if not bar:
        start = last = time.monotonic()

        def line(phase: str, done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= lines_every_s and total:
                last = now
                typer.echo(f"indexing: {done:,} of {total:,} {phase} ({done / total:.0%}), {now - start:.0f} s",
                           err=True)

        return None, line
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress_bar = Progress(TextColumn("indexing {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress_bar.add_task(phase, total=None)
        progress_bar.update(tasks[phase], completed=done, total=total)

    return progress_bar, update


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{report['files_seen']} files seen, {report['files_changed']} changed ({report['files_added']} new), "
        f"{report['files_deleted']} deleted, {report['files_skipped']} skipped; {report['chunks_embedded']} chunks "
        f"embedded, {report['chunks_cached']} from cache, {report['chunks_deleted']} removed; "
        f"{report['chunks_total']} chunks in {report['index_dir']} ({report['seconds']:.1f} s)"
    )


def escape_field(text: str) -> str:
    """A path or symbol safe on one tab-separated line: backslash, tab, newline and other controls escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join("\\\\" if c == "\\" else c if c.isprintable() else repr(c)[1:-1] for c in text)


def _render_results(results: list[dict], as_json: bool, files: bool = False) -> None:
    """Print result dicts (chunks, or files with ``files``): JSON, grep-like lines when piped, else highlighted."""
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    if not results:
        typer.echo("no results", err=True)
        return
    if not sys.stdout.isatty():  # grep-like lines for pipes
        for r in results:
            typer.echo(f"{escape_field(r['path'])}:{r['start_line']}-{r['end_line']}\t{r['score']:.4f}\t"
                       f"{escape_field(r['symbol'] or '')}")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.syntax import Syntax

    console = Console()
    for r in results:  # paths and symbols come from the repository: text, never markup (a link, a style)
        console.print(f"[bold cyan]{escape(escape_field(r['path']))}[/]:[yellow]{r['start_line']}-{r['end_line']}[/]  "
                      f"[magenta]{escape(escape_field(r['symbol'] or ''))}[/]  [dim]score {r['score']:.4f}[/]")
        if files and len(r.get("chunks", ())) > 1:
            also = ", ".join(f"{c.get('start_line', '?')}-{c.get('end_line', '?')} {c.get('symbol') or ''}".strip()
                             for c in r["chunks"][1:])
            console.print("[dim]  also: " + escape(escape_field(also)) + "[/]")
        console.print(Syntax(r["snippet"], r["language"] or "text", line_numbers=True, start_line=r["start_line"],
                             word_wrap=False, theme="ansi_dark"))


def server_args(request, refresh: bool = False) -> dict:
    """A search request as the query server's ``search`` op takes it: every field of the ``SearchRequest`` (a field
    left out is not always its default: a ``like`` request fills absent ones with its own), plus ``refresh`` to
    re-index what changed first, in the same request."""
    args = request.model_dump(mode="json")
    if refresh:
        args["refresh"] = True
    return args


def _search(index_dir: Path, request, refresh: bool, use_server: bool) -> dict:
    """Run one search request through the index's query server (started on demand), else in this process."""
    from codesift.index import daemon_client

    if use_server and daemon_client.enabled():
        try:
            return daemon_client.request(index_dir, "search", server_args(request, refresh))
        except (daemon_client.QueryServerUnavailable, daemon_client.QueryServerError) as exc:
            # an internal failure of the server: said in one line (its log has the details), then searched here
            typer.secho(f"warning: searching in this process ({exc})", fg="yellow", err=True)
    from codesift.index.query_server import answer
    from codesift.index.search import CodeIndex

    with _sqlite_errors(index_dir), CodeIndex(index_dir) as ix:
        return answer(ix, request, refresh)


def index_command(
    paths: list[str] = typer.Argument(None, help="Roots of the source trees (default: the current directory)."),
    model: str = typer.Option(None, "--model", "-m", help="Embedding model (default: the index's, else $CODESIFT_MODEL, else jina-code-embeddings-0.5b with a GPU, codesift-mini without)."),
    index: str = typer.Option(None, "--index", help="Index directory (default PATH/.codesift; one PATH only)."),
    store_uri: str = typer.Option(None, "--store-uri", help="Milvus server URI, e.g. http://host:19530, or a Milvus Lite file (*.db) (default: SQLite in the index dir). Each index gets its own collection there."),
    store_token: str = typer.Option(None, "--store-token", envvar="CODESIFT_STORE_TOKEN",
                                    help="Milvus server credentials, user:password or an API key."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Chunk size cap in tokens (default 512)."),
    dtype: str = typer.Option(None, "--dtype", help="Model precision of a new index: auto (default: int8 on a CPU "
                              "where it keeps quality, else bf16/fp32), int8, float32, bfloat16. Search uses the index's."),
    vectors: str = typer.Option(None, "--vectors", help="How search holds the vectors in memory: float16 (default, "
                                "exact) or binary (sign bits, 1/16 the memory, candidates rescored exactly; for "
                                "100k+ chunks). Changes an existing index without re-embedding."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete the index first (e.g. to change the model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON (a list for several PATHs)."),
    repos_file: Path = typer.Option(None, "--repos-file", help="Also index the source trees listed in FILE, one path "
                                    "a line ('#' starts a comment)."),
    ray: str = typer.Option(None, "--ray", help="Embed on Ray workers: 'local' (this machine) or a cluster's "
                            "HOST:PORT (e.g. head:6379) or ray://HOST:PORT; walking, chunking and store writes stay "
                            "here. A rerun resumes from the vectors already cached."),
    workers: int = typer.Option(None, "--workers", help="With --ray: workers (each loads the model once). Default: "
                                "one per 4 CPUs of the cluster."),
    shard_size: int = typer.Option(None, "--shard-size", help="With --ray: chunks per shard (default 512), the unit "
                                   "of work and of retry."),
) -> None:
    """Build or update the search index of one or more source trees (incremental)."""
    from codesift.index.config import VECTORS
    from codesift.index.fanout import IndexJob, index_repositories
    from codesift.index.indexer import default_index_dir
    from codesift.model.distributed import DEFAULT_SHARD_SIZE, check_ray

    roots = _repositories(paths, repos_file)
    if index and len(roots) > 1:
        raise ValueError("--index names the index folder of one source tree; with several, each gets its own "
                         "PATH/.codesift")
    if ray is None and (workers is not None or shard_size is not None):
        raise ValueError("--workers and --shard-size go with --ray local|HOST:PORT")
    if max_tokens is not None and max_tokens < 1:  # checked before anything is stored
        raise ValueError(f"--max-tokens must be a positive number of tokens (e.g. 512), got {max_tokens}")
    if vectors is not None and vectors not in VECTORS:
        raise ValueError(f"--vectors must be one of {', '.join(VECTORS)}, got {vectors!r}")
    if ray is not None:
        check_ray(ray)  # a wrong address or a missing extra: said before --rebuild deletes anything
    overrides = {k: v for k, v in (("model", model), ("store_uri", store_uri), ("store_token", store_token),
                                   ("max_tokens", max_tokens), ("dtype", dtype), ("vectors", vectors))
                 if v is not None}
    jobs = []
    for root in roots:
        index_dir = Path(index) if index else default_index_dir(root)
        jobs.append(IndexJob(root, index_dir, _index_config(index_dir, rebuild, overrides)))
    bar, progress = _progress_printer(sys.stderr.isatty() and not as_json)
    with bar if bar else contextlib.nullcontext():
        result = index_repositories(jobs, ray=ray, workers=workers, progress=progress,
                                    shard_size=DEFAULT_SHARD_SIZE if shard_size is None else shard_size)
    if ray is not None:
        _print_ray_summary(result)
    if len(roots) == 1:
        _print_report(result.reports[0].to_dict(), as_json)
    elif as_json:
        typer.echo(json.dumps([r.to_dict() for r in result.reports], indent=2))
    else:
        for r in result.reports:
            _print_report(r.to_dict(), False)


def _repositories(paths: list[str] | None, repos_file: Path | None) -> list[Path]:
    """The source trees to index: the PATHs, then those --repos-file lists (each once), all checked before any work."""
    listed = [(p, "") for p in paths or ()]
    if repos_file is not None:
        try:
            lines = Path(repos_file).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"--repos-file {repos_file} does not exist; pass a file that lists one source "
                                    "tree a line") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--repos-file {repos_file} cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                             "pass a UTF-8 text file that lists one source tree a line") from None
        found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise ValueError(f"--repos-file {repos_file} lists no source tree; write one path a line")
        listed += [(p, f" (listed in {repos_file})") for p in found]
    roots: dict[Path, Path] = {}
    for path, where in listed or [(".", "")]:
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{path}{where} does not exist; pass the root of a source tree to index")
        if not root.is_dir():
            raise FileNotFoundError(f"{path}{where} is not a directory; pass the root of the source tree to index")
        roots.setdefault(root.resolve(), root)
    return list(roots.values())


def _index_config(index_dir: Path, rebuild: bool, overrides: dict):
    """The settings of one index: its stored ones (a new or rebuilt index: a model `codesift tune` installed there,
    else $CODESIFT_MODEL, else the default), with the command line's options over them."""
    from dataclasses import replace

    from codesift.index.config import DB_NAME, IndexConfig, installed_tuned_model
    from codesift.index.indexer import clear_index
    from codesift.index.manifest import Manifest

    if rebuild and index_dir.exists():
        clear_index(index_dir)  # keeps a model that `codesift tune` installed (pass --model to use it)
    config = None
    if (index_dir / DB_NAME).is_file():
        m = Manifest(index_dir / DB_NAME)
        with _sqlite_errors(index_dir):
            config = IndexConfig.from_meta(m.get_meta())
        m.close()
        dtype = overrides.get("dtype")
        if config is not None and dtype and dtype != config.dtype:
            raise ValueError(f"index {index_dir} holds {config.dtype} vectors, not {dtype}; "
                             "pass --rebuild to re-embed it with --dtype " + dtype)
    if config is None:
        from codesift.model.loading import default_model

        config = IndexConfig(model=installed_tuned_model(index_dir) or default_model())
    return replace(config, **overrides)


def _print_ray_summary(result) -> None:
    if not result.workers:
        typer.echo("nothing to embed: no Ray worker was started", err=True)
        return
    retried = sum(result.retried.values())
    typer.echo(f"embedded {result.chunks_embedded:,} chunks in {result.shards} shards on {result.workers} Ray workers x "
               f"{result.threads} threads (startup {result.startup_seconds:.1f} s"
               f"{f', {retried} failed attempts retried' if retried else ''}); {result.seconds:.1f} s in all", err=True)


def search_command(
    query: str = typer.Argument(None, help="What to look for: words, an identifier, or a whole issue text (omit with --like)."),
    path: str = typer.Argument(None, help="Indexed source root (default: the nearest .codesift above the cwd)."),
    index: str = typer.Option(None, "--index", help="Index directory."),
    limit: int = typer.Option(10, "--limit", "-k", help="Number of results."),
    lang: str = typer.Option(None, "--lang", "-l", help="Only this language (e.g. python)."),
    path_glob: list[str] = typer.Option(None, "--path", "-p", help="Path glob (gitignore syntax); '!GLOB' excludes. Repeatable."),
    exclude_tests: bool = typer.Option(False, "--exclude-tests", help="Leave out test files."),
    like: str = typer.Option(None, "--like", help="FILE:LINE: find code similar to the chunk there (code2code)."),
    files: bool = typer.Option(False, "--files", help="Rank files (by the evidence of their chunks) instead of chunks."),
    budget: int = typer.Option(None, "--budget", help="Cap the snippets' total tokens (words and punctuation marks)."),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="Plain fusion order: no code-aware ranking "
                                   "(definitions first, exact identifiers, tests and docs lower)."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, dense or bm25."),
    two_stage: bool = typer.Option(False, "--two-stage", help="Matryoshka: scan at the small dim, rerank at full dim."),
    rrf_k: float = typer.Option(None, "--rrf-k", help="RRF constant (default 60)."),
    dense_weight: float = typer.Option(None, "--dense-weight", help="Weight of the dense list in fusion (default 1)."),
    bm25_weight: float = typer.Option(None, "--bm25-weight", help="Weight of the BM25 list in fusion (default 1)."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-index changed files before searching."),
    no_server: bool = typer.Option(False, "--no-server", help="Search in this process, not through the index's "
                                   "background query server (also CODESIFT_QUERY_SERVER=0)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as a JSON list."),
) -> None:
    """Search an index: hybrid dense + BM25 by default, or code similar to FILE:LINE with --like."""
    from codesift.index.request import SearchRequest

    if like and query and path is None:
        query, path = None, query  # `codesift search --like F:L PATH`
    fields = {"query": query, "like": like, "limit": limit, "language": lang, "path_globs": list(path_glob or ()),
              "exclude_tests": exclude_tests, "files": files, "budget": budget, "rrf_k": rrf_k,
              "dense_weight": dense_weight, "bm25_weight": bm25_weight}
    if not like:  # --like has its own defaults (SearchRequest)
        fields.update(mode=mode, two_stage=two_stage, rerank=not no_rerank)
    request = SearchRequest.of(**{k: v for k, v in fields.items() if v is not None})
    from codesift.index.config import DB_NAME

    index_dir = find_index_dir(path, index)
    if not (index_dir / DB_NAME).is_file():
        raise FileNotFoundError(f"no codesift index at {index_dir}; build one with `codesift index PATH`")
    answer = _search(index_dir, request, refresh, use_server=not no_server)
    st = answer.get("staleness")
    if st and st["stale"]:
        typer.secho(f"warning: the index is stale ({st['added']} new, {st['changed']} changed, "
                    f"{st['deleted']} deleted, {st['pending']} unfinished files); pass --refresh or run "
                    "`codesift index`", fg="yellow", err=True)
    _render_results(answer["results"], as_json, files=files)


def status_command(
    path: str = typer.Argument(None, help="Indexed source root (default: the nearest .codesift above the cwd)."),
    index: str = typer.Option(None, "--index", help="Index directory."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Files, chunks, model and staleness of an index."""
    from codesift.index.search import CodeIndex

    index_dir = find_index_dir(path, index)
    with _sqlite_errors(index_dir), CodeIndex(index_dir) as ix:
        st = ix.status()
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    s = st["staleness"]
    if st.get("problem"):
        typer.secho(f"warning: {st['problem']}", fg="yellow", err=True)
    typer.echo(f"root      {st['root']}\nindex     {st['index_dir']}\nstore     {st['store']} ({st['engine']})\n"
               f"model     {st['model']} (dim {st['dim']}, two-stage dim {st['small_dim']})\n"
               + (f"tuned     from {st['tuned']['base_model']} by `codesift tune` (held-out Acc@5 "
                  f"{st['tuned']['before']['acc@5']:.2f} -> {st['tuned']['after']['acc@5']:.2f})\n"
                  if st.get("tuned") else "") +
               f"files     {st['files']} indexed, {st['files_skipped']} skipped, {st['files_pending']} unfinished\n"
               f"chunks    {st['chunks']}\nlanguages {', '.join(f'{k} {v}' for k, v in st['languages'].items())}\n"
               f"stale     {'yes' if s['stale'] else 'no'} ({s['added']} new, {s['changed']} changed, "
               f"{s['deleted']} deleted)")


def _print_reindexed(report) -> None:
    d = report.to_dict()
    typer.echo(f"re-indexed: {d['files_changed']} changed, {d['files_deleted']} deleted, "
               f"{d['chunks_embedded']} chunks embedded ({d['seconds']:.1f} s)", err=True)


def watch_command(
    path: str = typer.Argument(".", help="Root of the source tree."),
    index: str = typer.Option(None, "--index", help="Index directory (default PATH/.codesift)."),
    debounce_ms: int = typer.Option(1000, "--debounce", help="Wait this long after the last change (ms)."),
) -> None:
    """Keep the index current: re-index (incrementally) whenever files change."""
    from codesift.index.watch import watch_and_index

    watch_and_index(path, index, debounce_ms=debounce_ms, on_report=_print_reindexed)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (heavy imports go inside the commands)."""
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("status")(status_command)
    app.command("watch")(watch_command)
