"""The int8 CPU path: an encoder exported to ONNX once, its weights quantized to int8, run by ONNX Runtime.

Why this path: codesift-mini (a 6-layer BERT) on a 2-core CPU spends most of an index run in its linear
layers. ONNX Runtime's dynamic quantization runs them as int8 matmuls (VNNI on AVX-512 CPUs) with the
activations quantized per batch, and its graph fusions (LayerNorm, GELU) cut the rest; it was the fastest
of the candidates measured side by side (BENCHMARKS.md, "The int8 CPU path").

What is quantized: every MatMul whose weight is a constant, per output channel (per-tensor scales lost
3x more cosine on codesift-mini), except each layer's feed-forward output projection, whose input (the
GELU's output) has the outliers that per-tensor activation scales cannot hold. The word embeddings stay
float32 (a table lookup gains nothing from int8). Pooling stays in ``pooling.pool`` (torch): the graph
ends at the last hidden state, so both paths pool with the same function.

The exported file is cached under ``$CODESIFT_CACHE/onnx`` (else ``~/.cache/codesift/onnx``), keyed by
the weights' fingerprint and ``RECIPE``: one export (a few seconds, no network) per model and machine,
written to a temporary name and renamed, so concurrent first runs never see half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from codesift.model.device import cpu_has_int8_dot, pick_device
from codesift.model.loading import ModelSource, codesift_cache_dir, resolve_model

log = logging.getLogger(__name__)

# Changes to the export or the quantization change the vectors: bump it, and caches and index fingerprints follow.
RECIPE = "ort-dynamic-int8-v1"
ONNX_OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The most the int8 path may lose against float32: mean nDCG@10 points over the evaluation sets (issue 22).
MAX_NDCG_LOSS = 0.5


class Int8Unavailable(ValueError):
    """The int8 path cannot run here (no onnxruntime, a decoder model, a GPU device)."""


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime is installed (the ``fast`` extra)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def check_int8_supported(is_decoder: bool, device: torch.device) -> None:
    """Raise ``Int8Unavailable`` with what to do when the int8 path cannot serve this model here."""
    if device.type != "cpu":
        raise Int8Unavailable(f"dtype int8 runs on the CPU only, not {device.type}; use --device cpu, or "
                              "--dtype auto/bfloat16/float16 on a GPU")
    if is_decoder:
        raise Int8Unavailable("dtype int8 is for encoder models (the BERT family, e.g. codesift-mini); "
                              "use --dtype auto, bfloat16 or float32 for a decoder")
    if not onnxruntime_available():
        raise Int8Unavailable("dtype int8 needs ONNX Runtime: pip install 'codesift[fast]' "
                              "(or use --dtype auto/float32)")


def int8_keeps_quality(source: ModelSource) -> bool:
    """Whether the model's folder records this recipe's measured nDCG@10 loss, within ``MAX_NDCG_LOSS``.

    ``codesift.json`` carries ``"int8": {"recipe": RECIPE, "ndcg10_loss": points}`` where the loss was measured
    (``codesift eval --dtype int8`` against ``--dtype float32``); a model without it was never checked.
    """
    record = source.int8_quality or {}
    loss = record.get("ndcg10_loss")
    return record.get("recipe") == RECIPE and isinstance(loss, (int, float)) and loss <= MAX_NDCG_LOSS


def fastest_dtype(model: str | os.PathLike | None, device: str = "auto") -> str:
    """The dtype of the fastest path that keeps quality: ``int8`` on a CPU with int8 dot-product instructions
    (VNNI, AMX) for a model whose int8 loss was measured within the limit (and ONNX Runtime installed), else
    ``auto`` (the torch dtype the hardware runs best). On a CPU without them int8 is no faster than float32."""
    if pick_device(device).type != "cpu" or not onnxruntime_available() or not cpu_has_int8_dot():
        return "auto"
    return "int8" if int8_keeps_quality(resolve_model(model)) else "auto"


def int8_cache_path(weights_fingerprint: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the int8 ONNX file of these weights lives (whether or not it exists yet)."""
    root = Path(cache_dir) if cache_dir is not None else codesift_cache_dir() / "onnx"
    return root / f"{weights_fingerprint}-{RECIPE}" / "model.int8.onnx"


def cached_int8_model(model: torch.nn.Module, weights_fingerprint: str, takes_token_types: bool,
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached int8 ONNX file of ``model``, exported and quantized first when it is not there."""
    path = int8_cache_path(weights_fingerprint, cache_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the model to int8 ONNX once: %s", path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, fp32, takes_token_types)
        staged = Path(tmp) / path.name
        quantize_int8(fp32, staged, ffn_output_shape=ffn_output_shape(model))
        os.replace(staged, path)  # atomic: another process sees the whole file or none
    return path


class _LastHiddenState(torch.nn.Module):
    """The encoder with plain tensor inputs and one output, as the exporter wants it."""

    def __init__(self, model: torch.nn.Module, takes_token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.takes_token_types = takes_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if self.takes_token_types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state


def export_onnx(model: torch.nn.Module, out: Path, takes_token_types: bool) -> None:
    """Export ``model``'s last hidden state to ONNX (float32, dynamic batch and length; no network needed)."""
    names = list(INPUTS if takes_token_types else INPUTS[:2])
    example = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    wrapper = _LastHiddenState(model.float().eval(), takes_token_types)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(wrapper, example, str(out), dynamo=False, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET)


def ffn_output_shape(model: torch.nn.Module) -> tuple[int, int] | None:
    """(intermediate, hidden): the weight shape of the feed-forward output projections, as ONNX stores them."""
    config = getattr(model, "config", None)
    inter, hidden = getattr(config, "intermediate_size", None), getattr(config, "hidden_size", None)
    return (int(inter), int(hidden)) if inter and hidden else None


def quantize_int8(fp32: Path, out: Path, ffn_output_shape: tuple[int, int] | None) -> None:
    """Dynamic int8 quantization (per-channel weights) of every constant-weight MatMul but the FFN outputs."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    keep_float = [n.name for n in graph.node
                  if n.op_type == "MatMul" and ffn_output_shape and shapes.get(n.input[1]) == ffn_output_shape]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs "please consider pre-processing" through the root logger
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_float)
    finally:
        root.setLevel(level)


class OnnxBackbone:
    """The int8 ONNX backbone in place of the torch module: ids and mask in, the last hidden state out (pooling stays in torch)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: the indexer reads and chunks files on the same cores in between
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state (batch, tokens, hidden) as a float32 CPU tensor."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if "token_type_ids" in self.input_names and token_type_ids is None:
            feed["token_type_ids"] = torch.zeros_like(input_ids)
        arrays = {n: np.ascontiguousarray(feed[n].cpu().numpy(), dtype=np.int64) for n in self.input_names}
        return torch.from_numpy(self.session.run(["last_hidden_state"], arrays)[0])


__all__ = ["MAX_NDCG_LOSS", "RECIPE", "Int8Unavailable", "OnnxBackbone", "cached_int8_model", "check_int8_supported",
           "export_onnx", "fastest_dtype", "int8_cache_path", "int8_keeps_quality", "onnxruntime_available",
           "quantize_int8"]
