"""`codesift` commands of the train area; see codesift/cli.py for the convention."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (heavy imports go inside the commands)."""

    @app.command("train")
    def train_command(
        config: Path | None = typer.Argument(None, help="YAML file of TrainConfig fields (see configs/)."),
        model: str | None = typer.Option(None, "--model", help="Backbone: HF folder, hub id or .gguf file."),
        data: list[Path] | None = typer.Option(None, "--data", help="Pair file (JSONL); repeat for several."),
        steps: int | None = typer.Option(None, "--steps", help="Optimiser steps."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size (all processes)."),
        mini_batch_size: int | None = typer.Option(None, "--mini-batch-size", help="Gradient-cache chunk size."),
        gradient_cache: bool | None = typer.Option(
            None, "--gradient-cache/--no-gradient-cache",
            help="Cache embedding gradients (flat memory) or keep every chunk's graph (no second forward)."),
        fsdp: bool | None = typer.Option(None, "--fsdp/--no-fsdp", help="Shard the backbone with FSDP2 (under torchrun)."),
        lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
        pooling: str | None = typer.Option(None, "--pooling", help="lasttoken | mean | latent_attention."),
        lora: bool | None = typer.Option(None, "--lora/--full", help="LoRA adapters instead of full fine-tuning."),
        eval_dir: Path | None = typer.Option(None, "--eval-dir", help="Small BEIR folder for the dev eval."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (model, metrics.jsonl, checkpoints)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    ) -> None:
        """Fine-tune a code LLM into an embedding model with the paper's contrastive recipe."""
        from codesift.train.config import TrainConfig
        from codesift.train.loop import train

        cfg = TrainConfig.from_yaml(config) if config else TrainConfig()
        cfg = cfg.replace(
            model=model, data=[str(p) for p in data] if data else None, steps=steps, batch_size=batch_size,
            mini_batch_size=mini_batch_size, gradient_cache=gradient_cache, fsdp=fsdp, lr=lr, pooling=pooling, lora=lora,
            eval_dir=str(eval_dir) if eval_dir else None, out=str(out) if out else None,
        )
        result = train(cfg, resume=resume)
        if os.environ.get("RANK", "0") == "0":
            typer.echo(f"model saved to {result} (load it with Embedder({str(result)!r}))")
