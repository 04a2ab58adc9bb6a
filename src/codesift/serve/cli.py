"""`codesift` commands of the serve area (serve, mcp); see codesift/cli.py for the convention."""

from __future__ import annotations

import os
from pathlib import Path

import typer

API_KEY_ENV = "CODESIFT_API_KEY"


def _default(name: str):
    """A ServeConfig default, so that each default lives in one place."""
    from codesift.serve.config import ServeConfig

    return ServeConfig.__dataclass_fields__[name].default


def read_api_keys(key_file: Path | None, env: str = API_KEY_ENV) -> list[str]:
    """API keys from a file (one per line, '#' comments) and the environment (comma-separated)."""
    keys: list[str] = []
    if key_file is not None:
        if not key_file.is_file():
            raise FileNotFoundError(f"API key file {key_file} does not exist")
        keys += [ln.strip() for ln in key_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    keys += [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    return keys


def _index_model(index_dir: Path | None) -> str | None:
    """The model an index was built with (its queries must be embedded by it), or None."""
    from codesift.index.config import DB_NAME

    if index_dir is None or not (Path(index_dir) / DB_NAME).is_file():
        return None
    from codesift.index.manifest import Manifest

    manifest = Manifest(Path(index_dir) / DB_NAME)
    try:
        return (manifest.get_meta().get("config") or {}).get("model")
    finally:
        manifest.close()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (heavy imports go inside the commands)."""

    @app.command("serve")
    def serve(
        model: str = typer.Option(None, "--model", "-m",
                                  help="Hub id, model folder or .gguf file (default: the model of --index, else "
                                  "$CODESIFT_MODEL, else jina-code-embeddings-0.5b with a GPU, codesift-mini without)."),
        index: Path | None = typer.Option(None, "--index", help="Index folder: enables POST /v1/search."),
        host: str = typer.Option(_default("host"), help="Address to bind; anything but loopback needs an API key."),
        port: int = typer.Option(_default("port"), help="Port to listen on."),
        default_task: str = typer.Option(_default("default_task"), help="Task of requests that name none."),
        served_model_name: str | None = typer.Option(None, help="Model id shown to clients."),
        device: str = typer.Option(_default("device"), help="auto, cpu, cuda, mps."),
        dtype: str = typer.Option(_default("dtype"), help="auto (with --index: the index's), int8 (encoders on the CPU), float32, bfloat16, float16."),
        max_length: int = typer.Option(_default("max_length"), help="Longest input in tokens (longer: 400 unless truncate=true)."),
        max_batch_tokens: int = typer.Option(_default("max_batch_tokens"), help="Token budget of one engine batch."),
        max_wait_ms: float = typer.Option(_default("max_wait_ms"), help="How long an idle engine waits for a batch to fill."),
        max_inputs: int = typer.Option(_default("max_inputs_per_request"), help="Most inputs in one request."),
        max_body_mb: float = typer.Option(_default("max_body_bytes") / 2**20, help="Largest request body in MiB (larger: 413)."),
        max_queue_tokens: int = typer.Option(_default("max_queue_tokens"), help="Tokens that may wait; beyond: 429 with Retry-After."),
        no_batching: bool = typer.Option(False, "--no-batching", help="One forward pass per request (to compare)."),
        body_timeout: float = typer.Option(_default("body_timeout_s"), help="Seconds a request body may take to arrive (else 408)."),
        api_key_file: Path | None = typer.Option(None, help=f"File of bearer API keys, one a line "
                                                                f"(also: ${API_KEY_ENV}, comma-separated)."),
        cors_origin: list[str] = typer.Option([], help="Allow browser calls from this origin (repeatable)."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve embeddings (OpenAI and hosted-API compatible) and search over HTTP."""
        import uvicorn

        from codesift.model.loading import default_model
        from codesift.serve.app import create_app
        from codesift.serve.config import ServeConfig
        from codesift.serve.http import uvicorn_config

        config = ServeConfig(
            model=model or _index_model(index) or default_model(), served_model_name=served_model_name, index_dir=index, host=host, port=port,
            default_task=default_task, device=device, dtype=dtype, max_length=max_length,
            batching=not no_batching, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms,
            max_inputs_per_request=max_inputs, max_body_bytes=int(max_body_mb * 1024 * 1024),
            max_queue_tokens=max_queue_tokens, api_keys=read_api_keys(api_key_file), cors_origins=cors_origin,
            body_timeout_s=body_timeout,
        )
        server: uvicorn.Server | None = None

        def stop() -> None:  # the model failed to load: stop serving, then exit non-zero (as TEI does)
            if server is not None:
                server.should_exit = True

        app_ = create_app(config, on_load_failure=stop)
        server = uvicorn.Server(uvicorn_config(app_, host=host, port=port, log_level=log_level,
                                               timeout_graceful_shutdown=int(config.drain_timeout_s)))
        server.run()
        state = app_.state.codesift
        if state.status == "failed":
            exit_on_load_failure(state.error)


    @app.command("mcp")
    def mcp_cmd(
        paths: list[str] = typer.Argument(None, help="Indexed source roots the tools may search (default: .)."),
    ) -> None:
        """Serve the index to coding agents over MCP (stdio): search_code, find_similar, index_status, reindex."""
        from codesift.serve.mcp import run_stdio

        run_stdio(paths or ["."])


def exit_on_load_failure(exc: BaseException | None) -> None:
    """End `codesift serve` after a failed load: one `error:` line; exit 2 for a user mistake, else 1."""
    import sys

    from codesift.model.loading import ModelNotAvailableError

    if isinstance(exc, (ValueError, OSError, ModelNotAvailableError)):
        raise exc  # codesift.cli.main prints it as one line and exits 2
    typer.secho(f"error: the model failed to load: {type(exc).__name__}: {exc}", fg="red", err=True)
    sys.exit(1)
