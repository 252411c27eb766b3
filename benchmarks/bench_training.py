"""Training throughput on CPU: records {name, value, unit, baseline_value, ratio, params}.

ranker_train_samples_per_s   DCN-v2 training steps; baseline: the same loop on a
                             logistic-regression module (ratio = cost of the DCN layers)
intent_finetune_seqs_per_s   MiniLM fine-tune steps; baseline: TF-IDF + logistic regression
                             fit on the same queries (ratio = fine-tune speed relative to it)
"""

from __future__ import annotations

import os
import time

from tests.training_data import intent_queries, ranker_frame
from training.common import minilm_path, seed_everything
from training.intent_data import encode_labels, fit_sklearn
from training.intent_model import IntentLoss, IntentNet, load_encoder, tokenize
from training.ranker_model import DCNv2, FeatureSpec, RankerConfig, RankerTrain


def _record(name, value, unit, baseline, params):
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline_value": baseline,
        "ratio": value / baseline if baseline else None,
        "params": params,
    }


def _steps_per_s(module, enc, batch_size: int, steps: int) -> float:
    import torch  # heavy: imported when a training benchmark runs

    wrapper = module if hasattr(module, "model") else RankerTrain(module)
    opt = torch.optim.AdamW(wrapper.parameters(), lr=1e-3)
    n = len(enc["label"])
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 2):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        batch = {k: v[idx] for k, v in enc.items()}
        t = time.perf_counter()
        loss, _ = wrapper(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:  # first steps pay allocation warm-up
            times.append(time.perf_counter() - t)
    return batch_size * len(times) / sum(times)


def bench_ranker(n_lists: int = 400, batch_size: int = 512, steps: int = 30) -> list[dict]:
    import torch  # heavy: imported when a training benchmark runs
    from torch import nn  # heavy, as above

    seed_everything(0)
    frame = ranker_frame(n_lists=n_lists, list_size=20)
    spec = FeatureSpec.discover(frame, 2**15)
    enc = spec.encode(frame)
    cfg = RankerConfig(len(spec.sparse), spec.dense_width, sum(spec.vectors.values()))
    model = DCNv2(cfg)

    class LogReg(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(cfg.n_dense + cfg.vector_dim, 1)

        def forward(self, ids, dense, vectors):
            return self.lin(torch.cat([dense, vectors], 1)).squeeze(-1)

    value = _steps_per_s(model, enc, batch_size, steps)
    base = _steps_per_s(LogReg(), enc, batch_size, steps)
    params = {
        "batch_size": batch_size,
        "steps": steps,
        "rows": len(frame),
        "threads": torch.get_num_threads(),
        "config": vars(cfg) | {"deep": list(cfg.deep)},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return [_record("ranker_train_samples_per_s", value, "samples/s", base, params)]


def bench_intent(batch_size: int = 32, max_len: int = 32, steps: int = 5) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # heavy: imported when a training benchmark runs

    seed_everything(0)
    df = intent_queries(600)
    intents = sorted(df["intent"].unique())
    cats = sorted(df["category"].dropna().unique())
    y_i, y_c = encode_labels(df, intents, cats)
    texts = df["query"].tolist()
    enc, tok = load_encoder(minilm_path())
    loss_fn = IntentLoss(IntentNet(enc, len(intents), len(cats)), 0.1)
    opt = torch.optim.AdamW(loss_fn.parameters(), lr=5e-5)
    times = []
    for step in range(steps + 1):
        idx = list(
            range((step * batch_size) % len(texts), (step * batch_size) % len(texts) + batch_size)
        )
        idx = [i % len(texts) for i in idx]
        t = time.perf_counter()
        batch = tokenize(tok, [texts[i] for i in idx], max_len)
        loss, _, _ = loss_fn(
            **batch, intent=torch.as_tensor(y_i[idx]), category=torch.as_tensor(y_c[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 1:
            times.append(time.perf_counter() - t)
    value = batch_size * len(times) / sum(times)
    t = time.perf_counter()
    fit_sklearn(texts, y_i, y_c, "tfidf_lr", 0)
    base = len(texts) / (time.perf_counter() - t)
    params = {
        "batch_size": batch_size,
        "max_len": max_len,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "model": "all-MiniLM-L6-v2",
    }
    return [_record("intent_finetune_seqs_per_s", value, "sequences/s", base, params)]


def run_all() -> list[dict]:
    return bench_ranker() + bench_intent()


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
