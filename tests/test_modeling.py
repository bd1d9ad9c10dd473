"""Model presets, SID tokens and the model folder (singer_rec.modeling)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from singer_rec import modeling

SIDS = {"i1": "<a_0><b_1><c_2>", "i2": "<a_1><b_0><c_2>", "i3": "<a_1><b_0><c_2><d_1>"}
CORPUS = ["Red pencil set for school", "Blue ink pen, fine tip", "What is the title of the item?"] * 5
TINY = {"preset": "scratch", "scratch": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                         "num_key_value_heads": 1, "intermediate_size": 64,
                                         "max_position_embeddings": 64, "tokenizer_vocab_size": 300}}


@pytest.fixture(scope="module")
def tiny():
    vocab = modeling.sid_vocabulary_for(SIDS.values())
    model, tokenizer = modeling.build_model(TINY, CORPUS, vocab, seed=0)
    return model, tokenizer, vocab


def test_sid_vocabulary_covers_every_code_up_to_the_largest():
    assert modeling.sid_vocabulary_for(SIDS.values()) == [
        "<a_0>", "<a_1>", "<b_0>", "<b_1>", "<c_0>", "<c_1>", "<c_2>", "<d_0>", "<d_1>"]


def test_sid_tokens_are_single_tokens_and_decode_back(tiny):
    model, tokenizer, vocab = tiny
    ids = modeling.sid_token_ids(tokenizer, vocab)
    assert len(set(ids)) == len(vocab)
    encoded = tokenizer.encode(SIDS["i3"], add_special_tokens=False)
    assert encoded == [ids[vocab.index(t)] for t in ["<a_1>", "<b_0>", "<c_2>", "<d_1>"]]
    assert tokenizer.decode(encoded, skip_special_tokens=True) == SIDS["i3"]
    # inside text too: never split, never merged with neighbours
    text_ids = tokenizer.encode("item " + SIDS["i1"] + ", next", add_special_tokens=False)
    assert [i for i in text_ids if i in ids] == [ids[vocab.index(t)] for t in ["<a_0>", "<b_1>", "<c_2>"]]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.pad_token == modeling.SCRATCH_PAD and tokenizer.eos_token == modeling.SCRATCH_EOS


def test_scratch_tokenizer_is_deterministic():
    a = modeling.train_scratch_tokenizer(CORPUS, 300)
    b = modeling.train_scratch_tokenizer(CORPUS, 300)
    assert a.get_vocab() == b.get_vocab()


def test_model_folder_round_trip(tiny, tmp_path):
    model, tokenizer, _ = tiny
    meta = {"preset": "scratch", "sid_map": SIDS, "titles": {"i1": "Red pencil"}, "templates": {}, "train": {}}
    path = modeling.save_model_folder(model, tokenizer, meta, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left
    assert {"config.json", "model.safetensors", "singer.json"} <= {p.name for p in path.iterdir()}
    loaded, tok2, meta2 = modeling.load_model_folder(path)
    assert meta2 == json.loads(json.dumps(meta))
    x = torch.tensor([tokenizer.encode("Red " + SIDS["i2"], add_special_tokens=False)])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).logits, loaded(x).logits, atol=1e-6)
    assert tok2.encode(SIDS["i2"], add_special_tokens=False) == tokenizer.encode(SIDS["i2"], add_special_tokens=False)
    # saving again replaces the folder whole
    modeling.save_model_folder(model, tokenizer, {**meta, "preset": "scratch2"}, path)
    assert modeling.read_meta(path)["preset"] == "scratch2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_save_leaves_nothing(tiny, tmp_path):
    model, tokenizer, _ = tiny
    with pytest.raises(ValueError, match="sid_map"):
        modeling.save_model_folder(model, tokenizer, {"preset": "scratch"}, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []

    class Boom(RuntimeError):
        pass

    def explode(*a, **k):
        raise Boom("disk full")

    tokenizer_save = tokenizer.save_pretrained
    tokenizer.save_pretrained = explode
    try:
        with pytest.raises(Boom):
            modeling.save_model_folder(model, tokenizer, {"preset": "scratch", "sid_map": SIDS}, tmp_path / "m")
    finally:
        tokenizer.save_pretrained = tokenizer_save
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_non_model_folder_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="singer.json missing"):
        modeling.load_model_folder(tmp_path)


def test_unknown_preset_and_missing_base_model_fail_clearly():
    with pytest.raises(modeling.ModelConfigError, match="unknown model preset 'gpt9'"):
        modeling.check_model_config({"preset": "gpt9"})
    with pytest.raises(modeling.ModelConfigError, match="not found"):
        modeling.check_model_config({"preset": "hf", "hf": {"path": "/nonexistent/model-folder"}})
    with pytest.raises(modeling.ModelConfigError, match="model.hf.path"):
        modeling.check_model_config({"preset": "hf", "hf": {}})


def test_sid_map_mismatch_is_reported_with_an_example():
    table = pd.DataFrame({"item_id": list(SIDS), "sid": list(SIDS.values())})
    modeling.validate_sid_map(SIDS, table)  # equal: no error
    changed = {**SIDS, "i2": "<a_0><b_0><c_0>"}
    with pytest.raises(modeling.SidMapMismatchError, match=r"item 'i2': model <a_0><b_0><c_0> vs item_sids <a_1><b_0><c_2>"):
        modeling.validate_sid_map(changed, table)
    with pytest.raises(modeling.SidMapMismatchError, match=r"1 item\(s\) only in item_sids \(e.g. \['i3'\]\)"):
        modeling.validate_sid_map({k: SIDS[k] for k in ("i1", "i2")}, table)


def test_lora_keeps_sid_rows_trainable_and_merges_on_save(tiny, tmp_path):
    pytest.importorskip("peft")
    model, tokenizer, vocab = tiny
    fresh, tok = modeling.build_model(TINY, CORPUS, vocab, seed=1)
    sid_ids = modeling.sid_token_ids(tok, vocab)
    wrapped = modeling.apply_lora(fresh, {"r": 2, "alpha": 4}, sid_ids)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    assert any("trainable_tokens" in n for n in trainable)
    assert not any(n.endswith("embed_tokens.weight") and "base_layer" not in n and "trainable" not in n for n in trainable)
    path = modeling.save_model_folder(wrapped, tok, {"preset": "scratch", "sid_map": SIDS}, tmp_path / "lora")
    loaded, _, _ = modeling.load_model_folder(path)
    assert not any("lora" in n for n, _ in loaded.named_parameters())


def test_hf_preset_loads_a_local_folder_offline(tiny, tmp_path):
    model, tokenizer, vocab = tiny
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    loaded, tok = modeling.build_model({"preset": "hf", "hf": {"path": str(tmp_path / "base")}}, [], vocab + ["<d_2>"])
    rows = loaded.get_input_embeddings().weight.shape[0]
    assert len(tok) == len(tokenizer) + 1 and rows == modeling.padded_rows(len(tok), modeling.ROW_MULTIPLE)
    assert rows % modeling.ROW_MULTIPLE == 0 and loaded.config.vocab_size == rows
    assert modeling.sid_token_ids(tok, ["<d_2>"]) == [len(tokenizer)]
    # the original rows are kept, the new one starts at their mean
    weight, before = loaded.get_input_embeddings().weight, model.get_input_embeddings().weight
    assert torch.equal(weight[: len(tokenizer)], before)
    torch.testing.assert_close(weight[len(tokenizer)], before.mean(dim=0))


def test_scratch_matrix_has_exactly_the_tokenizer_rows(tiny):
    """Scratch models are not padded: their random init (and the demo's metrics) stay as they were."""
    model, tokenizer, _ = tiny
    assert model.get_input_embeddings().weight.shape[0] == model.config.vocab_size == len(tokenizer)


def test_padded_rows():
    assert [modeling.padded_rows(n, 64) for n in (1, 64, 65, 151_665 + 1024)] == [64, 64, 128, 152_704]
    assert modeling.padded_rows(311, None) == 311


def test_training_seconds_are_the_stages_a_folder_records():
    meta = {"train": {"result": {"wall_s": 120.5}}, "rl": {"steps": 8, "wall_seconds": 30.25},
            "sdpo": {"steps": 2, "wall_s": 4.0}}
    assert modeling.training_seconds(meta) == {"sft": 120.5, "rl": 30.25, "sdpo": 4.0}
    # an SFT folder, a folder from before RL recorded its time, a base model
    assert modeling.training_seconds({"train": {"result": {"wall_s": 7}}}) == {"sft": 7.0}
    assert modeling.training_seconds({"train": {"seed": 1}, "rl": {"steps": 8}}) == {}
    assert modeling.training_seconds({}) == {}
