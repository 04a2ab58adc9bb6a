"""The training program: one plain loop (nanoGPT style) around the library pieces of ``codesift.train``.

setup (process group, model, optimiser, schedule, resume) -> for each step: take the global batch,
this rank's slice, gradient-cached forward/backward, all-reduce gradients, clip, step, log,
evaluate, checkpoint -> save the final model as a sentence-transformers folder.

Distributed: launch unchanged under ``torchrun`` or ``accelerate launch`` (they set RANK,
WORLD_SIZE, MASTER_ADDR); the process group is made here. Gradients are all-reduced by hand
after the step's backward passes instead of wrapping the model in DDP: the gradient cache runs
one backward per mini-batch, and DDP would all-reduce after each of them unless every pass but
the last were wrapped in ``no_sync``; one explicit averaged all-reduce is simpler and the same math.

FSDP (``fsdp: true``, for backbones whose weights and AdamW state do not fit one device): PyTorch's
FSDP2 ``fully_shard`` on every decoder layer and the backbone; it reduce-scatters the backbone's
gradients itself, so only the (small, replicated) pooling module is all-reduced by hand. Checkpoints
and the final model are gathered to full tensors on rank 0, so they load without FSDP.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from codesift.train.checkpoint import load_latest, save_checkpoint
from codesift.train.config import TrainConfig
from codesift.train.data import Pair, TaskBatchSampler, batch_negatives, load_pairs, shard
from codesift.train.gradcache import grad_cached_backward, plain_backward
from codesift.train.loss import LossOutput, dist_info, matryoshka_infonce

if TYPE_CHECKING:
    from codesift.model.embedder import Embedder

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ setup
def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group named by torchrun/accelerate's environment; (rank, world) = (0, 1) alone."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist_info()


def build_embedder(cfg: TrainConfig):
    """Load the backbone as a trainable Embedder (fp32 master weights), with LoRA if asked."""
    from codesift.model.embedder import Embedder

    emb = Embedder(cfg.model, device=cfg.device, dtype="float32", max_length=cfg.max_length, pooling=cfg.pooling,
                   prompts=cfg.prompts)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules="all-linear")
        emb.model = get_peft_model(emb.model, lora)
    if cfg.gradient_checkpointing:
        emb.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    emb.model.train()
    if emb.pooling_module is not None:
        emb.pooling_module.train()
    return emb


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_backbone(emb) -> int:
    """FSDP2: shard each block of the backbone's layer stack, then the backbone; returns the blocks sharded."""
    from torch.distributed.fsdp import fully_shard

    blocks = 0
    for name, module in emb.model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "layer", "h", "blocks"):
            for block in module:
                fully_shard(block)
                blocks += 1
    fully_shard(emb.model)
    return blocks


def _state_container(emb) -> torch.nn.Module:
    """One module over backbone and pooling whose parameter names match :func:`trainable_parameters`."""
    parts = {"model": emb.model}
    if emb.pooling_module is not None:
        parts["pooling"] = emb.pooling_module
    return torch.nn.ModuleDict(parts)


def trainable_parameters(emb) -> list[tuple[str, torch.nn.Parameter]]:
    """Named trainable parameters of the backbone and the pooling module."""
    named = [(f"model.{n}", p) for n, p in emb.model.named_parameters() if p.requires_grad]
    if emb.pooling_module is not None:
        named += [(f"pooling.{n}", p) for n, p in emb.pooling_module.named_parameters() if p.requires_grad]
    return named


def make_optimizer(params: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and 1-D parameters."""
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step``: linear warmup, then cosine/linear decay to ``min_lr_ratio``."""
    warmup = int(cfg.warmup_ratio * cfg.steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


# ------------------------------------------------------------------------------------------ one step
def step_gradients(emb, pairs: list[Pair], cfg: TrainConfig, dims: list[int],
                   autocast=nullcontext) -> tuple[LossOutput, int]:
    """Backprop the loss of this rank's slice of a global batch (one task) into ``.grad``; (loss, real tokens).

    The documents of all ranks are negatives (gathered with gradient inside the loss); each rank's
    parameter gradient must then be averaged over ranks (:func:`all_reduce_gradients`).
    """
    task = pairs[0].task
    if any(p.task != task for p in pairs):
        raise ValueError("a batch must hold pairs of one task")
    # InfoNCE is invariant under a joint permutation of the pairs, so order them by document length:
    # chunks then hold texts of similar length and pad far less (mined documents run 20-2,900 chars).
    pairs = sorted(pairs, key=lambda p: len(p.document), reverse=True)
    mb = cfg.mini_batch_size
    q_chunks = [emb.tokenize([p.query for p in pairs[i : i + mb]], task, "query", truncate=True)
                for i in range(0, len(pairs), mb)]
    # hard negatives follow the positives: rows B.. of the documents are candidates for every query
    negatives = sorted(batch_negatives(pairs, cfg.hard_negatives), key=len, reverse=True)
    documents = [p.document for p in pairs] + negatives
    d_chunks = [emb.tokenize(documents[i : i + mb], task, "document", truncate=True)
                for i in range(0, len(documents), mb)]
    tokens = int(sum(c["attention_mask"].sum() for c in q_chunks + d_chunks))
    loss_fn = partial(matryoshka_infonce, dims=dims, weights=cfg.matryoshka_weights, temperature=cfg.temperature,
                      symmetric=cfg.symmetric, gather=True)
    backward = grad_cached_backward if cfg.gradient_cache else plain_backward
    out = backward(emb.embed_features, q_chunks, d_chunks, loss_fn, autocast)
    return out, tokens


def all_reduce_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks (one flat buffer per call: few, large messages).

    FSDP-sharded parameters (DTensors) are skipped: FSDP has already reduce-scattered theirs.
    """
    params = [p for p in params if not _is_dtensor(p)]
    if world == 1 or not params:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Scale gradients so their global L2 norm is at most ``max_norm``; returns the norm before clipping.

    The same arithmetic as ``torch.nn.utils.clip_grad_norm_``, but it also takes a mix of FSDP-sharded
    (DTensor) and plain gradients, whose norms must be combined across ranks before the scale is known.
    """
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g for g in grads if _is_dtensor(g)]
    plain = [g for g in grads if not _is_dtensor(g)]
    total = math.hypot(float(torch.nn.utils.get_total_norm(sharded).full_tensor()) if sharded else 0.0,
                       float(torch.nn.utils.get_total_norm(plain)) if plain else 0.0)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total


# ------------------------------------------------------------------------------------------ measuring
def measure_matmul_flops(size: int = 2048, seconds: float = 1.0, dtype: torch.dtype = torch.bfloat16) -> float:
    """Achieved FLOP/s of a square matmul in ``dtype`` on this machine now (the MFU denominator).

    A run in fp32 passes fp32: a CPU without native bf16 emulates it hundreds of times slower."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm up
    n, start = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * size**3 * n / elapsed


def flops_per_token(emb, seq_len: float) -> float:
    """Training FLOPs per token: 6 x non-embedding parameters + attention (PaLM appendix B)."""
    n = sum(p.numel() for p in emb.model.parameters())
    n -= emb.model.get_input_embeddings().weight.numel()
    if emb.pooling_module is not None:
        n += sum(p.numel() for p in emb.pooling_module.parameters())
    cfg = emb.model.config
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def peak_memory_mb() -> float:
    """Peak resident memory of this process (CPU) or peak allocated CUDA memory, in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------ eval
def dev_eval(emb, beir_dir: str, max_docs: int) -> dict[str, float]:
    """nDCG@10 (and MRR@10) of the model on a small BEIR folder, through codesift.eval."""
    from codesift.eval.data import load_beir_task
    from codesift.eval.metrics import evaluate_run
    from codesift.eval.search import exact_top_k, to_run

    task = load_beir_task(beir_dir)
    doc_ids = task.doc_ids[:max_docs]
    qids = [q for q in task.query_ids if q in task.qrels]
    was_training = emb.model.training
    emb.model.eval()
    try:
        docs = emb.encode([task.corpus[d] for d in doc_ids], task=task.task, role="document", truncate=True)
        queries = emb.encode([task.queries[q] for q in qids], task=task.task, role="query", truncate=True)
    finally:
        emb.model.train(was_training)
    scores, idx = exact_top_k(queries, docs, 10)
    metrics = evaluate_run(task.qrels, to_run(qids, doc_ids, scores, idx))
    return {"ndcg_at_10": metrics["ndcg_at_10"], "mrr_at_10": metrics["mrr_at_10"]}


# ------------------------------------------------------------------------------------------ the loop
def _rng_seed(cfg: TrainConfig, step: int, rank: int) -> int:
    # Reseeded every step from (seed, step, rank): a resumed run draws the same dropout masks.
    return (cfg.seed * 1_000_003 + step * 1009 + rank) % (2**63)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


def _resume_state(cfg: TrainConfig, out: Path, resume: bool, is_main: bool) -> tuple[int, dict[str, Any] | None]:
    """(start step, checkpoint state or None); refuses a resume under another config and a silent restart."""
    if not resume:
        if is_main and out.is_dir() and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
            raise ValueError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
        return 0, None
    found = load_latest(out)
    if found is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {out}/checkpoints; start without --resume")
    start_step, state = found
    free = ("out", "steps", "save_every", "keep_last", "eval_every", "progress", "tensorboard", "peak_probe_s")
    saved = {k: v for k, v in state["config"].items() if k not in free}
    changed = [k for k, v in saved.items() if cfg.to_dict().get(k) != v]
    if changed:
        raise ValueError(f"--resume with a different config ({', '.join(changed)}); resume with the same settings")
    return start_step, state


def _restore(state: dict[str, Any], emb, named, optimizer, scheduler, fsdp: bool) -> None:
    """Load a checkpoint's parameters, optimizer and schedule (full tensors, re-sharded under FSDP)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(_state_container(emb), optimizer, model_state_dict=state["params"],
                       optim_state_dict=state["optimizer"], options=StateDictOptions(full_state_dict=True))
    else:
        missing = {n for n, _ in named} - set(state["params"])
        if missing:
            raise ValueError(f"checkpoint lacks parameters {sorted(missing)[:3]}...: was it made with another model?")
        with torch.no_grad():
            for n, p in named:
                p.copy_(state["params"][n])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def _checkpoint(out: Path, done: int, cfg: TrainConfig, emb, named, optimizer, scheduler, fsdp: bool,
                is_main: bool) -> None:
    """Write step ``done``'s checkpoint (under FSDP every rank gathers, rank 0 writes)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_sd, optim_sd = get_state_dict(_state_container(emb), optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        model_sd = {n: p.detach().cpu().clone() for n, p in named}
        optim_sd = optimizer.state_dict()
    if is_main:
        save_checkpoint(out, done, {"step": done, "config": cfg.to_dict(), "params": model_sd,
                                    "optimizer": optim_sd, "scheduler": scheduler.state_dict()}, cfg.keep_last)


class _MetricsLog:
    """metrics.jsonl (and TensorBoard) on rank 0; a resumed run first drops the rows after its checkpoint."""

    def __init__(self, out: Path, cfg: TrainConfig, is_main: bool, start_step: int) -> None:
        self.file = self.writer = None
        if not is_main:
            return
        if start_step:
            _truncate_metrics(out / "metrics.jsonl", start_step)
        self.file = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (close() closes it)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def emit(self, row: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        for h in (self.file, self.writer):
            if h is not None:
                h.close()


def _global_figures(tokens: int, out_loss: LossOutput, world: int) -> tuple[int, LossOutput]:
    """The step's token count summed and its losses averaged over ranks."""
    if world == 1:
        return tokens, out_loss
    import torch.distributed as dist

    t = torch.tensor([float(tokens), float(out_loss.loss), *out_loss.per_dim.values()], dtype=torch.float64)
    dist.all_reduce(t)
    return int(t[0].item()), LossOutput(t[1] / world, {d: float(v) / world for d, v in zip(out_loss.per_dim, t[2:])})


def _step_row(cfg: TrainConfig, emb, done: int, out_loss: LossOutput, tokens: int, lr: float, grad_norm: float,
              dt: float, elapsed: float, peak: float, world: int, first: Pair) -> dict[str, Any]:
    """One metrics.jsonl row for a finished step."""
    tok_s = tokens / dt
    seq = tokens / (2 * cfg.batch_size)
    return {"step": done, "loss": float(out_loss.loss), **{f"loss_dim{d}": v for d, v in out_loss.per_dim.items()},
            "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "tokens_per_s": tok_s,
            "mfu": tok_s * flops_per_token(emb, seq) / (peak * world) if peak else None,
            "peak_mem_mb": peak_memory_mb(), "step_s": dt, "elapsed_s": elapsed,
            "task": first.task, "dataset": first.dataset}


def _broadcast_weights(emb) -> None:
    """Every rank starts from rank 0's weights."""
    import torch.distributed as dist

    with torch.no_grad():
        for _, p in trainable_parameters(emb):
            dist.broadcast(p, 0)


def _save_final(cfg: TrainConfig, out: Path, emb, fsdp: bool, is_main: bool) -> None:
    """Gather FSDP shards and write the model as a sentence-transformers folder (rank 0)."""
    full_backbone = None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full_backbone = get_model_state_dict(emb.model, options=options)
    if is_main:
        emb.model.eval()
        if cfg.save_max_length:
            limit = getattr(emb.model.config, "max_position_embeddings", None) or cfg.save_max_length
            emb.max_length = min(cfg.save_max_length, int(limit))
        emb.save(out, state_dict=full_backbone)


@dataclass
class _Run:
    """What the steps of one training run share: where it writes, which rank it is, the model and its optimiser."""

    cfg: TrainConfig
    out: Path
    rank: int
    world: int
    fsdp: bool
    start_step: int
    pairs: list[Pair]
    sampler: TaskBatchSampler
    emb: Embedder
    dims: list[int]
    named: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Callable[[], Any]
    peak: float
    metrics: _MetricsLog

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named]


@dataclass
class _Step:
    """A finished optimiser step's figures (summed or averaged over ranks)."""

    out_loss: LossOutput
    tokens: int
    lr: float
    grad_norm: float
    seconds: float
    first: Pair  # the batch's first pair: its task and dataset go into the log


def train(cfg: TrainConfig, resume: bool = False, stop_at: float | None = None) -> Path:
    """Run training as configured; returns the output folder (which holds the final model).

    ``stop_at`` (a ``time.time()``): a time budget; the step that ends past it is checkpointed and the model
    saved as it is (``codesift tune`` sizes ``steps`` to end before it; this is the guard)."""
    run = _start(cfg, resume, stop_at)
    if run.start_step == 0:
        _evaluate(run, 0)
    progress = _progress_bar(run)
    batches = run.sampler.batches(run.start_step)
    t_start = time.perf_counter()
    for step in range(run.start_step, cfg.steps):
        result = _train_step(run, step, next(batches))
        done = step + 1
        _log_step(run, done, result, time.perf_counter() - t_start, progress)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            _evaluate(run, done)
        out_of_time = stop_at is not None and time.time() >= stop_at and done < cfg.steps
        if (cfg.save_every and (done % cfg.save_every == 0 or done == cfg.steps) or out_of_time) and \
                (run.is_main or run.fsdp):
            _checkpoint(run.out, done, cfg, run.emb, run.named, run.optimizer, run.scheduler, run.fsdp, run.is_main)
        if out_of_time:
            log.warning("time budget spent after %d of %d steps; saving the model as it is", done, cfg.steps)
            break
    if progress is not None:
        progress.close()
    _finish(run)
    return run.out


def _start(cfg: TrainConfig, resume: bool, stop_at: float | None) -> _Run:
    """Check the config, join the process group, and build data, model, optimiser and schedule (a checkpoint's
    state over them when resuming)."""
    if not cfg.data:
        raise ValueError("no training data: pass --data pairs.jsonl (or `data:` in the config)")
    if cfg.fsdp and cfg.lora:
        raise ValueError("fsdp with lora is not supported: LoRA already trains in small memory; use one of them")
    from codesift.model.device import pick_device

    out = Path(cfg.out)
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    if stop_at is not None and world > 1:  # ranks reading their own clocks could stop at different steps
        raise ValueError("a time budget (stop_at) needs one process; size `steps` instead")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the {world} processes")
    is_main = rank == 0
    start_step, state = _resume_state(cfg, out, resume, is_main)

    torch.manual_seed(cfg.seed)  # identical initial pooling-module weights on every rank
    pairs = load_pairs(cfg.data, cfg.group_by)
    sampler = TaskBatchSampler(pairs, cfg.batch_size, cfg.mixing, cfg.seed)
    emb = build_embedder(cfg)
    dims = list(cfg.matryoshka_dims or emb.matryoshka_dims)
    if world > 1 and state is None:
        _broadcast_weights(emb)
    fsdp = cfg.fsdp and world > 1
    if cfg.fsdp and world == 1:
        log.warning("fsdp: one process, nothing to shard; training unsharded")
    if fsdp:
        log.info("fsdp: %d blocks sharded over %d processes", shard_backbone(emb), world)
        emb.inference_mode = False
    named = trainable_parameters(emb)
    optimizer = make_optimizer(named, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=cfg))
    if state is not None:
        _restore(state, emb, named, optimizer, scheduler, fsdp)
    use_bf16 = cfg.bf16 and device.type in ("cpu", "cuda")
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext
    compute_dtype, probe_size = (torch.bfloat16, 2048) if use_bf16 else (torch.float32, 512)
    probe = is_main and cfg.peak_probe_s > 0
    peak = measure_matmul_flops(probe_size, cfg.peak_probe_s, compute_dtype) if probe else 0.0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log.info("%d pairs in %d datasets; %d trainable parameters; %s matmul peak %.1f GFLOP/s",
                 len(pairs), len(sampler.groups), sum(p.numel() for _, p in named), compute_dtype, peak / 1e9)
    metrics = _MetricsLog(out, cfg, is_main, start_step)
    return _Run(cfg, out, rank, world, fsdp, start_step, pairs, sampler, emb, dims, named, optimizer, scheduler,
                autocast, peak, metrics)


def _progress_bar(run: _Run):
    """A tqdm bar on rank 0 when ``cfg.progress`` asks for one, else None."""
    if not (run.is_main and run.cfg.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.cfg.steps, initial=run.start_step, desc="train", unit="step", file=sys.stderr)


def _train_step(run: _Run, step: int, batch: list[int]) -> _Step:
    """One step: this rank's share of the batch, backward, all-reduce, clip, update."""
    cfg = run.cfg
    t0 = time.perf_counter()
    torch.manual_seed(_rng_seed(cfg, step, run.rank))
    local = [run.pairs[i] for i in shard(batch, run.rank, run.world)]
    run.optimizer.zero_grad(set_to_none=True)
    out_loss, tokens = step_gradients(run.emb, local, cfg, run.dims, run.autocast)
    all_reduce_gradients(run.params, run.world)
    grad_norm = clip_gradients(run.params, cfg.grad_clip) if cfg.grad_clip > 0 else float("nan")
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    dt = time.perf_counter() - t0
    tokens, out_loss = _global_figures(tokens, out_loss, run.world)
    return _Step(out_loss, tokens, lr, grad_norm, dt, local[0])


def _log_step(run: _Run, done: int, result: _Step, elapsed: float, progress) -> None:
    """The step's metrics row (every ``log_every`` steps and the last, rank 0) and the progress bar."""
    cfg = run.cfg
    if run.is_main and (done % cfg.log_every == 0 or done == cfg.steps):
        row = _step_row(cfg, run.emb, done, result.out_loss, result.tokens, result.lr, result.grad_norm,
                        result.seconds, elapsed, run.peak, run.world, result.first)
        run.metrics.emit(row)
        if progress is not None:
            progress.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
    if progress is not None:
        progress.update(1)


def _evaluate(run: _Run, step: int) -> None:
    """Dev-set metrics at ``step`` when ``eval_dir`` is set (every rank under FSDP: a sharded forward needs all)."""
    if run.cfg.eval_dir and (run.is_main or run.fsdp):
        scores = dev_eval(run.emb, run.cfg.eval_dir, run.cfg.eval_max_docs)
        run.metrics.emit({"step": step, **{f"eval_{k}": v for k, v in scores.items()}})
    if run.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _finish(run: _Run) -> None:
    """Merge LoRA, evaluate at the end, save the model and leave the process group."""
    if run.cfg.lora:
        run.emb.model = run.emb.model.merge_and_unload()
    _evaluate(run, run.cfg.steps)
    _save_final(run.cfg, run.out, run.emb, run.fsdp, run.is_main)
    run.metrics.close()
    if run.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
