"""Correctness of the trie-constrained decoder against exhaustive scoring with plain forward passes."""
from __future__ import annotations

import itertools
import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from singer_rec.decoding import DecodeResult, PrefixTrie, beam_search, sample

VOCAB = 60
PAD = 0
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
    )
    m = Qwen2ForCausalLM(config).eval()
    # random init is nearly uniform; sharpen it so rankings are well separated
    with torch.no_grad():
        m.lm_head.weight.mul_(8.0)
    return m


def sid_catalog(n_items: int, seed: int = 0, suffix_every: int = 0) -> list[list[int]]:
    """Distinct 3-token SIDs over levels a=10..19, b=20..29, c=30..39; optional 4th token 40..49."""
    rng = random.Random(seed)
    paths = rng.sample(list(itertools.product(range(10, 16), range(20, 25), range(30, 34))), n_items)
    seqs = [list(p) for p in paths]
    if suffix_every:
        # a collision group: items sharing a 3-path get suffix tokens
        base = seqs[0][:3]
        for j in range(suffix_every):
            seqs.append(base + [40 + j])
        seqs[0] = base + [40 + suffix_every]
    return seqs


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, VOCAB) for _ in range(rng.randrange(3, 12))] for _ in range(n)]


@torch.inference_mode()
def exhaustive_scores(model, prompt: list[int], sequences: list[list[int]], prefix: list[int] = ()) -> list[float]:
    """log p(sequence | prompt) for every sequence by one plain forward pass each (no cache, no padding)."""
    out = []
    prefix = list(prefix)
    for seq in sequences:
        if seq[: len(prefix)] != prefix:
            out.append(float("-inf"))
            continue
        ids = torch.tensor([prompt + seq])
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        start = len(prompt) + len(prefix)
        out.append(sum(float(logp[pos - 1, ids[0, pos]]) for pos in range(start, ids.shape[1])))
    return out


def ranking(scores: list[float]) -> list[int]:
    return sorted((i for i in range(len(scores)) if scores[i] > float("-inf")), key=lambda i: -scores[i])


def assert_exhaustive_ranking(model, result: DecodeResult, batch, catalog, forced=None, top=None) -> None:
    """Each prompt's returned items are the top of the exhaustive ranking, with the same scores."""
    for i, prompt in enumerate(batch):
        prefix = forced[i] if forced else ()
        expected = exhaustive_scores(model, prompt, catalog, prefix=prefix)
        assert result.items[i] == ranking(expected)[:top]
        assert result.scores[i] == pytest.approx([expected[j] for j in result.items[i]], abs=TOLERANCE)


def test_trie_tables():
    trie = PrefixTrie.build([[3, 5], [3, 6, 7], [4]], vocab_size=10)
    assert trie.num_items == 3 and trie.max_length == 3
    root_children = trie.child_tokens[trie.child_offsets[0]:trie.child_offsets[1]].tolist()
    assert root_children == [3, 4]
    node3 = trie.walk([3])
    assert trie.child_tokens[trie.child_offsets[node3]:trie.child_offsets[node3 + 1]].tolist() == [5, 6]
    assert int(trie.node_item[trie.walk([3, 6, 7])]) == 1
    assert int(trie.node_item[trie.walk([4])]) == 2
    assert int(trie.node_item[node3]) == -1
    assert int(trie.child_count[trie.dead_node]) == 0
    assert trie.items_under(node3) == 2


@pytest.mark.parametrize(
    "sequences, message",
    [
        ([[1, 2], [1, 2]], "are the same"),
        ([[1, 2], [1, 2, 3]], "is a prefix of"),
        ([[1, 2, 3], [1, 2]], "is a prefix of another"),
        ([[1, 99]], "outside"),
        ([[1], []], "sequence 1 is empty"),
        ([], "empty"),
    ],
)
def test_trie_rejects_bad_dictionaries(sequences, message):
    with pytest.raises(ValueError, match=message):
        PrefixTrie.build(sequences, vocab_size=10)


def test_walk_rejects_unknown_prefix():
    trie = PrefixTrie.build([[3, 5], [3, 6]], vocab_size=10)
    with pytest.raises(ValueError, match="token 7 at position 1"):
        trie.walk([3, 7])


def test_full_beam_equals_exhaustive_ranking(model):
    catalog = sid_catalog(12)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(5)
    result = beam_search(model, batch, trie, num_beams=12, batch_size=3, pad_token_id=PAD)
    assert isinstance(result, DecodeResult)
    assert_exhaustive_ranking(model, result, batch, catalog)


def test_small_beam_items_valid_distinct_and_exactly_scored(model):
    catalog, trie, batch = sid_catalog(60, seed=3), PrefixTrie.build(sid_catalog(60, seed=3), VOCAB), prompts(6, seed=4)
    result = beam_search(model, batch, trie, num_beams=4, num_return=3, pad_token_id=PAD)
    for i, prompt in enumerate(batch):
        expected = exhaustive_scores(model, prompt, catalog)
        assert len(result.items[i]) == 3 and len(set(result.items[i])) == 3
        assert all(0 <= j < len(catalog) for j in result.items[i])
        assert result.scores[i] == sorted(result.scores[i], reverse=True)
        assert result.scores[i] == pytest.approx([expected[j] for j in result.items[i]], abs=TOLERANCE)
        # the greedy-ish search cannot beat the true best item
        assert result.scores[i][0] <= max(expected) + TOLERANCE


def test_batched_left_padded_equals_one_by_one(model):
    catalog = sid_catalog(30, seed=5)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(7, seed=6)
    together = beam_search(model, batch, trie, num_beams=5, batch_size=7, pad_token_id=PAD)
    for i, prompt in enumerate(batch):
        alone = beam_search(model, [prompt], trie, num_beams=5, pad_token_id=PAD)
        assert together.items[i] == alone.items[0]
        assert together.scores[i] == pytest.approx(alone.scores[0], abs=TOLERANCE)


def test_variable_length_sequences(model):
    catalog = sid_catalog(10, seed=7, suffix_every=3)  # 3-token items and a 4-token collision group
    assert {len(s) for s in catalog} == {3, 4}
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(4, seed=8)
    result = beam_search(model, batch, trie, num_beams=len(catalog), batch_size=2, pad_token_id=PAD)
    assert_exhaustive_ranking(model, result, batch, catalog)


def test_title_dictionary_with_eos(model):
    eos = 2
    titles = [[50, 51, 52, eos], [50, 51, eos], [50, 53, eos], [54, eos], [55, 56, 57, 58, 59, eos]]
    trie = PrefixTrie.build(titles, VOCAB)
    batch = prompts(3, seed=9)
    result = beam_search(model, batch, trie, num_beams=5, pad_token_id=PAD)
    assert_exhaustive_ranking(model, result, batch, titles)


def test_forced_prefixes(model):
    catalog = sid_catalog(40, seed=10)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(3, seed=11)
    forced = [catalog[0][:1], catalog[1][:2], []]
    result = beam_search(model, batch, trie, num_beams=40, num_return=5, forced_prefixes=forced, pad_token_id=PAD)
    assert_exhaustive_ranking(model, result, batch, catalog, forced=forced, top=5)
    assert all(catalog[j][: len(forced[i])] == list(forced[i]) for i in range(3) for j in result.items[i])


def test_forced_prefix_with_few_reachable_items_returns_them_all(model):
    catalog = [[10, 20, 30], [10, 20, 31], [11, 21, 30], [11, 22, 31]]
    trie = PrefixTrie.build(catalog, VOCAB)
    result = beam_search(model, prompts(2, seed=12), trie, num_beams=4, forced_prefixes=[[10, 20], [11, 22, 31]])
    assert sorted(result.items[0]) == [0, 1]
    assert result.items[1] == [3] and result.scores[1] == [0.0]


def test_errors(model):
    trie = PrefixTrie.build(sid_catalog(5), VOCAB)
    with pytest.raises(ValueError, match="num_return=6 but the dictionary holds only 5 items"):
        beam_search(model, prompts(1), trie, num_beams=6)
    with pytest.raises(ValueError, match="num_return=4 > num_beams=3"):
        beam_search(model, prompts(1), trie, num_beams=3, num_return=4)
    with pytest.raises(ValueError, match="forced prefix of prompt 0"):
        beam_search(model, prompts(1), trie, num_beams=3, forced_prefixes=[[59]])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        beam_search(model, [[1, 2], []], trie, num_beams=3)


def test_bf16_autocast_keeps_valid_items(model):
    catalog = sid_catalog(20, seed=13)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(3, seed=14)
    exact = beam_search(model, batch, trie, num_beams=20)
    low = beam_search(model, batch, trie, num_beams=20, autocast_dtype=torch.bfloat16)
    for i in range(len(batch)):
        assert sorted(low.items[i]) == list(range(20))
        assert low.scores[i] == pytest.approx(exact.scores[i], abs=0.3)  # bf16 rounding only


def test_sampling_common_and_dynamic(model):
    catalog = sid_catalog(15, seed=15)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(3, seed=16)
    common = sample(model, batch, trie, num_samples=8, top_k=3, generator=torch.Generator().manual_seed(0))
    again = sample(model, batch, trie, num_samples=8, top_k=3, generator=torch.Generator().manual_seed(0))
    assert common == again  # same seed, same draws
    for i, prompt in enumerate(batch):
        expected = exhaustive_scores(model, prompt, catalog)
        assert len(common.items[i]) == 8
        assert common.scores[i] == pytest.approx([expected[j] for j in common.items[i]], abs=TOLERANCE)
        assert common.scores[i] == sorted(common.scores[i], reverse=True)
    dynamic = sample(model, batch, trie, num_samples=6, oversample=1.5, dedupe=True, temperature=2.0,
                     generator=torch.Generator().manual_seed(1))
    for i in range(len(batch)):
        assert 1 <= len(dynamic.items[i]) <= 6
        assert len(set(dynamic.items[i])) == len(dynamic.items[i])


def test_top1_sampling_is_greedy(model):
    catalog = sid_catalog(25, seed=17)
    trie = PrefixTrie.build(catalog, VOCAB)
    batch = prompts(3, seed=18)
    greedy = beam_search(model, batch, trie, num_beams=1)
    drawn = sample(model, batch, trie, num_samples=4, top_k=1, generator=torch.Generator().manual_seed(0))
    for i in range(len(batch)):
        assert drawn.items[i] == greedy.items[i] * 4
        assert drawn.scores[i] == pytest.approx(greedy.scores[i] * 4, abs=TOLERANCE)


def test_sampling_forced_prefix_stays_under_it(model):
    catalog = sid_catalog(40, seed=19)
    trie = PrefixTrie.build(catalog, VOCAB)
    forced = [catalog[3][:2]]
    drawn = sample(model, prompts(1, seed=20), trie, num_samples=10, forced_prefixes=forced,
                   generator=torch.Generator().manual_seed(2))
    assert all(catalog[j][:2] == forced[0] for j in drawn.items[0])


def test_prompts_sharing_a_template_head(model):
    """The shared first tokens run once for the batch; results equal exhaustive scoring and one-by-one runs."""
    catalog = sid_catalog(15, seed=21)
    trie = PrefixTrie.build(catalog, VOCAB)
    head = [5, 6, 7, 8, 9, 5, 6]
    batch = [head + tail for tail in prompts(5, seed=22)] + [head + [3]]
    together = beam_search(model, batch, trie, num_beams=15, batch_size=6, pad_token_id=PAD)
    assert_exhaustive_ranking(model, together, batch, catalog)
    drawn = sample(model, batch, trie, num_samples=4, top_k=1, generator=torch.Generator().manual_seed(0))
    greedy = beam_search(model, batch, trie, num_beams=1, batch_size=6, pad_token_id=PAD)
    for i, prompt in enumerate(batch):
        alone = beam_search(model, [prompt], trie, num_beams=15, pad_token_id=PAD)
        assert together.items[i] == alone.items[0]
        assert drawn.items[i] == greedy.items[i] * 4


def long_titles(seed: int = 23) -> list[list[int]]:
    """Title-like items: a few shared heads, then long unique tails, each ending in EOS (2)."""
    rng = random.Random(seed)
    titles = set()
    while len(titles) < 12:
        head = [50 + rng.randrange(3)]
        titles.add(tuple(head + [rng.randrange(3, 50) for _ in range(rng.randrange(2, 9))] + [2]))
    return [list(t) for t in sorted(titles)]


@pytest.mark.parametrize("beams", [3, 12])
def test_chains_scored_at_once_equal_token_by_token(model, beams):
    titles = long_titles()
    trie = PrefixTrie.build(titles, VOCAB)
    batch = prompts(4, seed=24)
    calls = []
    hook = model.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    try:
        fast = beam_search(model, batch, trie, num_beams=beams, batch_size=2, pad_token_id=PAD)
        fast_calls, calls[:] = len(calls), []
        slow = beam_search(model, batch, trie, num_beams=beams, batch_size=2, pad_token_id=PAD, finish_chains=False)
        slow_calls = len(calls)
    finally:
        hook.remove()
    assert fast.items == slow.items
    for i in range(len(batch)):
        # float32 sums of up to 10 log-probs (|score| up to ~50): a few ulps, so relative 1e-6
        assert fast.scores[i] == pytest.approx(slow.scores[i], rel=1e-6, abs=1e-5)
    # token by token: one forward per generated position (up to 10 tokens); chains: a few, then one
    assert fast_calls < slow_calls
    if beams == 12:
        assert_exhaustive_ranking(model, fast, batch, titles)


def test_chain_table_of_the_trie():
    trie = PrefixTrie.build([[5, 6, 7], [5, 8], [9, 10, 11, 12]], 20)
    unique = {tuple(trie.sequences[i][:d]): int(trie.node_unique[trie.walk(trie.sequences[i][:d])])
              for i in range(3) for d in range(len(trie.sequences[i]) + 1)}
    assert unique == {(): -1, (5,): -1, (5, 6): 0, (5, 6, 7): 0, (5, 8): 1, (9,): 2, (9, 10): 2, (9, 10, 11): 2,
                      (9, 10, 11, 12): 2}
    assert [trie.items_under(trie.walk(prefix)) for prefix in ([], [5], [5, 6], [9, 10])] == [3, 2, 1, 1]
    assert trie.seq_table.tolist() == [[5, 6, 7, 0], [5, 8, 0, 0], [9, 10, 11, 12]]
    assert trie.seq_length.tolist() == [3, 2, 4]


def test_beam_search_copies_to_the_host_once_per_batch(model, monkeypatch):
    """Logits, trie tables and pools stay on the model's device; only each batch's result comes back."""
    trie = PrefixTrie.build(long_titles(), VOCAB)
    copies = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(tuple(self.shape)) or original(self, *a, **k))
    beam_search(model, prompts(4, seed=25), trie, num_beams=4, batch_size=2, pad_token_id=PAD)
    assert copies == [(2, 4), (2, 4)] * 2  # items and scores of each of the 2 batches
