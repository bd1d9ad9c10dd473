"""BIGRec, title-constrained BIGRec and D3: exact scores against brute force, and a tiny model that learns a rule."""
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from title_world import NUM_ITEMS, TINY_MODEL, title, title_world  # noqa: E402

from singer_rec import modeling  # noqa: E402
from singer_rec.baselines import title_llm  # noqa: E402
from singer_rec.baselines.bigrec import ground_texts  # noqa: E402
from singer_rec.baselines.toy import successor  # noqa: E402
from singer_rec.prompts import PAPER_TEMPLATES, PromptBuilder  # noqa: E402
from singer_rec.sid.encoders import encode_texts  # noqa: E402
from singer_rec.training import sft  # noqa: E402

TASK = "title_history_to_title"
TITLES = {f"i{k}": title(k) for k in range(NUM_ITEMS)}
encode = functools.partial(encode_texts, encoder="hashing", dim=512, progress=False)


def test_determining_prefixes_cut_after_the_first_unshared_token():
    sequences = [(1, 2, 3, 9), (1, 2, 4, 9), (5, 6, 9), (1, 7, 9)]
    assert title_llm.determining_prefixes(sequences) == [(1, 2, 3), (1, 2, 4), (5,), (1, 7)]


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.train_scratch_tokenizer([*TITLES.values(), PAPER_TEMPLATES[TASK][0], "### Input: ### Response:"], 300)


def _random_model(tokenizer, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256)
    return Qwen2ForCausalLM(config).eval()


def _brute_force(model, prompt, sequence, tokens: int) -> float:
    """Summed full-vocabulary log-prob of the first ``tokens`` tokens of ``sequence`` after ``prompt``."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + list(sequence)])).logits[0].log_softmax(-1)
    return sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(sequence[:tokens]))


def test_d3_and_constrained_scores_equal_brute_force_over_every_title(tokenizer):
    model = _random_model(tokenizer)
    vocab = len(tokenizer)
    full = title_llm.TitleDictionary.build(tokenizer, TITLES, vocab)
    d3 = title_llm.TitleDictionary.build(tokenizer, TITLES, vocab, ghost_free=True)
    assert full.items_of == d3.items_of == [[k] for k in range(NUM_ITEMS)]
    prompts = title_llm.prompt_token_ids(tokenizer, ["The user has interacted with 'amber kettle deluxe'",
                                                      "nothing"], 256, full.longest)
    for length_penalty, dictionary in ((0.0, full), (1.0, full), (0.0, d3)):
        rankings, scores = title_llm.constrained_rankings(model, prompts, dictionary, NUM_ITEMS, tokenizer.pad_token_id,
                                                          length_penalty=length_penalty)
        for row, prompt in enumerate(prompts):
            assert sorted(rankings[row]) == list(range(NUM_ITEMS))  # a beam per title: every item ranked
            for item, score in zip(rankings[row], scores[row]):
                sequence = full.sequences[item]
                # D3: the summed log-prob up to the token that determines the item; the ghost tokens after it
                # (" deluxe" + EOS here) do not count
                tokens = len(d3.trie.sequences[item]) if dictionary is d3 else len(sequence)
                expected = _brute_force(model, prompt, sequence, tokens) / len(sequence) ** length_penalty
                assert score == pytest.approx(expected, abs=1e-4)
            assert scores[row] == sorted(scores[row], reverse=True)
    assert max(len(s) for s in d3.trie.sequences) < min(len(s) for s in full.sequences)  # ghost tokens were cut


def test_items_sharing_a_title_share_its_place_and_the_bonus_reorders_them(tokenizer):
    model = _random_model(tokenizer, seed=1)
    titles = {**TITLES, "twin": TITLES["i4"]}  # a 13th item with item i4's title
    dictionary = title_llm.TitleDictionary.build(tokenizer, titles, len(tokenizer), ghost_free=True)
    assert len(dictionary.sequences) == NUM_ITEMS and dictionary.items_of[4] == [4, 12]
    prompts = title_llm.prompt_token_ids(tokenizer, ["nothing"], 256, dictionary.longest)
    (ranking,), (scores,) = title_llm.constrained_rankings(model, prompts, dictionary, NUM_ITEMS, tokenizer.pad_token_id)
    assert len(ranking) == 13 and ranking.index(12) == ranking.index(4) + 1 and scores[ranking.index(4)] == scores[ranking.index(12)]
    bonus = np.zeros((1, 13))
    bonus[0, 12] = 0.5  # the assistant prefers the twin
    (ranking,), (boosted,) = title_llm.constrained_rankings(model, prompts, dictionary, NUM_ITEMS, tokenizer.pad_token_id,
                                                            item_bonus=bonus)
    assert boosted[ranking.index(12)] == pytest.approx(scores[ranking.index(4)] + 0.5, abs=1e-6)


def test_one_search_ranks_every_assistant_weight_and_valid_picks_the_best(tokenizer):
    model = _random_model(tokenizer, seed=2)
    dictionary = title_llm.TitleDictionary.build(tokenizer, TITLES, len(tokenizer), ghost_free=True)
    prompts = title_llm.prompt_token_ids(tokenizer, ["nothing", "amber kettle", "x y z"], 256, dictionary.longest)
    targets = [3, 7, 11]
    # a planted assistant: certain of each row's target
    log_probs = np.full((3, NUM_ITEMS), np.log(1e-3))
    log_probs[range(3), targets] = np.log(1 - 1e-3 * (NUM_ITEMS - 1))
    search = title_llm.constrained_search(model, prompts, dictionary, NUM_ITEMS, tokenizer.pad_token_id)
    for alpha in (0.0, 0.5, 3.0):  # reranking one search = searching with the bonus (it only reorders)
        bonus = alpha * log_probs if alpha else None
        assert (title_llm.rank_beams(search, dictionary, 0.0, bonus)
                == title_llm.constrained_rankings(model, prompts, dictionary, NUM_ITEMS, tokenizer.pad_token_id,
                                                  item_bonus=bonus))
    best, values = title_llm.select_assistant_weight(search, dictionary, targets, log_probs, [3.0, 0.0, 100.0])
    llm_alone = title_llm.ranked_metrics(title_llm.rank_beams(search, dictionary)[0], targets)["NDCG@10"]
    assert list(values) == [0.0, 3.0, 100.0] and values[0.0] == llm_alone
    assert values[100.0] == 1.0 and values[0.0] < 1.0  # the planted assistant puts every target first
    assert best == min(a for a, v in values.items() if v == 1.0)  # ties: the smallest weight
    uniform = np.zeros((3, NUM_ITEMS))  # an assistant with no opinion: every weight ties, the smallest wins
    assert title_llm.select_assistant_weight(search, dictionary, targets, uniform, [1.0, 0.25])[0] == 0.25
    with pytest.raises(ValueError, match="grid is empty"):
        title_llm.select_assistant_weight(search, dictionary, targets, uniform, [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few hundred steps on title history -> next title (rule 3i + 1 mod 12)."""
    tmp = tmp_path_factory.mktemp("title_model")
    items, item_sids, train, valid, _ = title_world()
    # the last two titles of each history: enough for the rule, and a short prompt trains fast
    builder = PromptBuilder(items, item_sids, {TASK: PAPER_TEMPLATES[TASK]}, history_length=2)
    paths = {"train_path": tmp / "train.parquet", "valid_path": tmp / "valid.parquet", "items_path": tmp / "items.parquet",
             "item_sids_path": tmp / "item_sids.parquet"}
    builder.build([TASK], train, "train_sequences").to_parquet(paths["train_path"])
    valid_rows = builder.build([TASK], valid, "valid_sequences", item_tasks=False)
    valid_rows.to_parquet(paths["valid_path"])
    items.to_parquet(paths["items_path"])
    item_sids.to_parquet(paths["item_sids_path"])
    result = sft.train({**{k: str(v) for k, v in paths.items()}, "output_dir": str(tmp / "model"),
                        "checkpoint_dir": str(tmp / "ckpt"), "result_path": str(tmp / "result.json"),
                        "model": TINY_MODEL, "templates": {TASK: PAPER_TEMPLATES[TASK]}, "seed": 3, "learning_rate": 3e-3,
                        "batch_size": 32, "micro_batch_size": 32, "epochs": 20, "patience": 20, "max_length": 128,
                        "select_metric": "loss", "autocast": "off", "checkpoint_every": 1000, "num_threads": 1})
    assert result["steps"] == 160  # 240 rows / 32 per step x 20 epochs
    model, tokenizer, _ = modeling.load_model_folder(result["model_dir"])
    return model, tokenizer, valid_rows


def test_a_tiny_model_learns_the_rule_and_every_decoder_ranks_the_next_item_first(trained):
    model, tokenizer, rows = trained
    targets = [int(t[1:]) for t in rows["target"]]
    assert all(successor(int(h[-1][1:]), NUM_ITEMS) == t for h, t in zip(title_world()[3]["history"], targets))
    full = title_llm.TitleDictionary.build(tokenizer, TITLES, len(tokenizer))
    d3 = title_llm.TitleDictionary.build(tokenizer, TITLES, len(tokenizer), ghost_free=True)
    prompts = title_llm.prompt_token_ids(tokenizer, rows["prompt"].tolist(), 128, full.longest)
    generated = title_llm.generate_titles(model, tokenizer, prompts, num_beams=4, max_new_tokens=12)
    assert generated == [title(t) for t in targets]  # free generation writes the next title exactly
    grounded = ground_texts(generated, encode(list(TITLES.values())), encode)
    assert grounded.argmax(axis=1).tolist() == targets  # BIGRec: the exact title grounds to its item
    metrics = {"BIGRec": title_llm.grounded_metrics(grounded, targets)}
    for name, dictionary, penalty in (("constrained", full, 1.0), ("D3", d3, 0.0)):
        rankings, _ = title_llm.constrained_rankings(model, prompts, dictionary, 10, tokenizer.pad_token_id,
                                                     length_penalty=penalty)
        assert all(len(r) == 10 for r in rankings) and [r[0] for r in rankings] == targets, name
        metrics[name] = title_llm.ranked_metrics(rankings, targets)
    for name, values in metrics.items():  # the project's metric code: first for every row
        assert values["n"] == 60 and values["HR@3"] == values["NDCG@3"] == values["NDCG@10"] == 1.0, name


def test_popularity_prior_counts_train_targets_in_catalogue_order():
    assert title_llm.popularity_prior(["a", "b", "c"], ["c", "a", "c", "zz"]).tolist() == [1.0, 0.0, 2.0]
