"""`codesift tune`: fine-tune the index's model on the repository's own history, keep it only if it wins.

check the repository -> split its history in time (``history``) -> mine pairs before the split -> measure the
base model on the held-out commits (``evaluate``) -> train within the time budget (``train.loop.train``, its
checkpoints under ``INDEX/tune/`` so an interrupted run resumes) -> measure the tuned model -> if it wins,
install it in ``INDEX/tuned-model/``, record it in ``INDEX/tune.json`` and re-embed the index with it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from codesift.index.config import (
    DB_NAME,
    INDEX_DIRNAME,
    TUNE_RECORD,
    TUNE_WORK_DIRNAME,
    TUNED_MODEL_DIRNAME,
    IndexConfig,
    read_tune_record,
)
from codesift.tune.history import RepositoryProblem, SplitConfig, check_repository, split_history

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
PLAN = "plan.json"


@dataclass
class TuneConfig:
    """The budget and the training recipe of a tune (the rest is ``TrainConfig``'s defaults)."""

    minutes: float = 10.0            # the whole run: mining, both measures, training, re-embedding
    split: SplitConfig = field(default_factory=SplitConfig)
    batch_size: int = 32             # in-batch negatives of a small repository; CPU-sized
    hard_negatives: int = 1          # per pair, from the miner's BM25 / same-file negatives
    lr: float = 2e-5
    max_length: int = 256            # training cut (chunks are cut by the index's limit)
    max_epochs: float = 3.0          # a small history is not repeated more than this
    device: str = "auto"

    def __post_init__(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"--minutes must be a positive number, got {self.minutes}")


@dataclass
class TuneReport:
    """What a tune did (the ``--json`` summary)."""

    root: str
    index_dir: str
    base_model: str
    head: str = ""
    cutoff: str = ""                 # the tree searched by the measure and the end of the training history
    usable_commits: int = 0
    held_out_commits: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    evaluation: str = "dense retrieval of changed files (Acc@k) over the source chunks at the cutoff"
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    resumed_from_step: int = 0
    minutes: float = 0.0
    installed: bool = False
    model: str = ""                  # the model the index uses now
    out: str | None = None
    message: str = ""

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _index_config(index_dir: Path) -> IndexConfig | None:
    if not (index_dir / DB_NAME).is_file():
        return None
    from codesift.index.manifest import Manifest

    manifest = Manifest(index_dir / DB_NAME)
    try:
        return IndexConfig.from_meta(manifest.get_meta())
    finally:
        manifest.close()


def base_model(index_dir: Path) -> str:
    """The model a tune starts from: the index's (the base it was tuned from, when a tuned one is installed),
    else the default model."""
    from codesift.model.loading import default_model

    config = _index_config(index_dir)
    record = read_tune_record(index_dir)
    if config is None:
        return default_model()
    if record and record.get("installed") and Path(config.model) == Path(record["model"]):
        return record["base_model"]
    return config.model


def reembed(root: Path, index_dir: Path, model: str, echo: Echo) -> None:
    """Rebuild the index of ``root`` in ``index_dir`` with ``model`` (its other settings kept)."""
    from codesift.index.indexer import Indexer, clear_index

    config = _index_config(index_dir) or IndexConfig()
    if (index_dir / DB_NAME).is_file():
        clear_index(index_dir)
    echo(f"re-embedding the index {index_dir} with {model}")
    ix = Indexer(root, index_dir, replace(config, model=model, dtype="auto"))
    try:
        report = ix.update()
    finally:
        ix.close()
    echo(f"index: {report.chunks_total} chunks ({report.seconds:.0f} s)")


def stored_dtype(model: str) -> str | None:
    """The float dtype of ``model``'s stored weights (safetensors), e.g. ``float16`` for the shipped codesift-mini;
    None when it cannot be read (a GGUF, .bin files)."""
    from safetensors import safe_open

    from codesift.model.loading import resolve_model, weight_files

    files = [f for f in weight_files(resolve_model(model)) if f.suffix == ".safetensors"]
    if not files:
        return None
    with safe_open(str(files[0]), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    floats = dtypes & {"F16", "BF16", "F32"}
    return {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}[floats.pop()] if len(floats) == 1 else None


def save_like_base(tuned, out: Path, dtype: str | None) -> Path:
    """Save ``tuned`` with its weights in the base model's stored dtype, so the tuned folder is no bigger than the
    base's (training ran in float32; a float16 copy moves vectors by about 1e-4 in cosine, scripts/ship_mini.py)."""
    import torch

    if dtype in (None, "float32"):
        return tuned.save(out)
    cast = getattr(torch, dtype)
    state = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in tuned.model.state_dict().items()}
    return tuned.save(out, state_dict=state)


def _plan_steps(budget_s: float, eval_s: float, texts_embedded: int, n_pairs: int, cfg: TuneConfig,
                batch: int) -> int:
    """Steps that fit ``budget_s``: a step's texts (queries, documents, negatives) cost about four forward passes
    each (forward + backward + the gradient cache's second forward), timed by the base measure's encode."""
    per_text = eval_s / max(texts_embedded, 1)
    step_s = 4 * per_text * batch * (2 + cfg.hard_negatives)
    most = max(1, int(cfg.max_epochs * n_pairs / batch))
    return max(1, min(most, int(budget_s / max(step_s, 1e-6))))


def tune(path: str | Path, index: str | Path | None = None, cfg: TuneConfig | None = None,
         out: str | Path | None = None, echo: Echo = _stderr) -> TuneReport:
    """Tune the index's model on the repository at ``path`` (see the module docstring); a ``RepositoryProblem``
    (nothing changed) when the repository cannot be learned from."""
    from codesift.data.mining import MineReport
    from codesift.index.indexer import DocumentTokens
    from codesift.model.embedder import Embedder
    from codesift.tune.evaluate import evaluate, wins
    from codesift.tune.history import tree_chunks

    cfg = cfg or TuneConfig()
    t0 = time.time()
    root = check_repository(path)
    index_dir = Path(index).resolve() if index else root / INDEX_DIRNAME
    base = base_model(index_dir)
    mined = MineReport()
    split = split_history(root, cfg.split, mined)  # the last refusal: nothing is written before it
    report = TuneReport(str(root), str(index_dir), base, split.head, split.cutoff, split.usable, len(split.held_out))
    echo(f"{split.usable} usable commits; the newest {len(split.held_out)} held out, training on the history "
         f"up to {split.cutoff[:12]}")

    work = index_dir / TUNE_WORK_DIRNAME
    plan = _saved_plan(work, split.head, base)
    base_emb = Embedder(base, device=cfg.device, dtype="float32")
    counter = DocumentTokens(base_emb)
    index_cap = (_index_config(index_dir) or IndexConfig()).max_tokens
    mining = replace(cfg.split.mining, max_tokens=min(index_cap, base_emb.max_length))  # chunks as the index cuts them
    chunks = tree_chunks(root, split.cutoff, mining, counter)
    if plan is None:
        plan = _new_plan(root, split, replace(cfg.split, mining=mining), counter, mined, base_emb, chunks, cfg, t0,
                         work, base, echo)
    else:
        echo(f"resuming the tune in {work}")
    report.pairs, report.before, report.steps = plan["pairs"], plan["before"], plan["steps"]
    echo(f"base: Acc@1 {report.before['acc@1']:.2f}  Acc@5 {report.before['acc@5']:.2f}  Acc@10 {report.before['acc@10']:.2f}")

    pooling, max_length = base_emb.pooling, base_emb.max_length
    del base_emb, counter  # training loads the model again; one copy in memory at a time
    if not plan["trained"]:
        _train_tune(plan, cfg, base, pooling, max_length, work, t0, report, echo)

    tuned = Embedder(work / "run", device=cfg.device, dtype="float32")
    report.after = evaluate(tuned, chunks, split.held_out)
    echo(f"tuned: Acc@1 {report.after['acc@1']:.2f}  Acc@5 {report.after['acc@5']:.2f}  Acc@10 {report.after['acc@10']:.2f}")
    if out is not None:
        report.out = str(save_like_base(tuned, Path(out), stored_dtype(base)).resolve())
    if wins(report.before, report.after):
        target = _install_tuned(tuned, index_dir, report)
        del tuned  # the re-embed loads the installed copy
        reembed(root, index_dir, str(target), echo)
        report.installed, report.model = True, str(target)
        report.message = (f"installed: the tuned model beats {base} on the held-out commits "
                          f"(Acc@5 {report.before['acc@5']:.2f} -> {report.after['acc@5']:.2f}); "
                          f"the index uses {index_dir / TUNED_MODEL_DIRNAME}")
    else:
        config = _index_config(index_dir)
        report.model = config.model if config else base
        report.message = (f"kept {report.model}: the tuned model does not beat {base} on the held-out commits "
                          f"(Acc@5 {report.before['acc@5']:.2f} -> {report.after['acc@5']:.2f}, "
                          f"Acc@1 {report.before['acc@1']:.2f} -> {report.after['acc@1']:.2f})")
    shutil.rmtree(work, ignore_errors=True)  # done: its checkpoints are large
    report.minutes = round((time.time() - t0) / 60, 2)
    echo(report.message)
    return report


def _saved_plan(work: Path, head: str, base: str) -> dict | None:
    """The plan of an interrupted tune of the same commit and model, else None (and the work folder cleared)."""
    plan_path = work / PLAN
    plan = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
    if plan and (plan["head"], plan["base_model"]) != (head, base):
        plan = None  # another commit or another model: start again
    if plan is None and work.exists():
        shutil.rmtree(work)
    return plan


def _new_plan(root: Path, split, split_cfg: SplitConfig, counter, mined, base_emb, chunks, cfg: TuneConfig,
              t0: float, work: Path, base: str, echo: Echo) -> dict:
    """Mine the training pairs, measure the base model, size the training to the budget; write and return the plan."""
    from codesift.data.pipeline import write_pairs
    from codesift.eval.bm25 import BM25Index
    from codesift.tune.evaluate import evaluate
    from codesift.tune.history import training_pairs

    echo("mining pairs from the history and the docstrings ...")
    pairs, counts = training_pairs(root, split, split_cfg, counter, BM25Index, mined)
    if len(pairs) < 4:
        raise RepositoryProblem(f"{root} gave {len(pairs)} training pair(s) before its held-out commits; "
                                "`codesift tune` needs at least 4")
    work.mkdir(parents=True, exist_ok=True)
    write_pairs(pairs, work / "pairs.jsonl")
    echo(f"{counts['commit_pairs']} commit pairs, {counts['docstring_pairs']} docstring pairs; measuring the base "
         f"model on {len(split.held_out)} held-out commits ...")
    te = time.time()
    before = evaluate(base_emb, chunks, split.held_out)
    eval_s = time.time() - te
    batch = max(2, min(cfg.batch_size, len(pairs) // 2))
    budget = cfg.minutes * 60 - (time.time() - t0) - 2 * eval_s  # the after measure and the re-embed remain
    steps = _plan_steps(budget, eval_s, len(chunks) + len(split.held_out), len(pairs), cfg, batch)
    plan = {"head": split.head, "base_model": base, "cutoff": split.cutoff, "pairs": counts, "before": before,
            "eval_s": eval_s, "batch_size": batch, "steps": steps, "trained": False}
    (work / PLAN).write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return plan


def _train_tune(plan: dict, cfg: TuneConfig, base: str, pooling: str, max_length: int, work: Path, t0: float,
                report: TuneReport, echo: Echo) -> None:
    """Train the planned steps into ``work/run`` (resuming from its last checkpoint), then mark the plan trained."""
    import torch

    from codesift.train.checkpoint import list_checkpoints
    from codesift.train.config import TrainConfig
    from codesift.train.loop import train

    run_dir = work / "run"
    train_cfg = TrainConfig().replace(
        model=base, pooling=pooling, max_length=min(cfg.max_length, max_length),
        save_max_length=max_length, data=[str(work / "pairs.jsonl")], group_by="file",
        hard_negatives=cfg.hard_negatives, steps=plan["steps"], batch_size=plan["batch_size"],
        mini_batch_size=min(16, plan["batch_size"]), lr=cfg.lr, bf16=torch.cuda.is_available(),
        device=cfg.device, out=str(run_dir), save_every=max(1, plan["steps"] // 5), keep_last=1, peak_probe_s=0.0,
        progress=True)
    found = list_checkpoints(run_dir)
    report.resumed_from_step = found[-1][0] if found else 0
    echo(f"training {plan['steps']} steps of {plan['batch_size']} pairs"
         + (f", from step {report.resumed_from_step}" if found else "") + " ...")
    train(train_cfg, resume=bool(found), stop_at=t0 + cfg.minutes * 60 - 2 * plan["eval_s"])
    plan["trained"] = True
    (work / PLAN).write_text(json.dumps(plan, indent=2), encoding="utf-8")


def _install_tuned(tuned, index_dir: Path, report: TuneReport) -> Path:
    """Save ``tuned`` as the index's tuned model (staged, then renamed) and record it; return its folder."""
    target = index_dir / TUNED_MODEL_DIRNAME
    staging = index_dir / (TUNED_MODEL_DIRNAME + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    save_like_base(tuned, staging, stored_dtype(report.base_model))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    target = target.resolve()
    record = {"installed": True, "model": str(target), "base_model": report.base_model, "head": report.head,
              "cutoff": report.cutoff, "before": report.before, "after": report.after, "pairs": report.pairs,
              "installed_at": time.time()}
    (index_dir / TUNE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return target


def revert(path: str | Path, index: str | Path | None = None, echo: Echo = _stderr) -> dict:
    """Go back to the base model of the installed tune: re-embed with it and remove the tuned model."""
    root = Path(path).expanduser().resolve()
    index_dir = Path(index).resolve() if index else root / INDEX_DIRNAME
    record = read_tune_record(index_dir)
    if not record or not record.get("installed"):
        raise ValueError(f"no tuned model is installed in {index_dir}; nothing to revert")
    reembed(root, index_dir, record["base_model"], echo)
    shutil.rmtree(index_dir / TUNED_MODEL_DIRNAME, ignore_errors=True)
    record.update(installed=False, reverted_at=time.time())
    (index_dir / TUNE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    message = f"reverted: the index uses {record['base_model']} again"
    echo(message)
    return {"root": str(root), "index_dir": str(index_dir), "model": record["base_model"], "reverted": True,
            "message": message}
