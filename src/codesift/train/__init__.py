"""codesift.train: the contrastive recipe of jina-code-embeddings.

The library: ``loss.py`` (InfoNCE + Matryoshka, cross-rank gather with gradient), ``gradcache.py``
(big batches in small memory), ``data.py`` (pair files, task-homogeneous duplicate-free batches),
``checkpoint.py`` (atomic, last K kept), ``config.py`` (``TrainConfig``, the defaults).
The program: ``loop.py`` (``train(cfg)``, one plain loop) behind ``codesift train`` (``cli.py``).
"""
