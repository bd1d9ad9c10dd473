"""Trie-constrained decoding over an item dictionary: batched beam search and sampling.

Every item is a token sequence (its SID tokens, or a canonical title followed by EOS). The
dictionary is a prefix trie stored as tensors (CSR child lists), so the allowed next tokens of all
beams of a batch come from one indexing operation; every candidate of every step is a trie edge,
so decoding can never drift into free text.

How a batch is decoded (``beam_search``):

1. prompts (plus any forced prefix) are left-padded and prefilled ONCE, keeping the logits of the
   last position only; the first step's candidates are the children of each prompt's start node;
2. the prompt's KV cache is then repeated for the beams (once), and every further step feeds one
   token per beam through the cache. Beams of one prompt share the prompt part of the cache, so a
   reorder only moves the few generated positions, never the prompt;
3. a candidate that reaches a leaf finishes an item and goes to a per-prompt pool of the best
   ``num_return`` items; candidates that do not finish compete for the ``num_beams`` slots;
4. once every live beam of the batch is on a *chain* (a trie node with a single item below it: its
   remaining tokens are forced), the rest of every chain is scored by one multi-token forward
   instead of one forward per token. This is exact: with at most one continuation per beam no
   beam can be pushed out any more, so step-by-step decoding would keep them all and finish each
   chain with the same score. Title dictionaries gain most (a title is unique after a few tokens
   and then runs for tens of tokens).

Everything (trie tables, scores, pools) lives on the model's device; only the final items and
scores go to the host.

Scores are sums of token log-probs under the model (full-vocabulary softmax, no temperature, no
length normalisation), so they equal what a plain forward pass over prompt + item gives.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from singer_rec.training.common import autocast

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")


class PrefixTrie:
    """Valid token sequences (one per item) as a prefix trie held in tensors.

    Node 0 is the root; the last node is a "dead" sentinel without children (used for finished or
    empty beam slots). Children of node ``n`` are ``child_tokens[child_offsets[n]:child_offsets[n+1]]``
    (sorted by token) leading to ``child_nodes[...]``; ``node_item[n]`` is the item ending at ``n``
    or -1.
    """

    def __init__(self, sequences: tuple[tuple[int, ...], ...], vocab_size: int, child_offsets: torch.Tensor,
                 child_tokens: torch.Tensor, child_nodes: torch.Tensor, node_item: torch.Tensor,
                 node_depth: torch.Tensor) -> None:
        self.sequences = sequences
        self.vocab_size = vocab_size
        self.num_items = len(sequences)
        self.max_length = max(len(s) for s in sequences)
        self.child_offsets = child_offsets
        self.child_tokens = child_tokens
        self.child_nodes = child_nodes
        self.node_item = node_item
        self.node_depth = node_depth
        self.child_count = child_offsets[1:] - child_offsets[:-1]
        self.dead_node = len(node_item) - 1
        self.node_count, self.node_unique = _items_below(child_offsets, child_nodes, node_item)
        self.seq_table, self.seq_length = _sequence_table(sequences)
        # token -> child lookup for walking forced prefixes (Python side, small)
        self._children: list[dict[int, int]] | None = None
        self._on_device: dict[str, PrefixTrie] = {}

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], vocab_size: int) -> "PrefixTrie":
        """Build from one token sequence per item (item i = ``sequences[i]``).

        Raises ValueError for an empty dictionary, an empty sequence, a token outside
        ``[0, vocab_size)``, a duplicate sequence, or a sequence that is a prefix of another.
        """
        if len(sequences) == 0:
            raise ValueError("PrefixTrie.build: no sequences (the item dictionary is empty)")
        children: list[dict[int, int]] = [{}]
        node_item: list[int] = [-1]
        node_depth: list[int] = [0]
        frozen: list[tuple[int, ...]] = []
        for item, seq in enumerate(sequences):
            seq = tuple(int(t) for t in seq)
            if not seq:
                raise ValueError(f"PrefixTrie.build: sequence {item} is empty")
            bad = [t for t in seq if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(f"PrefixTrie.build: sequence {item} {list(seq)} has token {bad[0]} outside [0, {vocab_size})")
            node = 0
            for depth, token in enumerate(seq):
                if node_item[node] >= 0:
                    raise ValueError(
                        f"PrefixTrie.build: sequence {node_item[node]} {list(frozen[node_item[node]])} is a prefix of "
                        f"sequence {item} {list(seq)}"
                    )
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    node_item.append(-1)
                    node_depth.append(depth + 1)
                node = nxt
            if node_item[node] >= 0:
                raise ValueError(f"PrefixTrie.build: sequences {node_item[node]} and {item} are the same: {list(seq)}")
            if children[node]:
                raise ValueError(f"PrefixTrie.build: sequence {item} {list(seq)} is a prefix of another sequence")
            node_item[node] = item
            frozen.append(seq)
        # CSR arrays, plus the dead sentinel node (no children) at the end
        counts = [len(c) for c in children] + [0]
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        tokens, nodes = [], []
        for c in children:
            for token in sorted(c):
                tokens.append(token)
                nodes.append(c[token])
        trie = cls(
            sequences=tuple(frozen),
            vocab_size=int(vocab_size),
            child_offsets=torch.tensor(offsets, dtype=torch.long),
            child_tokens=torch.tensor(tokens, dtype=torch.long),
            child_nodes=torch.tensor(nodes, dtype=torch.long),
            node_item=torch.tensor(node_item + [-1], dtype=torch.long),
            node_depth=torch.tensor(node_depth + [0], dtype=torch.long),
        )
        trie._children = children
        return trie

    @property
    def num_nodes(self) -> int:
        return len(self.node_item) - 1

    def to(self, device: torch.device | str) -> PrefixTrie:
        """This trie with its tables on ``device`` (made once per device and kept)."""
        device = torch.device(device)
        if all(t.device == device for t in (self.child_offsets, self.node_item)):
            return self
        key = str(device)
        if key not in self._on_device:
            moved = PrefixTrie.__new__(PrefixTrie)
            moved.__dict__.update(self.__dict__)
            for name in ("child_offsets", "child_tokens", "child_nodes", "node_item", "node_depth", "child_count",
                         "node_count", "node_unique", "seq_table", "seq_length"):
                setattr(moved, name, getattr(self, name).to(device))
            moved._on_device = {}
            self._on_device[key] = moved
        return self._on_device[key]

    def walk(self, prefix: Sequence[int]) -> int:
        """The node reached by ``prefix`` from the root; ValueError when it is not a path of the trie."""
        node = 0
        for position, token in enumerate(prefix):
            nxt = self._children[node].get(int(token)) if node < len(self._children) else None
            if nxt is None:
                raise ValueError(
                    f"prefix {list(prefix)}: token {int(token)} at position {position} does not continue any item"
                )
            node = nxt
        return node

    def items_under(self, node: int) -> int:
        """Number of items whose sequence passes through ``node``."""
        return int(self.node_count[node])


def _items_below(child_offsets: torch.Tensor, child_nodes: torch.Tensor,
                 node_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per node: how many items lie below it, and the item index when that is exactly one (a chain), else -1.

    Children are always numbered after their parent, so one pass from the last node back suffices.
    """
    offsets, nodes, items = child_offsets.tolist(), child_nodes.tolist(), node_item.tolist()
    count = [0] * len(items)
    unique = [-1] * len(items)
    for n in range(len(items) - 2, -1, -1):  # the dead sentinel (last) has no items
        if items[n] >= 0:
            count[n], unique[n] = 1, items[n]
            continue
        kids = nodes[offsets[n]:offsets[n + 1]]
        count[n] = sum(count[c] for c in kids)
        if count[n] == 1:
            unique[n] = next(unique[c] for c in kids if count[c] == 1)
    return torch.tensor(count, dtype=torch.long), torch.tensor(unique, dtype=torch.long)


def _sequence_table(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Item token sequences as one right-padded ``[items, max_length]`` table (pad 0) and their lengths."""
    width = max(len(s) for s in sequences)
    table = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        table[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return table, torch.tensor([len(s) for s in sequences], dtype=torch.long)


@dataclass
class DecodeResult:
    items: list[list[int]]  # per prompt: item indices (into the trie's sequences), best first
    scores: list[list[float]]  # per prompt: sequence log-probs (sum over generated tokens), descending


# -- shared helpers --------------------------------------------------------------------------------

def _left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _prepare(prompt_ids, trie: PrefixTrie, forced_prefixes) -> tuple[list[list[int]], list[int]]:
    """Prompt + forced prefix token lists and the trie node each prompt starts from."""
    if forced_prefixes is None:
        forced_prefixes = [()] * len(prompt_ids)
    if len(forced_prefixes) != len(prompt_ids):
        raise ValueError(f"{len(forced_prefixes)} forced prefixes for {len(prompt_ids)} prompts")
    inputs, starts = [], []
    for i, (prompt, prefix) in enumerate(zip(prompt_ids, forced_prefixes)):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty")
        try:
            starts.append(trie.walk(prefix))
        except ValueError as err:
            raise ValueError(f"forced prefix of prompt {i}: {err}") from None
        inputs.append(list(prompt) + [int(t) for t in prefix])
    return inputs, starts


MIN_SHARED_PREFIX = 4  # below this, a separate batch-1 forward for the shared tokens is not worth it


def _shared_prefix_length(inputs: list[list[int]]) -> int:
    """Tokens every prompt of the batch starts with, leaving at least one own token per prompt."""
    limit = min(len(r) for r in inputs) - 1
    first = inputs[0]
    length = 0
    while length < limit and all(r[length] == first[length] for r in inputs):
        length += 1
    return length


def _prefill(model, inputs: list[list[int]], pad_token_id: int, device: torch.device):
    """One forward over the left-padded prompts; returns (logits of the last position, cache, mask, last position).

    Tokens that every prompt of the batch starts with (the prompt template's head) are run once
    for the whole batch; each prompt's own tokens follow them, left-padded, so the cache of a row
    reads ``[shared | padding | own tokens]`` and the mask hides the padding.
    """
    cache = DynamicCache(config=model.config)
    shared = _shared_prefix_length(inputs) if len(inputs) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    if shared:
        head = torch.tensor([inputs[0][:shared]], device=device)
        model(input_ids=head, position_ids=torch.arange(shared, device=device)[None], cache=cache, use_cache=True,
              logits_to_keep=1)
        cache.batch_repeat_interleave(len(inputs))
    ids, own_mask = _left_pad([r[shared:] for r in inputs], pad_token_id)
    ids, own_mask = ids.to(device), own_mask.to(device)
    positions = shared + (own_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones((len(inputs), shared), dtype=own_mask.dtype, device=device), own_mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1)
    return out.logits[:, -1].float(), cache, mask, positions[:, -1]


def _step(model, tokens: torch.Tensor, cache, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], cache=cache,
                use_cache=True)
    return out.logits[:, -1].float()


def _children(trie: PrefixTrie, nodes: torch.Tensor):
    """Candidate edges of ``nodes`` ([...]) padded to the widest: (tokens, child nodes, valid) each [..., W]."""
    counts = trie.child_count[nodes]
    width = int(counts.max()) if counts.numel() else 0
    if width == 0:
        return None
    arange = torch.arange(width, device=nodes.device)
    valid = arange < counts[..., None]
    pos = torch.where(valid, trie.child_offsets[nodes][..., None] + arange, 0)
    return trie.child_tokens[pos], trie.child_nodes[pos], valid


def _reorder_generated(cache, rows: torch.Tensor, prompt_width: int) -> None:
    """Reorder the generated positions of every layer's cache; the prompt part is shared within a prompt."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
            continue
        layer.keys[:, :, prompt_width:] = layer.keys[rows, :, prompt_width:]
        layer.values[:, :, prompt_width:] = layer.values[rows, :, prompt_width:]


def _batches(order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


# -- beam search -------------------------------------------------------------------------------------

@torch.inference_mode()
def beam_search(model, prompt_ids: Sequence[Sequence[int]], trie: PrefixTrie, num_beams: int,
                num_return: int | None = None, forced_prefixes: Sequence[Sequence[int]] | None = None,
                batch_size: int = 32, pad_token_id: int = 0, autocast_dtype: torch.dtype | None = None,
                progress: bool = False, finish_chains: bool = True) -> DecodeResult:
    """Top items per prompt by constrained beam search (deterministic; no sampling, no length penalty).

    ``prompt_ids``: unpadded token ids per prompt. ``forced_prefixes[i]``: tokens already fixed
    after prompt i; only items starting with them are returned and scores count the tokens
    generated after them. Returns ``min(num_return, items reachable)`` distinct items per prompt
    (all of them when ``num_return ≤ num_beams`` and the prompt reaches enough items). Raises
    ValueError when ``num_return`` exceeds the dictionary size or ``num_beams``. ``finish_chains``:
    score the forced rest of every beam in one forward once all beams are on chains (exact; off
    decodes token by token, for comparison).
    """
    num_return = num_beams if num_return is None else int(num_return)
    if num_beams < 1 or num_return < 1:
        raise ValueError(f"num_beams ({num_beams}) and num_return ({num_return}) must be ≥ 1")
    if num_return > trie.num_items:
        raise ValueError(f"num_return={num_return} but the dictionary holds only {trie.num_items} items")
    if num_return > num_beams:
        raise ValueError(f"num_return={num_return} > num_beams={num_beams}: beam search keeps only num_beams")
    inputs, starts = _prepare(prompt_ids, trie, forced_prefixes)
    device = _model_device(model)
    # sort by length so a batch holds similar lengths (less padding); results go back in input order
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    items: list[list[int]] = [[] for _ in inputs]
    scores: list[list[float]] = [[] for _ in inputs]
    batches = list(_batches(order, batch_size))
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="beam search", unit="batch")
    with autocast(device, autocast_dtype):
        for batch in batches:
            pool_items, pool_scores = _beam_search_batch(
                model, [inputs[i] for i in batch], torch.tensor([starts[i] for i in batch]), trie, num_beams,
                num_return, pad_token_id, device, finish_chains,
            )
            for row, i in enumerate(batch):
                keep = pool_items[row] >= 0
                items[i] = pool_items[row][keep].tolist()
                scores[i] = pool_scores[row][keep].tolist()
    return DecodeResult(items=items, scores=scores)


def _beam_search_batch(model, inputs, start_nodes, trie: PrefixTrie, num_beams: int, num_return: int,
                       pad_token_id: int, device, finish_chains: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    trie = trie.to(device)
    batch = len(inputs)
    logits, cache, mask, last_position = _prefill(model, inputs, pad_token_id, device)
    start_nodes = start_nodes.to(device)
    # finished items per prompt, best first; -1 / -inf = empty slot
    pool_items = torch.full((batch, num_return), -1, dtype=torch.long, device=device)
    pool_scores = torch.full((batch, num_return), NEG_INF, device=device)
    nodes = start_nodes[:, None].clone()  # [batch, width] live prefixes (width 1 after prefill)
    beam_scores = torch.zeros((batch, 1), device=device)
    started = trie.node_item[start_nodes] >= 0  # a forced prefix that already is a whole item
    if started.any():
        pool_items[started, 0] = trie.node_item[start_nodes[started]]
        pool_scores[started, 0] = 0.0
        nodes[started] = trie.dead_node
    prompt_width = mask.shape[1]
    beam_rows = torch.arange(batch, device=device)[:, None]
    step = 0
    while True:
        width = nodes.shape[1]
        if finish_chains and step > 0 and _chains_left(trie, nodes) > 1:
            chain_items, chain_scores = _finish_chains(model, trie, nodes, beam_scores, logits, cache, mask,
                                                       last_position + step, pad_token_id)
            merged_scores = torch.cat([pool_scores, chain_scores], dim=1)
            pool_scores, top = merged_scores.topk(num_return, dim=1)
            pool_items = torch.where(pool_scores > NEG_INF, torch.cat([pool_items, chain_items], dim=1).gather(1, top), -1)
            break
        edges = _children(trie, nodes)
        if edges is None:
            break
        tokens, child, valid = edges  # [batch, width, W]
        log_norm = torch.logsumexp(logits, dim=-1).view(batch, width, 1)
        token_logits = logits.view(batch, width, -1).gather(-1, tokens)
        cand = torch.where(valid, beam_scores[..., None] + token_logits - log_norm, NEG_INF)
        finishes = (trie.node_item[child] >= 0) & valid
        flat_cand = cand.view(batch, -1)
        flat_finish = finishes.view(batch, -1)
        # finished items join the pool, which keeps the best num_return
        merged_scores = torch.cat([pool_scores, torch.where(flat_finish, flat_cand, NEG_INF)], dim=1)
        merged_items = torch.cat([pool_items, torch.where(flat_finish, trie.node_item[child].view(batch, -1), -1)], dim=1)
        pool_scores, top = merged_scores.topk(num_return, dim=1)
        pool_items = torch.where(pool_scores > NEG_INF, merged_items.gather(1, top), -1)
        # unfinished candidates compete for the beams
        open_scores = torch.where(flat_finish, NEG_INF, flat_cand)
        keep = min(num_beams, open_scores.shape[1])
        beam_scores, chosen = open_scores.topk(keep, dim=1)
        alive = beam_scores > NEG_INF
        if not bool(alive.any()):
            break
        if keep < num_beams:  # pad to a fixed number of beams with dead slots
            pad = num_beams - keep
            beam_scores = torch.cat([beam_scores, torch.full((batch, pad), NEG_INF, device=device)], dim=1)
            chosen = torch.cat([chosen, torch.zeros((batch, pad), dtype=torch.long, device=device)], dim=1)
            alive = torch.cat([alive, torch.zeros((batch, pad), dtype=torch.bool, device=device)], dim=1)
        parent = chosen // tokens.shape[-1]
        next_tokens = torch.where(alive, tokens.view(batch, -1).gather(1, chosen), pad_token_id)
        nodes = torch.where(alive, child.view(batch, -1).gather(1, chosen), trie.dead_node)
        if step == 0:
            # beams share the prompt: repeat its cache once; nothing generated to reorder yet
            cache.batch_repeat_interleave(num_beams)
            mask = mask.repeat_interleave(num_beams, dim=0)
            last_position = last_position.repeat_interleave(num_beams, dim=0)
        else:
            _reorder_generated(cache, (beam_rows * width + parent).view(-1), prompt_width)
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
        step += 1
        logits = _step(model, next_tokens.view(-1), cache, mask, last_position + step)
    return pool_items.cpu(), pool_scores.cpu()


def _chains_left(trie: PrefixTrie, nodes: torch.Tensor) -> int:
    """The longest forced remainder when every live beam is on a chain (one item below it), else 0."""
    live = nodes != trie.dead_node
    if not bool(live.any()):
        return 0
    unique = trie.node_unique[nodes]
    if not bool((unique[live] >= 0).all()):
        return 0
    remaining = trie.seq_length[unique.clamp(min=0)] - trie.node_depth[nodes]
    return int(torch.where(live, remaining, 0).max())


CHAIN_LOGIT_ELEMENTS = 1 << 24  # logits computed at once when scoring chains (64 MB of float32)


def _finish_chains(model, trie: PrefixTrie, nodes, beam_scores, logits, cache, mask, last_position,
                   pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items and full scores of the beams' chains: ``logits`` score each chain's next token, one cached
    forward over the rest (right-padded; padding comes after every real token, so causality hides it)
    scores the others. Returns ``[batch, width]`` items (-1 for dead beams) and scores (-inf)."""
    batch, width = nodes.shape
    flat = nodes.reshape(-1)
    live = flat != trie.dead_node
    item = trie.node_unique[flat].clamp(min=0)
    depth = trie.node_depth[flat]
    longest = int(torch.where(live, trie.seq_length[item] - depth, 0).max())
    index = depth[:, None] + torch.arange(longest, device=flat.device)[None, :]
    real = live[:, None] & (index < trie.seq_length[item][:, None])
    rest = torch.where(real, trie.seq_table[item[:, None], index.clamp(max=trie.seq_table.shape[1] - 1)], pad_token_id)
    first = logits.gather(1, rest[:, :1]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    total = beam_scores.reshape(-1) + first
    if longest > 1:
        feed = rest[:, :-1]
        attention = torch.cat([mask, torch.ones_like(feed, dtype=mask.dtype)], dim=1)
        positions = last_position[:, None] + 1 + torch.arange(longest - 1, device=flat.device)[None, :]
        hidden = model.get_decoder()(input_ids=feed, attention_mask=attention, position_ids=positions, cache=cache,
                                     use_cache=True).last_hidden_state
        head = model.get_output_embeddings()
        rows = max(1, CHAIN_LOGIT_ELEMENTS // max(1, (longest - 1) * int(logits.shape[-1])))
        for start in range(0, len(flat), rows):
            chunk = slice(start, start + rows)
            chunk_logits = head(hidden[chunk]).float()
            token = chunk_logits.gather(-1, rest[chunk, 1:, None]).squeeze(-1) - torch.logsumexp(chunk_logits, dim=-1)
            total[chunk] = total[chunk] + (token * real[chunk, 1:]).sum(dim=1)
    scores = torch.where(live, total, NEG_INF).view(batch, width)
    return torch.where(live, trie.node_unique[flat], -1).view(batch, width), scores


# -- sampling ------------------------------------------------------------------------------------------

@torch.inference_mode()
def sample(model, prompt_ids: Sequence[Sequence[int]], trie: PrefixTrie, num_samples: int, top_k: int | None = None,
           temperature: float = 1.0, oversample: float = 1.0, dedupe: bool = False,
           forced_prefixes: Sequence[Sequence[int]] | None = None, generator: torch.Generator | None = None,
           batch_size: int = 32, pad_token_id: int = 0, autocast_dtype: torch.dtype | None = None) -> DecodeResult:
    """Constrained sampling: each step draws from the allowed tokens only (temperature, optional top-k).

    Draws ``ceil(num_samples * oversample)`` sequences per prompt. ``dedupe=False`` keeps the first
    ``num_samples`` draws (duplicates allowed: "common" top-k sampling); ``dedupe=True`` keeps the
    first ``num_samples`` distinct items (possibly fewer: "dynamic" sampling uses oversample=1.5).
    Scores are the untempered model log-probs of the generated tokens; results are sorted by score
    (stable, so equal items keep their draw order).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
    if oversample < 1.0:
        raise ValueError(f"oversample must be ≥ 1, got {oversample}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1 or None, got {top_k}")
    draws = int(math.ceil(num_samples * oversample))
    inputs, starts = _prepare(prompt_ids, trie, forced_prefixes)
    device = _model_device(model)
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    items: list[list[int]] = [[] for _ in inputs]
    scores: list[list[float]] = [[] for _ in inputs]
    with autocast(device, autocast_dtype):
        for batch in _batches(order, batch_size):
            drawn_items, drawn_scores = _sample_batch(
                model, [inputs[i] for i in batch], torch.tensor([starts[i] for i in batch]), trie, draws, top_k,
                temperature, generator, pad_token_id, device,
            )
            for row, i in enumerate(batch):
                kept_items, kept_scores, seen = [], [], set()
                for item, score in zip(drawn_items[row].tolist(), drawn_scores[row].tolist()):
                    if dedupe and item in seen:
                        continue
                    seen.add(item)
                    kept_items.append(item)
                    kept_scores.append(score)
                    if len(kept_items) == num_samples:
                        break
                ranked = sorted(range(len(kept_items)), key=lambda j: -kept_scores[j])
                items[i] = [kept_items[j] for j in ranked]
                scores[i] = [kept_scores[j] for j in ranked]
    return DecodeResult(items=items, scores=scores)


def _sample_batch(model, inputs, start_nodes, trie: PrefixTrie, draws: int, top_k, temperature, generator,
                  pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws on the model's device; only the few allowed tokens' probabilities go to the host, where the
    seeded CPU ``generator`` picks (so a seed gives the same draws on every device)."""
    trie = trie.to(device)
    batch = len(inputs)
    logits, cache, mask, last_position = _prefill(model, inputs, pad_token_id, device)
    # every draw gets its own row from the start; the prompt's logits are shared
    logits = logits.repeat_interleave(draws, dim=0)
    nodes = start_nodes.to(device).repeat_interleave(draws)
    totals = torch.zeros(batch * draws, device=device)
    result = torch.where(trie.node_item[nodes] >= 0, trie.node_item[nodes], -1)
    nodes = torch.where(result >= 0, trie.dead_node, nodes)
    cache_expanded = False
    step = 0
    while True:
        edges = _children(trie, nodes)
        if edges is None:
            break
        tokens, child, valid = edges  # [rows, W]
        token_logits = logits.gather(-1, tokens)
        log_probs = token_logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        weights = torch.where(valid, token_logits / temperature, NEG_INF)
        if top_k is not None and top_k < weights.shape[1]:
            kth = weights.topk(top_k, dim=1).values[:, -1:]
            weights = torch.where(weights >= kth, weights, NEG_INF)
        alive = valid.any(dim=1)
        weights[~alive, 0] = 0.0  # dead rows draw a dummy token that is discarded
        pick = torch.multinomial(weights.softmax(dim=1).cpu(), 1, generator=generator).squeeze(1).to(device)
        next_tokens = torch.where(alive, tokens.gather(1, pick[:, None]).squeeze(1), pad_token_id)
        next_nodes = torch.where(alive, child.gather(1, pick[:, None]).squeeze(1), trie.dead_node)
        totals = totals + torch.where(alive, log_probs.gather(1, pick[:, None]).squeeze(1), 0.0)
        finished = trie.node_item[next_nodes] >= 0
        result = torch.where(finished, trie.node_item[next_nodes], result)
        nodes = torch.where(finished, trie.dead_node, next_nodes)
        if not bool((nodes != trie.dead_node).any()):
            break
        if not cache_expanded:
            cache.batch_repeat_interleave(draws)
            mask = mask.repeat_interleave(draws, dim=0)
            last_position = last_position.repeat_interleave(draws, dim=0)
            cache_expanded = True
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
        step += 1
        logits = _step(model, next_tokens, cache, mask, last_position + step)
    return result.view(batch, draws).cpu(), totals.view(batch, draws).cpu()
