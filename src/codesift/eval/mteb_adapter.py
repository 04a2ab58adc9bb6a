"""Use a codesift ``Embedder`` as an mteb (2.x) model, with the instruction task chosen per mteb task.

Each mteb code task is mapped to one of the five instruction tasks, following the paper's Table 4b
(text-to-code -> nl2code, code-to-code -> code2code, code completion -> code2completion, code-to-text ->
code2nl, technical Q&A -> qa); mteb tasks added after the paper are mapped by what their queries and
documents are. Queries get the task's query prefix, documents its document prefix.

    import mteb
    from codesift import Embedder
    from codesift.eval.mteb_adapter import MtebEncoder

    model = MtebEncoder(Embedder("jinaai/jina-code-embeddings-0.5b"))
    mteb.evaluate(model, mteb.get_benchmark("MTEB(Code, v1)"))

This module imports mteb: import it only where mteb is installed (``pip install codesift[eval]``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

if TYPE_CHECKING:
    from codesift.model.encoder import Encoder

logger = logging.getLogger(__name__)

MTEB_TASK_TO_INSTRUCTION: dict[str, str] = {
    # text -> code
    "AppsRetrieval": "nl2code",
    "CosQA": "nl2code",
    "SyntheticText2SQL": "nl2code",
    "CodeSearchNetRetrieval": "nl2code",
    "CodeEditSearchRetrieval": "nl2code",
    "HumanEvalRetrieval": "nl2code",
    "MBPPRetrieval": "nl2code",
    "DS1000Retrieval": "nl2code",
    "WikiSQLRetrieval": "nl2code",
    "FreshStackRetrieval": "nl2code",
    "SWEbenchCodeRetrieval": "nl2code",
    "Code1Retrieval": "nl2code",
    "JapaneseCode1Retrieval": "nl2code",
    "CorebT2CRetrieval": "nl2code",
    "CodeRAGProgrammingSolutions": "nl2code",
    # technical question answering
    "StackOverflowQA": "qa",
    "CodeFeedbackST": "qa",
    "CodeFeedbackMT": "qa",
    "CodeRAGOnlineTutorials": "qa",
    "CodeRAGLibraryDocumentationSolutions": "qa",
    "CodeRAGStackoverflowPosts": "qa",
    "MLQuestions": "qa",
    # code -> equivalent code
    "CodeTransOceanContest": "code2code",
    "CodeTransOceanDL": "code2code",
    "CorebC2CRetrieval": "code2code",
    # code -> text
    "COIRCodeSearchNetRetrieval": "code2nl",
    "CorebC2TRetrieval": "code2nl",
    # start of code -> its completion
    "CodeSearchNetCCRetrieval": "code2completion",
}


def instruction_task_for(task_name: str, overrides: Mapping[str, str] | None = None, default: str = "nl2code") -> str:
    """The instruction task (``nl2code``, ``qa``, ...) used for the mteb task ``task_name``."""
    if overrides and task_name in overrides:
        return overrides[task_name]
    if task_name in MTEB_TASK_TO_INSTRUCTION:
        return MTEB_TASK_TO_INSTRUCTION[task_name]
    lowered = task_name.lower()
    if "sql" in lowered or "spider" in lowered:
        return "nl2code"
    logger.info("mteb task %s has no instruction mapping; using %s", task_name, default)
    return default


class MtebEncoder(AbsEncoder):
    """An mteb encoder over a codesift ``Encoder`` (the ``Embedder``): task-aware prefixes, optional Matryoshka ``dim``."""

    def __init__(
        self,
        embedder: Encoder,
        *,
        task_map: Mapping[str, str] | None = None,
        default_task: str = "nl2code",
        dim: int | None = None,
        batch_tokens: int | None = None,
        truncate: bool = True,
        name: str | None = None,
    ) -> None:
        from codesift.tasks import resolve_task

        for t in [default_task, *(task_map or {}).values()]:
            resolve_task(t)  # fail early on a misspelt task
        self.model = embedder
        self.task_map = dict(task_map or {})
        self.default_task = default_task
        self.dim = dim
        self.batch_tokens = batch_tokens
        self.truncate = truncate
        label = name or embedder.name or "model"
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=label if "/" in label else f"codesift/{label}",
            revision=(embedder.fingerprint or "unknown")[:40],
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=embedder.max_length,
            embed_dim=dim or embedder.dimension,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name="cosine",
            use_instructions=True,
            training_datasets=None,
        )

    def instruction_task(self, task_name: str) -> str:
        """The instruction task used for an mteb task name."""
        return instruction_task_for(task_name, self.task_map, self.default_task)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of the mteb DataLoader; documents get the document prefix, all else the query prefix."""
        texts = [text for batch in inputs for text in batch["text"]]
        role = "document" if prompt_type == PromptType.document else "query"
        return self.model.encode(
            texts,
            task=self.instruction_task(task_metadata.name),
            role=role,
            dim=self.dim,
            normalize=True,
            truncate=self.truncate,
            batch_tokens=self.batch_tokens,
            show_progress=kwargs.get("show_progress_bar"),
        )
