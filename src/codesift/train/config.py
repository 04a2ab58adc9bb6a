"""The training configuration: one typed place for every default (the paper's where it gives one)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The paper publishes no learning rate, warmup or schedule. 2e-5 with 5% linear warmup and cosine decay
# to 10% is the usual full-fine-tuning setting for contrastive training of sub-billion-parameter
# backbones at batch 256-512; EXPERIMENTS.md records how the small CPU runs chose theirs.
DEFAULT_LR = 2e-5


@dataclass
class TrainConfig:
    """Everything a run needs; ``codesift train`` flags override the YAML, which overrides these."""

    # model
    model: str = "Qwen/Qwen2.5-Coder-0.5B"          # paper backbone; any HF folder, hub id or .gguf file
    pooling: str = "lasttoken"                      # lasttoken (paper) | mean | latent_attention
    prompts: bool | None = None                     # task prefixes: None = the model's own rule (decoders yes,
                                                    # plain encoders no); true conditions an encoder on them too
    max_length: int = 512                           # paper: sequence length 512
    save_max_length: int | None = None              # max_seq_length of the saved model (None: max_length); a
                                                    # model trained on short cuts may still read longer texts
    lora: bool = False                              # paper: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False
    # data
    data: list[str] = field(default_factory=list)  # JSONL pair files
    group_by: str = "file"                          # a dataset is (file, task) or (source, task)
    mixing: str = "proportional"                    # proportional | round_robin
    # loss
    temperature: float = 0.05                       # paper: 0.05 (scale 20)
    matryoshka_dims: list[int] | None = None        # None: the model's own dims
    matryoshka_weights: list[float] | None = None   # None: all 1 (the paper does not publish them)
    symmetric: bool = False                         # paper: query->document only
    hard_negatives: int = 0                         # per pair, from its "negatives" list (0: in-batch negatives only)
    # optimisation
    steps: int = 1500                               # paper: 1500
    batch_size: int = 512                           # paper: 512 (0.5B), 256 (1.5B); global, over all processes
    mini_batch_size: int = 32                       # gradient-cache chunk: sets peak memory, not the result
    gradient_cache: bool = True                     # False: plain backprop over the chunks (no 2nd forward; memory grows with batch)
    lr: float = DEFAULT_LR
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    schedule: str = "cosine"                        # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0                          # 0 disables
    bf16: bool = True                               # bf16 autocast, fp32 master weights
    seed: int = 0
    device: str = "auto"
    fsdp: bool = False                              # FSDP2-shard the backbone over the processes (large backbones)
    # output
    out: str = "runs/train"
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 1
    eval_dir: str | None = None                     # a small BEIR folder for the periodic dev eval
    eval_every: int = 0                             # 0: only before and after training
    eval_max_docs: int = 2000
    tensorboard: bool = False
    progress: bool = True
    peak_probe_s: float = 1.0                       # seconds of matmul timing in the run's dtype at start (MFU denominator)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of the fields above (unknown keys are an error)."""
        from codesift.data.yamlfile import read_yaml_mapping

        return cls().replace(**read_yaml_mapping(path, "config file"))

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with ``overrides`` applied (``None`` values are ignored) and validated."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "betas" in clean:
            clean["betas"] = tuple(clean["betas"])
        if isinstance(clean.get("data"), str):
            clean["data"] = [clean["data"]]
        for name, value in clean.items():
            clean[name] = _typed(name, value, getattr(self, name))
        cfg = dataclasses.replace(self, **clean)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}"),
            (self.mini_batch_size >= 1, f"mini_batch_size must be >= 1, got {self.mini_batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.schedule in ("cosine", "linear", "constant"), f"schedule must be cosine, linear or constant, got {self.schedule!r}"),
            (self.mixing in ("proportional", "round_robin"), f"mixing must be proportional or round_robin, got {self.mixing!r}"),
            (self.hard_negatives >= 0, f"hard_negatives must be >= 0, got {self.hard_negatives}"),
            (self.group_by in ("file", "source"), f"group_by must be file or source, got {self.group_by!r}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (self.save_max_length is None or self.save_max_length >= 8,
             f"save_max_length must be >= 8, got {self.save_max_length}"),
            (self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}"),
            (self.save_every >= 0 and self.eval_every >= 0, "save_every and eval_every must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        from codesift.model.pooling import normalize_pooling

        self.pooling = normalize_pooling(self.pooling)
        if self.matryoshka_weights is not None and self.matryoshka_dims is not None \
                and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise ValueError("matryoshka_weights must have one weight per Matryoshka dim")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def _typed(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the field's default: YAML 1.1 reads ``5e-5`` (no dot) as a string."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")  # noqa: TRY004 (a bad config value)
        return value
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or (kind is int and number != int(number)):
            raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return kind(number)
    return value

