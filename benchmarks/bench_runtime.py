"""The query encoder and the intent net: ONNX Runtime (int8 and fp32) against PyTorch.

    python -m benchmarks --only serving          # runs this too
    python -m benchmarks.bench_runtime

Record `intent_encoder_speedup`: PyTorch ms per query / ONNX int8 ms per query for the
fine-tuned MiniLM intent net (and `intent_hybrid_speedup`, the same for the hybrid candidate's
frozen encoder under ONNX fp32), one query per call (as /intent and /search call it), one thread
each, on the intent test split's queries. `params` carry the macro-F1 of both on that split
(intent and category heads) and their change, the fp32 ONNX figures, and the query encoder's
own speed-up and cosine agreement with PyTorch.

The net is fine-tuned here (a few minutes of CPU) on the labelled queries of the simulator's
tiny preset (about 2,000, typos and all), split as the intent job splits them; the model the
demo ships is the same architecture.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import record
from features.embeddings import embed_texts, model_path
from governance.schemas import INTENTS
from governance.simulate import preset, simulate
from serving.onnx_models import OnnxEncoder, OnnxIntent
from training.intent import IntentTrainArgs, train
from training.intent_data import encode_labels, split_queries
from training.metrics import macro_f1


def _ms_per_query(fn, queries: list[str], repeat: int = 1) -> float:
    fn(queries[:1])  # warm-up: first-call allocations are not serving cost
    start = time.perf_counter()
    for _ in range(repeat):
        for q in queries:
            fn([q])
    return (time.perf_counter() - start) * 1000 / (len(queries) * repeat)


def _macro_f1(proba: tuple[np.ndarray, np.ndarray], test, predictor) -> dict:
    y_i, y_c = encode_labels(test, predictor.intents, predictor.categories)
    ip, cp = proba
    out = {"intent": macro_f1(y_i.tolist(), ip.argmax(1).tolist())}
    keep = y_c >= 0
    if keep.any():
        out["category"] = macro_f1(y_c[keep].tolist(), cp[keep].argmax(1).tolist())
    return out


def bench_intent(max_steps: int = 120, seed: int = 0) -> list[dict]:
    # torch is heavy to import (seconds): only code that runs a model pays for it.
    import torch

    torch.set_num_threads(1)  # serving runs one thread per call (onnx_models._session)
    tmp = Path(tempfile.mkdtemp(prefix="cw_bench_runtime_"))
    simulate(preset("tiny", seed=seed), tmp / "sim", progress=False)
    data = pd.read_csv(tmp / "sim" / "labelled_queries.csv.gz", dtype=str)
    # The simulator's dirt (blank queries, unknown intents) is ingest's business, not this one.
    data = data[data["query"].notna() & data["intent"].isin(INTENTS)].assign(source="simulated")
    args = IntentTrainArgs(
        out_dir=str(tmp / "runs"),
        candidates=("finetune", "hybrid"),
        tensorboard=False,
        max_steps=max_steps,
        seed=seed,
    )
    res = train(args, data=data)
    predictor = res.candidates["finetune"]
    _, _, test = split_queries(
        data.assign(category=data["category"].where(data["category"].notna(), None)),
        args.val_frac,
        args.test_frac,
        args.seed,
    )
    queries = test["query"].tolist()
    model_dir = predictor.save(tmp / "intent")
    runtimes = {
        "torch": predictor,
        "onnx": OnnxIntent.build(predictor, model_dir, tmp / "onnx", quantise=False),
        "onnx-int8": OnnxIntent.build(predictor, model_dir, tmp / "onnx", quantise=True),
    }
    ms = {k: _ms_per_query(m.predict_proba, queries) for k, m in runtimes.items()}
    f1 = {k: _macro_f1(m.predict_proba(queries), test, predictor) for k, m in runtimes.items()}

    encoders = {
        "torch": lambda t: np.asarray(embed_texts(list(t)), np.float32),
        "onnx": OnnxEncoder.build(model_path(), tmp / "onnx", quantise=False),
        "onnx-int8": OnnxEncoder.build(model_path(), tmp / "onnx", quantise=True),
    }
    enc_ms = {k: _ms_per_query(f, queries) for k, f in encoders.items()}
    ref = encoders["torch"](queries)
    cosine = {k: float((ref * encoders[k](queries)).sum(1).min()) for k in ("onnx", "onnx-int8")}
    params = {
        "queries": len(queries),
        "data": "simulator tiny preset, labelled queries, intent job's test split",
        "max_steps": max_steps,
        "threads": 1,
        "cpus": os.cpu_count(),
        "ms_per_query": {k: round(v, 3) for k, v in ms.items()},
        "macro_f1": {k: {h: round(x, 4) for h, x in v.items()} for k, v in f1.items()},
        "macro_f1_change_int8": {
            h: round(f1["onnx-int8"][h] - f1["torch"][h], 4) for h in f1["torch"]
        },
        "macro_f1_change_fp32": {h: round(f1["onnx"][h] - f1["torch"][h], 4) for h in f1["torch"]},
        "speedup_fp32": round(ms["torch"] / ms["onnx"], 3),
        "query_encoder_ms_per_query": {k: round(v, 3) for k, v in enc_ms.items()},
        "query_encoder_speedup_int8": round(enc_ms["torch"] / enc_ms["onnx-int8"], 3),
        "query_encoder_min_cosine_to_torch": {k: round(v, 4) for k, v in cosine.items()},
        "baseline": "PyTorch, same weights, same queries, one query per call",
        "load_avg": [round(x, 2) for x in os.getloadavg()],  # (1, 5, 15 min) after timing
    }
    return [
        record("intent_encoder_speedup", ms["torch"] / ms["onnx-int8"], "x", 1.0, params),
        _hybrid_record(res.candidates["hybrid"], queries, test, tmp),
    ]


def _hybrid_record(predictor, queries: list[str], test, tmp: Path) -> dict:
    """The hybrid (TF-IDF beside frozen MiniLM vectors): its encoder under ONNX fp32 against
    PyTorch, the logistic regressions the same on both."""
    model_dir = predictor.save(tmp / "intent_hybrid")
    runtimes = {
        "torch": predictor,
        "onnx": OnnxIntent.build(predictor, model_dir, tmp / "onnx", quantise=False),
    }
    ms = {k: _ms_per_query(m.predict_proba, queries) for k, m in runtimes.items()}
    f1 = {k: _macro_f1(m.predict_proba(queries), test, predictor) for k, m in runtimes.items()}
    params = {
        "queries": len(queries),
        "ms_per_query": {k: round(v, 3) for k, v in ms.items()},
        "macro_f1": {k: {h: round(x, 4) for h, x in v.items()} for k, v in f1.items()},
        "baseline": "PyTorch, same weights, same queries, one query per call",
    }
    return record("intent_hybrid_speedup", ms["torch"] / ms["onnx"], "x", 1.0, params)


def run_all() -> list[dict]:
    return bench_intent()


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
