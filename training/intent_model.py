"""Query-intent model: one MiniLM encoder, two softmax heads (intent, target category).

Why two heads rather than one joint label: the category only exists for some intents
(a "track my order" query has none), and intent x category would multiply the classes while
leaving most of them with a handful of examples. Two heads share what the encoder learns,
the category loss simply ignores rows without a category, and another shop's taxonomy is
just a different pair of label lists.

`IntentPredictor` is what ships: the fine-tuned net, a logistic regression on TF-IDF n-grams,
on frozen sentence embeddings or on both side by side, or the net averaged with the TF-IDF
one, whichever won on validation.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from torch import nn
from torch.nn import functional as F

IGNORE = -100


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # The pooling all-MiniLM-L6-v2 was trained with (sentence-transformers' mean pooling).
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class IntentNet(nn.Module):
    def __init__(self, encoder: nn.Module, n_intents: int, n_categories: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.intent_head = nn.Linear(width, n_intents)
        self.category_head = nn.Linear(width, max(n_categories, 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return self.intent_head(pooled), self.category_head(pooled)


class IntentLoss(nn.Module):
    """Cross-entropy on both heads; rows without a category (-100) only train the intent."""

    def __init__(self, net: IntentNet, label_smoothing: float = 0.0, category_weight: float = 1.0):
        super().__init__()
        self.net = net
        self.label_smoothing = label_smoothing
        self.category_weight = category_weight

    def forward(self, input_ids, attention_mask, intent, category):
        intent_logits, cat_logits = self.net(input_ids, attention_mask)
        loss = F.cross_entropy(intent_logits.float(), intent, label_smoothing=self.label_smoothing)
        if (category != IGNORE).any():
            loss = loss + self.category_weight * F.cross_entropy(
                cat_logits.float(),
                category,
                ignore_index=IGNORE,
                label_smoothing=self.label_smoothing,
            )
        return loss, intent_logits, cat_logits


def load_encoder(path: str | Path):
    # transformers is heavy to import (seconds): only code that loads a model pays.
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))


def tokenize(tokenizer, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def embed(
    encoder: nn.Module, tokenizer, texts: Sequence[str], max_len: int = 32, batch_size: int = 128
) -> np.ndarray:
    """Frozen mean-pooled sentence embeddings (the embedding-LR baseline's input)."""
    encoder.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[i : i + batch_size], max_len)
        hidden = encoder(**batch).last_hidden_state
        out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), np.float32)


def hybrid_matrix(vectorizer, texts, embeddings: np.ndarray, embed_weight: float = 1.0):
    """TF-IDF rows (L2-normalised) beside the L2-normalised embedding, one sparse matrix."""
    return sparse.hstack(
        [vectorizer.transform(list(texts)), sparse.csr_matrix(embed_weight * embeddings)]
    ).tocsr()


@torch.no_grad()
def net_proba(
    net: IntentNet,
    tokenizer,
    texts: Sequence[str],
    max_len: int,
    batch_size: int = 128,
    device: torch.device | None = None,
):
    device = device or next(net.parameters()).device
    net.eval()
    ip, cp = [], []
    for i in range(0, len(texts), batch_size):
        batch = {
            k: v.to(device)
            for k, v in tokenize(tokenizer, texts[i : i + batch_size], max_len).items()
        }
        a, b = net(**batch)
        ip.append(a.float().softmax(-1).cpu().numpy())
        cp.append(b.float().softmax(-1).cpu().numpy())
    return np.concatenate(ip), np.concatenate(cp)


class IntentPredictor:
    """What the intent job ships. kind: finetune | tfidf_lr | embed_lr | hybrid | setfit |
    ensemble.

    `sklearn` holds the logistic-regression heads ("intent", "category"); a hybrid also
    keeps its fitted TF-IDF there ("vectorizer"). embed_lr, hybrid and setfit keep their
    encoder (frozen, or SetFit's tuned one) in `net`, its heads unused, to embed the texts."""

    def __init__(
        self,
        kind: str,
        intents: list[str],
        categories: list[str],
        max_len: int,
        net: IntentNet | None = None,
        tokenizer=None,
        sklearn: dict | None = None,
        ensemble_weight: float = 0.5,
    ):
        self.kind = kind
        self.intents = intents
        self.categories = categories
        self.max_len = max_len
        self.net = net
        self.tokenizer = tokenizer
        self.sklearn = sklearn or {}
        self.ensemble_weight = ensemble_weight

    EMBEDDING_KINDS = ("embed_lr", "hybrid", "setfit")  # their heads read sentence vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence vectors of the encoder in `net` (embedding kinds only), by PyTorch."""
        return embed(self.net.encoder, self.tokenizer, list(texts), self.max_len)

    def sk_proba(self, texts: Sequence[str], vectors: np.ndarray | None = None):
        """(intent, category) probabilities of the scikit-learn heads. The embedding kinds
        take `vectors` from another runtime (serving's ONNX encoder) when given."""
        texts = list(texts)
        x = texts
        if self.kind in self.EMBEDDING_KINDS:
            x = self.embed(texts) if vectors is None else vectors
            if self.kind == "hybrid":
                x = hybrid_matrix(self.sklearn["vectorizer"], texts, x)
        return (
            self._head_proba("intent", x, len(texts), len(self.intents)),
            self._head_proba("category", x, len(texts), max(len(self.categories), 1)),
        )

    def _head_proba(self, name: str, x, rows: int, n: int) -> np.ndarray:
        model = self.sklearn.get(name)
        if model is None:
            return np.full((rows, n), 1.0 / max(n, 1))
        out = np.zeros((rows, n))
        out[:, model.classes_] = model.predict_proba(x)
        return out

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        if self.kind == "finetune":
            return net_proba(self.net, self.tokenizer, texts, self.max_len)
        sk = self.sk_proba(texts)
        if self.kind != "ensemble":
            return sk
        nn_i, nn_c = net_proba(self.net, self.tokenizer, texts, self.max_len)
        w = self.ensemble_weight
        return w * nn_i + (1 - w) * sk[0], w * nn_c + (1 - w) * sk[1]

    def predict(self, texts: Sequence[str]) -> list[dict]:
        ip, cp = self.predict_proba(texts)
        out = []
        for a, b in zip(ip, cp):
            row = {"intent": self.intents[int(a.argmax())], "intent_p": float(a.max())}
            if self.categories:
                row.update(category=self.categories[int(b.argmax())], category_p=float(b.max()))
            out.append(row)
        return out

    # -- persistence: a plain folder, so the model store and tests share one format --
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "intents": self.intents,
            "categories": self.categories,
            "max_len": self.max_len,
            "ensemble_weight": self.ensemble_weight,
            "has_net": self.net is not None,
        }
        (folder / "predictor.json").write_text(json.dumps(meta, indent=2))
        if self.net is not None:
            self.net.encoder.save_pretrained(folder / "encoder")
            self.tokenizer.save_pretrained(folder / "encoder")
            torch.save(
                {
                    "intent_head": self.net.intent_head.state_dict(),
                    "category_head": self.net.category_head.state_dict(),
                },
                folder / "heads.pt",
            )
        if self.sklearn:
            with open(folder / "sklearn.pkl", "wb") as fh:
                pickle.dump(self.sklearn, fh)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> IntentPredictor:
        folder = Path(folder)
        meta = json.loads((folder / "predictor.json").read_text())
        net = tokenizer = None
        if meta["has_net"]:
            encoder, tokenizer = load_encoder(folder / "encoder")
            net = IntentNet(encoder, len(meta["intents"]), len(meta["categories"]))
            heads = torch.load(folder / "heads.pt", weights_only=True)
            net.intent_head.load_state_dict(heads["intent_head"])
            net.category_head.load_state_dict(heads["category_head"])
            net.eval()
        sk = None
        if (folder / "sklearn.pkl").exists():
            with open(folder / "sklearn.pkl", "rb") as fh:
                sk = pickle.load(fh)  # our own artefact, written by save() above
        return cls(
            meta["kind"],
            meta["intents"],
            meta["categories"],
            meta["max_len"],
            net,
            tokenizer,
            sk,
            meta["ensemble_weight"],
        )
