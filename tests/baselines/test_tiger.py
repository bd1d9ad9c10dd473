"""TIGER-style baseline: SID vocabulary, answer-only loss, learning a rule, constrained decoding."""
import pandas as pd
import pytest
import torch

from singer_rec.baselines.tiger import (
    BOS,
    IGNORE,
    SEP,
    SidVocabulary,
    TigerConfig,
    _collate,
    answer_loss,
    evaluate_tiger,
    recommend,
    train_tiger,
)
from singer_rec.baselines.toy import rule_tables


def toy_sids(item_ids):
    return pd.DataFrame({"item_id": item_ids, "codes": [[i // 8, i % 8] for i in range(len(item_ids))]})


def test_vocabulary_offsets_and_prompts():
    sids = pd.DataFrame({"item_id": ["x", "y", "z"], "codes": [[0, 1], [2, 0], [2, 1, 0]]})
    vocab = SidVocabulary(sids)
    # level 0 has codes 0..2 -> ids 3..5; level 1 codes 0..1 -> 6..7; level 2 code 0 -> 8
    assert vocab.offsets == [3, 6, 8] and vocab.vocab_size == 9
    assert vocab.item_tokens == [[3, 7], [5, 6], [5, 7, 8]]
    assert vocab.prompt(["y", "x"]) == [BOS, 5, 6, 3, 7, SEP]
    prompts, answers = vocab.encode(pd.DataFrame({"history": [["x", "y", "z"]], "target": ["x"]}), 2, "t")
    assert prompts == [[BOS, 5, 6, 5, 7, 8, SEP]] and answers == [[3, 7]]
    ids, mask, labels = _collate([[1, 5, 2], [1, 2]], [[3, 7], [5, 6]])
    assert ids.tolist() == [[1, 5, 2, 3, 7], [1, 2, 5, 6, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert labels.tolist() == [[IGNORE, IGNORE, IGNORE, 3, 7], [IGNORE, IGNORE, 5, 6, IGNORE]]


def test_vocabulary_errors_name_row_and_field():
    vocab = SidVocabulary(pd.DataFrame({"item_id": ["x"], "codes": [[0, 1]]}))
    with pytest.raises(ValueError, match=r"valid_sequences row 0: field 'target': item_id 'q' has no SID"):
        vocab.encode(pd.DataFrame({"history": [["x"]], "target": ["q"]}), 10, "valid_sequences")
    with pytest.raises(ValueError, match=r"item_sids row 1: field 'codes' must be a non-empty list"):
        SidVocabulary(pd.DataFrame({"item_id": ["x", "y"], "codes": [[0], []]}))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['codes'\]"):
        SidVocabulary(pd.DataFrame({"item_id": ["x"]}))


def test_tiger_learns_the_rule_and_decodes_valid_distinct_items():
    torch.set_num_threads(1)
    item_ids, train, valid, test = rule_tables(num_items=40, num_users=200, max_len=6)
    vocab = SidVocabulary(toy_sids(item_ids))
    config = TigerConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, max_epochs=25,
                         patience=3, batch_size=128, learning_rate=3e-3, max_history=6, seed=1)
    model, info = train_tiger(vocab, train, valid, config)
    assert info["best_epoch"] >= 1 and info["valid_loss"] < 0.5
    metrics = evaluate_tiger(model, vocab, test, config)
    assert metrics["HR@10"] >= 0.9 and metrics["NDCG@10"] >= 0.8 and metrics["n"] == 200
    ranked = recommend(model, vocab, test["history"].tolist()[:5], config)
    assert all(len(r) == 10 and len(set(r)) == 10 and set(r) <= set(item_ids) for r in ranked)


@pytest.mark.parametrize("select_metric", ["NDCG@10", "loss"])
def test_tiger_keeps_the_epoch_with_the_best_valid_selection_metric(select_metric):
    torch.set_num_threads(1)
    item_ids, train, valid, test = rule_tables(num_items=40, num_users=120, max_len=6)
    vocab = SidVocabulary(toy_sids(item_ids))
    config = TigerConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, max_epochs=6,
                         patience=6, batch_size=64, learning_rate=3e-3, max_history=6, seed=2,
                         select_metric=select_metric, valid_rows=60)
    model, info = train_tiger(vocab, train, valid, config)
    curve = info["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4, 5, 6]
    if select_metric == "loss":
        best = min(curve, key=lambda p: p["valid_loss"])
        assert "NDCG@10" not in curve[0]
    else:
        best = max(curve, key=lambda p: p["NDCG@10"])  # first of equals, as the trainer keeps it
        assert info["valid_NDCG_at_10"] == best["NDCG@10"] and curve[0]["n"] == 60
    assert info["best_epoch"] == best["epoch"] and info["valid_loss"] == best["valid_loss"]
    # the returned model is that epoch's: its valid loss is the recorded one
    valid_prompts, valid_answers = vocab.encode(valid, 6, "valid")
    assert answer_loss(model, valid_prompts, valid_answers) == pytest.approx(best["valid_loss"], abs=1e-6)
