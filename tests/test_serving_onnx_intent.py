"""Serving's ONNX intent runtime answers as the PyTorch predictor the job shipped.

The embedding kinds (embed_lr, hybrid, setfit) keep their encoder in the bundle; under ONNX
the service embeds the query with that encoder's export and feeds the job's own logistic
regressions, so the probabilities must match PyTorch's to float tolerance.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from serving.onnx_models import OnnxIntent
from tests.training_data import intent_queries
from training.intent import IntentTrainArgs, train
from training.intent_model import IntentPredictor

pytestmark = pytest.mark.slow

QUERIES = ["buy acme phone", "best sofas", "where is my laptop order", "zzz", "günstige Lampe"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("intent_onnx")
    args = IntentTrainArgs(
        out_dir=str(out), max_len=16, candidates=("embed_lr", "hybrid"), tensorboard=False
    )
    return train(args, data=intent_queries(120))


@pytest.mark.parametrize("kind", ["embed_lr", "hybrid"])
def test_embedding_kinds_under_onnx_answer_as_pytorch(trained, kind, tmp_path):
    folder = trained.candidates[kind].save(tmp_path / kind)
    predictor = IntentPredictor.load(folder)
    onnx = OnnxIntent.build(predictor, folder, tmp_path / "cache", quantise=True)
    assert onnx.encoder is not None and onnx.encoder.max_len == 16  # ONNX is on the path
    assert list((tmp_path / "cache").glob("minilm-*-fp32.onnx"))  # fp32 even when int8 asked
    want = predictor.predict_proba(QUERIES)
    got = onnx.predict_proba(QUERIES)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    assert (got[0].argmax(1) == want[0].argmax(1)).all()
