"""The mteb adapter runs a locally defined retrieval task (no hub) with task-aware prefixes."""

from __future__ import annotations

import pytest

pytest.importorskip("mteb")

from test_eval_runner import CountingEmbedder


def _local_task(name: str = "LocalCodeRetrieval"):
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    class LocalCodeRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name, type="Retrieval", main_score="ndcg_at_10", description="A tiny local code retrieval task.",
            reference="https://example.org/local", dataset={"path": "local/none", "revision": "0"}, category="t2t",
            eval_splits=["test"], eval_langs=["eng-Latn", "python-Code"], date=("2024-01-01", "2024-01-02"),
            dialect=[], domains=["Programming"], task_subtypes=[], license="mit", annotations_creators="derived",
            modalities=["text"], sample_creation="found", bibtex_citation="",
        )

        def load_data(self, num_proc=None, **kwargs):
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": "q1", "text": "add two numbers"}, {"id": "q2", "text": "read a file"}]),
                corpus=Dataset.from_list([
                    {"id": "d1", "text": "def add(two, numbers): return two + numbers", "title": ""},
                    {"id": "d2", "text": "def read(a, file): return open(file).read()", "title": ""},
                    {"id": "d3", "text": "class Stack: pass", "title": ""},
                ]),
                relevant_docs={"q1": {"d1": 1}, "q2": {"d2": 1}},
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return LocalCodeRetrieval()


def test_instruction_mapping_follows_table_4b():
    from codesift.eval.mteb_adapter import instruction_task_for

    assert instruction_task_for("HumanEvalRetrieval") == "nl2code"
    assert instruction_task_for("CosQA") == "nl2code"
    assert instruction_task_for("CodeTransOceanContest") == "code2code"
    assert instruction_task_for("CodeSearchNetCCRetrieval") == "code2completion"
    assert instruction_task_for("COIRCodeSearchNetRetrieval") == "code2nl"
    assert instruction_task_for("StackOverflowQA") == "qa"
    assert instruction_task_for("CodeFeedbackMT") == "qa"
    assert instruction_task_for("SpiderRetrieval") == "nl2code"
    assert instruction_task_for("Unknown", overrides={"Unknown": "qa"}) == "qa"


def test_mapped_names_are_real_mteb_tasks():
    import mteb

    from codesift.eval.mteb_adapter import MTEB_TASK_TO_INSTRUCTION

    for name in MTEB_TASK_TO_INSTRUCTION:
        assert mteb.get_task(name).metadata.type in ("Retrieval", "Reranking"), name


def test_mteb_evaluate_runs_a_local_task_with_task_aware_prefixes():
    import mteb

    from codesift.eval.mteb_adapter import MtebEncoder

    emb = CountingEmbedder()
    model = MtebEncoder(emb, task_map={"LocalCodeRetrieval": "code2code"})
    result = mteb.evaluate(model, _local_task(), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert scores["main_score"] == pytest.approx(scores["ndcg_at_10"])
    assert scores["ndcg_at_10"] == pytest.approx(1.0)
    assert {(t, r) for t, r, _ in emb.calls} == {("code2code", "query"), ("code2code", "document")}
    assert sum(n for _, r, n in emb.calls if r == "document") == 3


def test_mteb_encoder_rejects_unknown_tasks():
    from codesift.eval.mteb_adapter import MtebEncoder

    with pytest.raises(ValueError, match="unknown task"):
        MtebEncoder(CountingEmbedder(), default_task="text2code")
