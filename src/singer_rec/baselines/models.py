"""The classic sequential recommenders as small torch modules: GRU4Rec, Caser, SASRec, HSTU.

Every model maps left-padded item-index sequences ``[B, T]`` (0 = padding) to hidden states
``[B, T', d]`` where state ``t`` predicts the item after position ``t`` (``T' = T`` for the
recurrent/attentive models, ``T' = 1`` for Caser, which only summarises the window), and scores
items by a dot product with its output item embeddings (row 0 = padding, never a candidate).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SequentialRecommender(nn.Module):
    """Common scoring: ``score(state, item) = state · output_embedding[item]``.

    A new classic baseline is a subclass with a ``display_name`` and an entry in ``MODELS``, plus its
    ``baselines.<name>`` block in conf: the parameter check, the pipeline's node and the report's row
    follow from ``MODELS``."""

    display_name: str = ""  # its row in the results table

    per_position = True  # whether every position's state is a prediction (else only the last)

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.num_items = num_items
        self.dim = dim
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def output_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight

    def states(self, sequences: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_items(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items: ``states [..., d]`` with ``items [..., m]`` -> ``[..., m]``."""
        return (states.unsqueeze(-2) * self.output_embeddings()[items]).sum(-1)

    def score_all(self, histories: torch.Tensor) -> torch.Tensor:
        """Full ranking scores ``[B, num_items]`` (column j = item index j + 1) after each history."""
        last = self.states(histories)[:, -1]
        return last @ self.output_embeddings()[1:].T


class GRU4Rec(SequentialRecommender):
    """Hidasi et al. 2016: item embeddings through a GRU; the hidden state scores the next item."""

    display_name = "GRU4Rec"

    def __init__(self, num_items: int, dim: int = 64, num_layers: int = 1, dropout: float = 0.2, **_):
        super().__init__(num_items, dim)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, num_layers=num_layers, batch_first=True)

    def states(self, sequences: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.dropout(self.item_embedding(sequences)))
        return out


class SASRec(SequentialRecommender):
    """Kang & McAuley 2018: causal self-attention over item + learned position embeddings."""

    display_name = "SASRec"

    def __init__(self, num_items: int, dim: int = 64, num_layers: int = 2, num_heads: int = 1,
                 dropout: float = 0.2, max_len: int = 11, **_):
        super().__init__(num_items, dim)
        self.num_heads = num_heads
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(dim)

    def states(self, sequences: torch.Tensor) -> torch.Tensor:
        batch, length = sequences.shape
        if length > self.position_embedding.num_embeddings:
            raise ValueError(f"sequence length {length} exceeds SASRec max_len {self.position_embedding.num_embeddings}")
        # positions counted from the right so the newest item always gets the same position
        positions = torch.arange(length - 1, -1, -1, device=sequences.device)
        x = self.item_embedding(sequences) * self.dim**0.5 + self.position_embedding(positions)
        x = self.dropout(x) * (sequences != 0).unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).triu(1)
        blocked = causal.unsqueeze(0) | (sequences == 0).unsqueeze(1)  # [B, T(query), T(key)]
        # padding queries see no valid key; let every position see itself so softmax stays finite
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=sequences.device)
        mask = blocked.repeat_interleave(self.num_heads, dim=0)
        return self.final_norm(self.encoder(x, mask=mask))


class RelativePositionBias(nn.Module):
    """A learned scalar per relative position ``j - i`` (HSTU's positional rab; one per head)."""

    def __init__(self, max_len: int, num_heads: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(num_heads, 2 * max_len - 1))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length: int) -> torch.Tensor:
        """``[heads, T, T]`` bias, entry ``[h, i, j]`` = weight of offset ``j - i``."""
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds HSTU max_len {self.max_len}")
        positions = torch.arange(length, device=self.weight.device)
        offsets = positions[None, :] - positions[:, None] + self.max_len - 1
        return self.weight[:, offsets]


class HSTULayer(nn.Module):
    """One HSTU block (Zhai et al. 2024, Eq. 1-3): pointwise aggregated attention with SiLU.

    ``U, V, Q, K = split(SiLU(f1(LN(x))))``; ``A = SiLU(Q K^T + rab) / T`` masked to the causal,
    non-padding keys (no softmax: each key contributes independently); ``y = f2(LN(A V) * U)``;
    the block returns ``x + dropout(y)``.
    """

    def __init__(self, dim: int, num_heads: int, max_len: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"HSTU dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.input_norm = nn.LayerNorm(dim)
        self.uvqk = nn.Linear(dim, 4 * dim)
        self.rab = RelativePositionBias(max_len, num_heads)
        self.attention_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x [B, T, d]``; ``keep [B, T, T]`` true where query i may aggregate key j."""
        batch, length, dim = x.shape
        u, v, q, k = F.silu(self.uvqk(self.input_norm(x))).split(dim, dim=-1)
        heads = lambda t: t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        scores = heads(q) @ heads(k).transpose(-1, -2) + self.rab(length)  # [B, H, T, T]
        weights = F.silu(scores) / length * keep.unsqueeze(1)
        attended = (self.dropout(weights) @ heads(v)).transpose(1, 2).reshape(batch, length, dim)
        return x + self.dropout(self.output(self.attention_norm(attended) * u))


class HSTU(SequentialRecommender):
    """Zhai et al. 2024, "Actions speak louder than words": stacked HSTU blocks over item embeddings.

    Trained and ranked like SASRec (same losses, dot-product scoring over all items). Our
    sequences carry no per-event timestamps, so the relative attention bias is positional only
    (the paper adds a bucketed time-difference term).
    """

    display_name = "HSTU"

    def __init__(self, num_items: int, dim: int = 64, num_layers: int = 2, num_heads: int = 1,
                 dropout: float = 0.2, max_len: int = 11, **_):
        super().__init__(num_items, dim)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(HSTULayer(dim, num_heads, max_len, dropout) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim)

    def states(self, sequences: torch.Tensor) -> torch.Tensor:
        batch, length = sequences.shape
        if length > self.position_embedding.num_embeddings:
            raise ValueError(f"sequence length {length} exceeds HSTU max_len {self.position_embedding.num_embeddings}")
        valid = sequences != 0
        positions = torch.arange(length - 1, -1, -1, device=sequences.device)  # newest item = position 0
        x = self.item_embedding(sequences) * self.dim**0.5 + self.position_embedding(positions)
        x = self.dropout(x) * valid.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).tril()
        keep = causal.unsqueeze(0) & valid.unsqueeze(1)  # padding keys contribute nothing
        for layer in self.layers:
            x = layer(x, keep) * valid.unsqueeze(-1)
        return self.final_norm(x)


class Caser(SequentialRecommender):
    """Tang & Wang 2018: horizontal and vertical convolutions over the last ``window`` items.

    The user embedding of the original is left out: our users are identified only by their
    history, and valid/test users need not appear in training.
    """

    display_name = "Caser"

    per_position = False

    def __init__(self, num_items: int, dim: int = 64, window: int = 10, num_horizontal: int = 16,
                 num_vertical: int = 4, dropout: float = 0.2, **_):
        super().__init__(num_items, dim)
        self.window = window
        self.horizontal = nn.ModuleList(nn.Conv2d(1, num_horizontal, (h, dim)) for h in range(1, window + 1))
        self.vertical = nn.Conv2d(1, num_vertical, (window, 1))
        self.fc = nn.Linear(num_horizontal * window + num_vertical * dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.output_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.output_embedding.weight, std=dim**-0.5)

    def output_embeddings(self) -> torch.Tensor:
        return self.output_embedding.weight

    def states(self, sequences: torch.Tensor) -> torch.Tensor:
        window = sequences[:, -self.window:]
        if window.shape[1] < self.window:
            window = F.pad(window, (self.window - window.shape[1], 0))
        x = self.item_embedding(window).unsqueeze(1)  # [B, 1, L, d]
        vertical = self.vertical(x).flatten(1)
        horizontal = [F.relu(conv(x).squeeze(3)).max(dim=2).values for conv in self.horizontal]
        z = F.relu(self.fc(self.dropout(torch.cat([vertical, *horizontal], dim=1))))
        return z.unsqueeze(1)


MODELS: dict[str, type[SequentialRecommender]] = {"gru4rec": GRU4Rec, "caser": Caser, "sasrec": SASRec, "hstu": HSTU}


def build_baseline_model(name: str, num_items: int, **config) -> SequentialRecommender:
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown baseline model {name!r}; expected one of {sorted(MODELS)}") from None
    return cls(num_items, **config)
