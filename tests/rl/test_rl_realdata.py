"""The RL step on the paper's real item dictionary: Industrial_and_Scientific's 3,686 SIDs
(MiniOneRec index; its colliding SIDs keep one item each) and the first rows of its test split, with a tiny untrained model."""
import ast
import copy
import json

import pandas as pd
import pytest
import torch

from singer_rec.modeling import add_sid_tokens, sid_vocabulary_for, train_scratch_tokenizer
from singer_rec.prompts import render_for_model, semantic_prompt
from singer_rec.rl.rewards import match_depth
from singer_rec.training import rl as rlt

pytestmark = pytest.mark.realdata
INDUSTRIAL = "Industrial_and_Scientific"


def _world(shared_data):
    root = shared_data / "minionerec"
    index = json.loads((root / "index" / f"{INDUSTRIAL}.index.json").read_text())
    sid_map = {}
    for item, tokens in index.items():  # MiniOneRec's index has SID collisions: keep the first item of each
        sid_map.setdefault("".join(tokens), item)
    sid_map = {item: sid for sid, item in sid_map.items()}
    test = pd.read_csv(root / "test" / f"{INDUSTRIAL}_5_2016-10-2018-11.csv", nrows=8)
    prompts = [semantic_prompt(ast.literal_eval(h)) for h in test["history_item_sid"]]
    frame = pd.DataFrame({"task": "semantic", "prompt": prompts, "answer": test["item_sid"].tolist()})
    tokenizer = train_scratch_tokenizer(prompts + [render_for_model("")], 400)
    add_sid_tokens(tokenizer, sid_vocabulary_for(sid_map.values()))
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id)).eval()
    return model, tokenizer, {"sid_map": sid_map, "titles": {}}, frame


def test_two_rl_steps_over_the_industrial_dictionary(shared_data):
    model, tokenizer, meta, frame = _world(shared_data)
    settings = rlt.validate_settings(rlt.RLSettings(alignment="sft", batch_size=8, max_steps=2, probe_prompts=8,
                                                    micro_batch_size=128), num_items=len(meta["sid_map"]))
    sid_dict, _, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), need_titles=False)
    assert len(sid_dict.sequences) == len(meta["sid_map"]) > 3000 and {len(s) for s in sid_dict.sequences} == {3}
    examples = rlt.build_examples(frame, tokenizer, sid_dict, None, settings)
    # step 1 of T = 2: hard samples get floor((1 - 1/2) * 3) = 1 guide token
    groups = rlt.rollout(model, examples, sid_dict, None, settings, 1, 2, tokenizer.pad_token_id)
    for example, group in zip(examples, groups):
        assert group.hard  # an untrained model does not find 1 item in 3,686 with 16 beams
        assert group.guide == 1 and group.prompt_ids[-1] == example.target[0]
        assert len(group.candidates) == 16 and len(set(group.candidates)) == 16
        assert all(c[0] == example.target[0] for c in group.candidates)  # every continuation keeps the guide
        assert group.rewards == [1 - 0.5 ** match_depth(c, example.target) for c in group.candidates]
        assert min(group.rewards) >= 0.5  # the forced first level already matches
    result = rlt.train_grpo(model, copy.deepcopy(model), tokenizer, examples, sid_dict, None, settings, progress=False)
    assert [h["guide_length"] for h in result["history"]] == [1.0, 0.0]
    assert all(h["hard_fraction"] == 1.0 for h in result["history"])


def test_colliding_sids_are_named(shared_data):
    index = json.loads((shared_data / "minionerec" / "index" / f"{INDUSTRIAL}.index.json").read_text())
    sids = ["".join(tokens) for tokens in index.values()]
    tokenizer = train_scratch_tokenizer(["x"], 300)
    add_sid_tokens(tokenizer, sid_vocabulary_for(sids))
    with pytest.raises(ValueError, match=r"model sid_map: items '\d+' and '\d+' share the SID <a_"):
        rlt.build_dictionaries(tokenizer, {"sid_map": dict(zip(index, sids))}, len(tokenizer), need_titles=False)
