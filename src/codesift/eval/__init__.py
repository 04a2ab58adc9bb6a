"""codesift.eval: retrieval benchmarks, metrics, runner, reports and the mteb adapter.

- ``data``: BEIR-layout folders (``load_beir_task``)
- ``metrics``: nDCG@10, MRR@10, Recall@1/10/100, MAP@100 via pytrec_eval (``evaluate_run``)
- ``search``: exact chunked top-k (``exact_top_k``); ``bm25``: the BM25 baseline
- ``cache``: corpus embeddings on disk; ``runner``: ``EvalConfig`` and ``run_eval``
- ``report``: results.json, Markdown, rich tables, PNG plots; ``mteb_adapter``: ``MtebEncoder``

Nothing is imported here so that ``codesift --help`` stays fast; import the submodules.
"""
