"""The query encoder (MiniLM) and the intent net through ONNX Runtime, int8 where it holds.

PyTorch is what trains and what the feature pipeline embeds titles with; serving answers one
short query at a time, where PyTorch's per-call overhead dominates. So the service exports the
same weights to ONNX once (cached on disk by a hash of the source files), optionally quantises
the linear layers to int8 (dynamic quantisation), and runs them with one intra-op thread per
call: concurrency comes from requests running side by side, not from threads inside one call.

`make bench` records the speed-up and the macro-F1 change on the intent test set
(`intent_encoder_speedup`); the runtime is chosen with CARTWISE_SERVING_RUNTIME
(onnx-int8 | onnx | torch).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from features.embeddings import embed_texts, model_path

log = logging.getLogger(__name__)

RUNTIMES = ("onnx-int8", "onnx", "torch")
OPSET = 17


def _digest(folder: Path) -> str:
    """Content hash of a model folder's files: a retrained model gets a new export."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.name.encode())
        h.update(str(path.stat().st_size).encode())
        with open(path, "rb") as fh:
            h.update(fh.read(1 << 20))  # the head of each file is enough to tell versions apart
    return h.hexdigest()[:16]


@contextmanager
def _exclusive(path: Path):
    """One exporter per file across the service's worker processes (the others wait, then
    find the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _export(module, dummy: dict, outputs: list[str], path: Path, quantise: bool) -> Path:
    """torch.onnx.export to a temporary name, quantise, then one atomic rename, so a reader
    never sees a half-written file."""
    import torch  # heavy; only needed when there is no cached export

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        names = list(dummy)
        torch.onnx.export(
            module,
            tuple(dummy.values()),
            str(fp32),
            input_names=names,
            output_names=outputs,
            dynamic_axes={
                **{n: {0: "batch", 1: "seq"} for n in names},
                **{o: {0: "batch"} for o in outputs},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        final = fp32
        if quantise:
            # ONNX Runtime's quantiser is heavy: imported only when a model is exported.
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = Path(tmp) / "int8.onnx"
            quantize_dynamic(str(fp32), str(final), weight_type=QuantType.QInt8)
        os.replace(final, path)
    return path


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort  # heavy; loaded by the service only

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # The pooling all-MiniLM-L6-v2 was trained with (as training.intent_model.mean_pool).
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)


class _Pooled:
    """MiniLM with mean pooling and L2 normalisation inside the graph."""

    @staticmethod
    def module(encoder):
        # torch is heavy to import (seconds): only code that runs a model pays for it.
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                hidden = self.encoder(
                    input_ids=input_ids, attention_mask=attention_mask
                ).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return Pooled().eval()


class OnnxEncoder:
    """texts -> (n, 384) float32, mean-pooled and L2-normalised, like features.embeddings."""

    def __init__(self, session, tokenizer, max_len: int = 64):
        self.session = session
        self.tokenizer = tokenizer
        self.max_len = max_len

    @classmethod
    def build(
        cls, model_dir: str | Path, cache_dir: Path, quantise: bool, max_len: int = 64
    ) -> OnnxEncoder:
        # transformers is heavy to import (seconds): only code that loads a model pays.
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        tag = "int8" if quantise else "fp32"
        path = cache_dir / f"minilm-{_digest(model_dir)}-{tag}.onnx"
        with _exclusive(path):
            if not path.exists():
                # transformers is heavy to import (seconds): only code that loads a model pays.
                from transformers import AutoModel

                encoder = AutoModel.from_pretrained(str(model_dir)).eval()
                dummy = _dummy_inputs(AutoTokenizer.from_pretrained(str(model_dir)))
                _export(_Pooled.module(encoder), dummy, ["embedding"], path, quantise)
                log.info("exported the query encoder to %s", path.name)
        return cls(_session(path), AutoTokenizer.from_pretrained(str(model_dir)), max_len)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="np"
        )
        feeds = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return self.session.run(None, feeds)[0].astype(np.float32)


def _dummy_inputs(tokenizer) -> dict:
    # torch is heavy to import (seconds): only code that runs a model pays for it.
    import torch

    enc = tokenizer(["a query", "another longer query"], padding=True, return_tensors="pt")
    return {
        "input_ids": enc["input_ids"].to(torch.int64),
        "attention_mask": enc["attention_mask"].to(torch.int64),
    }


class OnnxIntent:
    """Drop-in for IntentPredictor.predict_proba through ONNX Runtime: the fine-tune's net
    with its heads (finetune, the ensemble's neural half), or the encoder whose sentence
    vectors the embedding kinds' logistic regressions read (embed_lr, hybrid, setfit; always
    fp32, as the query encoder: their heads were fitted on PyTorch's vectors). TF-IDF parts
    (tfidf_lr, the hybrid's n-grams, the ensemble's other half) stay scikit-learn, already
    fast."""

    def __init__(self, predictor, session=None, encoder: OnnxEncoder | None = None):
        self.predictor = predictor
        self.session = session
        self.encoder = encoder
        self.intents = predictor.intents
        self.categories = predictor.categories

    @classmethod
    def build(cls, predictor, model_dir: str | Path, cache_dir: Path, quantise: bool):
        if predictor.net is None:
            return cls(predictor)  # nothing neural on the request path
        if predictor.kind in predictor.EMBEDDING_KINDS:
            # The bundle keeps the encoder's own folder (IntentPredictor.save).
            encoder = OnnxEncoder.build(
                Path(model_dir) / "encoder", cache_dir, quantise=False, max_len=predictor.max_len
            )
            return cls(predictor, encoder=encoder)
        tag = "int8" if quantise else "fp32"
        path = cache_dir / f"intent-{_digest(Path(model_dir))}-{tag}.onnx"
        with _exclusive(path):
            if not path.exists():
                _export(
                    _heads_module(predictor.net),
                    _dummy_inputs(predictor.tokenizer),
                    ["intent_p", "category_p"],
                    path,
                    quantise,
                )
                log.info("exported the intent net to %s", path.name)
        return cls(predictor, _session(path))

    def _net_proba(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.predictor.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.predictor.max_len,
            return_tensors="np",
        )
        feeds = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        ip, cp = self.session.run(None, feeds)
        return ip.astype(np.float64), cp.astype(np.float64)

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        p = self.predictor
        if self.encoder is not None:
            return p.sk_proba(texts, vectors=self.encoder(texts))
        if self.session is None:
            return p.predict_proba(texts)
        nn_i, nn_c = self._net_proba(texts)
        if p.kind == "finetune":
            return nn_i, nn_c
        sk_i, sk_c = p.sk_proba(texts)
        w = p.ensemble_weight
        return w * nn_i + (1 - w) * sk_i, w * nn_c + (1 - w) * sk_c


def _heads_module(net):
    # torch is heavy to import (seconds): only code that runs a model pays for it.
    import torch

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask):
            a, b = self.net(input_ids, attention_mask)
            return a.float().softmax(-1), b.float().softmax(-1)

    return Heads().eval()


def query_encoder(runtime: str, cache_dir: Path) -> Callable[[list[str]], np.ndarray]:
    """The query encoder for `runtime`: ONNX (cached export) or features.embeddings (PyTorch).

    Always fp32 under ONNX: a query vector is compared with the stored fp32 title vectors, and
    int8 moved it away from PyTorch's (cosine down to 0.93, `make bench`), where fp32 agrees
    to 1.0; the intent net's int8 keeps its macro-F1, so it gets int8."""
    if runtime == "torch":
        return lambda texts: np.asarray(embed_texts(list(texts)), np.float32)
    return OnnxEncoder.build(model_path(), cache_dir, quantise=False)


def intent_model(predictor, model_dir: str | Path, runtime: str, cache_dir: Path):
    if runtime == "torch":
        return predictor
    return OnnxIntent.build(predictor, model_dir, cache_dir, quantise=runtime == "onnx-int8")
