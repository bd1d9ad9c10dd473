"""SID token rows of a pretrained model start at the mean of its real-token rows, never on a padding row.

A pretrained checkpoint (Qwen2.5: 151,936 rows for 151,665 tokens) has untrained rows beyond its
tokenizer, exactly where added SID tokens get their ids. The folders here have that shape at a small
size (``singer_rec.shaped_models``: 1,024 tokens, zero padding rows).
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from singer_rec import modeling, shaped_models
from singer_rec.prompts import DEFAULT_SEMANTIC_TEMPLATE

TOKENS = shaped_models.SHAPES["tiny"][1]  # 1,024 tokens in the tiny shape's tokenizer
# 10 items over 3 levels with codes 0..9 each: 30 SID tokens
SIDS = {f"i{k}": f"<a_{k}><b_{(3 * k) % 10}><c_{(7 * k) % 10}>" for k in range(10)}
SID_VOCAB = modeling.sid_vocabulary_for(SIDS.values())


def hf_cfg(folder) -> dict:
    return {"preset": "hf", "hf": {"path": str(folder)}}


def write_folder(tmp_path, padding_rows: int, tied: bool):
    """A tiny Qwen2.5-shaped folder and its pretrained model as loaded (before any SID token)."""
    folder = shaped_models.write_qwen25_folder(tmp_path / "base", "tiny", padding_rows=padding_rows,
                                               tie_word_embeddings=tied)
    original = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return folder, original


def real_mean(weight: torch.Tensor) -> torch.Tensor:
    """Mean of the pretrained real-token rows (ids below the tokenizer's length that the matrix has)."""
    return weight[: min(TOKENS, weight.shape[0])].mean(dim=0)


def assert_sid_rows_start_at_the_mean(model, tokenizer, original, tied: bool) -> None:
    """The checks every case shares (see the module docstring)."""
    sid_ids = modeling.sid_token_ids(tokenizer, SID_VOCAB)
    assert min(sid_ids) == TOKENS and len(tokenizer) == TOKENS + len(SID_VOCAB)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % modeling.ROW_MULTIPLE == 0 and rows >= len(tokenizer)
    assert model.config.vocab_size == rows
    pairs = [(model.get_input_embeddings().weight, original.get_input_embeddings().weight)]
    if tied:
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    else:
        pairs.append((model.get_output_embeddings().weight, original.get_output_embeddings().weight))
    for weight, before in pairs:
        real = min(TOKENS, before.shape[0])
        assert torch.equal(weight[:real], before[:real])  # pretrained real-token rows untouched
        torch.testing.assert_close(weight[sid_ids], real_mean(before).expand(len(sid_ids), -1))
        padding = before[TOKENS:]
        for row in weight[sid_ids]:
            assert not any(torch.equal(row, pad) for pad in padding), "a SID row kept a padding row"
    if not tied:  # each matrix has its own mean
        assert not torch.equal(model.get_input_embeddings().weight[sid_ids[0]],
                               model.get_output_embeddings().weight[sid_ids[0]])


# padding 64: more padding rows than SID tokens (all SID ids fall on padding rows); 8: fewer;
# -16: the pretrained matrix is smaller than its tokenizer
@pytest.mark.parametrize("padding_rows", [64, 8, -16])
@pytest.mark.parametrize("tied", [True, False])
def test_sid_rows_are_the_mean_of_the_real_rows(tmp_path, padding_rows, tied):
    folder, original = write_folder(tmp_path, padding_rows, tied)
    model, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB)
    assert_sid_rows_start_at_the_mean(model, tokenizer, original, tied)


def test_rows_beyond_the_tokenizer_are_not_left_as_padding(tmp_path):
    folder, original = write_folder(tmp_path, 64, tied=True)
    model, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == 1088  # 1,054 tokens padded to 64: the same rows, none dropped or added
    torch.testing.assert_close(weight[len(tokenizer):], real_mean(original.get_input_embeddings().weight)
                               .expand(weight.shape[0] - len(tokenizer), -1))


def test_a_tokenizer_built_before_gives_the_same_model(tmp_path):
    """A training run builds the tokenizer (with SID tokens) first and passes it in."""
    folder, original = write_folder(tmp_path, 64, tied=False)
    tokenizer = modeling.base_tokenizer(hf_cfg(folder))
    modeling.add_sid_tokens(tokenizer, SID_VOCAB)
    model, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB, tokenizer=tokenizer)
    assert_sid_rows_start_at_the_mean(model, tokenizer, original, tied=False)


def test_a_tokenizer_that_does_not_extend_the_base_is_refused(tmp_path):
    folder, _ = write_folder(tmp_path, 64, tied=True)
    other = shaped_models.qwen25_style_tokenizer(TOKENS, ["a different corpus, other merges"] * 3)
    with pytest.raises(modeling.ModelConfigError, match="does not extend the base model's"):
        modeling.build_model(hf_cfg(folder), [], SID_VOCAB, tokenizer=other)


def test_sid_tokens_already_in_the_base_keep_their_rows(tmp_path):
    """A base that has the SID tokens already (e.g. a trained folder) keeps them; only new ones move."""
    folder, _ = write_folder(tmp_path, 64, tied=True)
    first, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB)
    with torch.no_grad():
        first.get_input_embeddings().weight[TOKENS:].normal_()  # as if trained
    first.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    model, tok = modeling.build_model(hf_cfg(tmp_path / "trained"), [], SID_VOCAB + ["<d_0>"])
    weight, before = model.get_input_embeddings().weight, first.get_input_embeddings().weight
    assert torch.equal(weight[: len(tokenizer)], before[: len(tokenizer)])
    torch.testing.assert_close(weight[len(tokenizer)], before[: len(tokenizer)].mean(dim=0))


@pytest.mark.parametrize("tied", [True, False])
def test_lora_keeps_the_mean_rows_through_save_and_reload(tmp_path, tied):
    pytest.importorskip("peft")
    folder, original = write_folder(tmp_path, 64, tied)
    model, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB)
    sid_ids = modeling.sid_token_ids(tokenizer, SID_VOCAB)
    wrapped = modeling.apply_lora(model, {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}, sid_ids)
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    assert any("embed_tokens" in name and "trainable_tokens" in name for name in trainable)
    # an untied head's SID rows must train too: frozen at one shared mean they would score all SIDs alike
    assert any("lm_head" in name and "trainable_tokens" in name for name in trainable) == (not tied)
    ids = torch.tensor(sid_ids)
    with torch.no_grad():
        torch.testing.assert_close(wrapped.get_input_embeddings()(ids),
                                   real_mean(original.get_input_embeddings().weight).expand(len(ids), -1))
    meta = {"preset": "hf", "sid_map": SIDS}
    path = modeling.save_model_folder(wrapped, tokenizer, meta, tmp_path / "saved")
    loaded, tok, _ = modeling.load_model_folder(path)
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    assert_sid_rows_start_at_the_mean(loaded, tok, original, tied)


def test_a_saved_padded_model_recommends_only_catalogue_items(tmp_path):
    from singer_rec.recommend import SidRecommender

    folder, _ = write_folder(tmp_path, 64, tied=True)
    model, tokenizer = modeling.build_model(hf_cfg(folder), [], SID_VOCAB)
    with torch.no_grad():
        # distinct SID rows (they all start equal) and padding rows that would win unconstrained
        model.get_input_embeddings().weight[TOKENS:len(tokenizer)].normal_(generator=torch.Generator().manual_seed(0))
        model.get_input_embeddings().weight[len(tokenizer):] = 10 * model.get_input_embeddings().weight[:TOKENS].max()
    meta = {"preset": "hf", "sid_map": SIDS, "titles": {item: f"Item {item}" for item in SIDS},
            "templates": {"semantic": [DEFAULT_SEMANTIC_TEMPLATE]}, "train": {}}
    path = modeling.save_model_folder(model, tokenizer, meta, tmp_path / "padded")
    recommender = SidRecommender.from_folder(path)
    assert recommender.model.config.vocab_size == 1088 > len(recommender.tokenizer)
    items, scores = recommender.recommend([["i0", "i1"], ["i5"]], k=len(SIDS))
    for ranked, logps in zip(items, scores):
        assert sorted(ranked) == sorted(SIDS)  # every item once, nothing outside the catalogue
        assert logps == sorted(logps, reverse=True) and all(s < 0 for s in logps)


# --------------------------------------------------------------------------------------------
# the shaped folders themselves
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
def test_shaped_folder_has_zero_padding_rows_beyond_its_tokenizer(tmp_path, tied):
    folder, model = write_folder(tmp_path, 40, tied)
    assert model.config.vocab_size == TOKENS + 40 and model.config.tie_word_embeddings == tied
    tokenizer = modeling.base_tokenizer(hf_cfg(folder))
    assert len(tokenizer) == TOKENS
    assert (tokenizer.pad_token, tokenizer.eos_token) == (shaped_models.PAD_TOKEN, shaped_models.EOS_TOKEN)
    heads = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    for weight in heads:
        assert weight.shape[0] == TOKENS + 40
        assert not weight[TOKENS:].any()
        zero_real_rows = (weight[:TOKENS].abs().sum(dim=1) == 0).nonzero().flatten().tolist()
        assert zero_real_rows in ([], [tokenizer.pad_token_id])  # the architecture's init zeroes padding_idx
    assert (heads[0].data_ptr() == heads[1].data_ptr()) == tied


def test_the_paper_sized_tokenizer_has_qwen25s_token_count():
    tokenizer = shaped_models.qwen25_style_tokenizer(shaped_models.SHAPES["0.5b"][1])
    assert len(tokenizer) == 151_665
    # special tokens last, at Qwen2.5's ids
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 151_643
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 151_645
    text = "Recommend the next item: a deluxe widget, unseen wordsxyz"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
