"""catalog_update: the demo catalogue less a few items, a model folder over it, then the held-back items
through the project's catalog entries and a Kedro runner; new rows at the mean; bad input writes nothing."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT
from decoding.tiny_folder import SIDS, TINY_MODEL, build_tiny_folder
from singer_rec import modeling
from singer_rec.datasets.raw_files import RawFilesDataset
from singer_rec.pipelines.catalog_update import create_pipeline
from singer_rec.pipelines.catalog_update.datasets import read_new_items
from singer_rec.pipelines.embed.nodes import embed_items
from singer_rec.pipelines.ingest.nodes import ingest
from singer_rec.pipelines.sid.nodes import build_semantic_ids
from singer_rec.prompts import DEFAULT_SEMANTIC_TEMPLATE
from singer_rec.recommend import SidRecommender

N_NEW = 6
EMBED = {"encoder": "hashing", "dim": 64, "device": "cpu"}  # the demo's MiniLM works the same, slower


def _params(new_items_path: Path | None = None) -> tuple[dict, dict]:
    runtime = {"new_items_path": str(new_items_path)} if new_items_path else {}
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base",
                               runtime_params=runtime, merge_strategy={"parameters": "soft"})
    params = loader["parameters"]
    params["embed"] = {**params["embed"], **EMBED}
    return params, loader["catalog"]


def _versions(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's items: all but the last N_NEW get hashing embeddings, SIDs (3 x 8) and a tiny model folder;
    the last N_NEW are written as a new-items table."""
    root = tmp_path_factory.mktemp("demo")
    params, _ = _params()
    raw = RawFilesDataset(source="synthetic", root=str(root / "01_raw")).load()
    items = ingest(raw, params["seed"], params["ingest"])[0]
    old, new = items.iloc[:-N_NEW].reset_index(drop=True), items.iloc[-N_NEW:].reset_index(drop=True)
    embeddings = embed_items(old, params["embed"])
    item_sids, codebooks, _ = build_semantic_ids(old, embeddings, {"num_levels": 3, "codebook_size": 8}, params["seed"])
    vocab = modeling.sid_vocabulary_for(item_sids["sid"])
    model, tokenizer = modeling.build_model({**TINY_MODEL, "scratch": {**TINY_MODEL["scratch"], "tokenizer_vocab_size": 400}},
                                            old["title"].tolist() + [DEFAULT_SEMANTIC_TEMPLATE], vocab, seed=0)
    meta = {"preset": "scratch", "sid_map": dict(zip(item_sids["item_id"], item_sids["sid"])),
            "titles": dict(zip(old["item_id"], old["title"])), "templates": {"semantic": [DEFAULT_SEMANTIC_TEMPLATE]},
            "train": {}}
    folder = modeling.save_model_folder(model, tokenizer, meta, root / "built" / "sft_model")
    new_path = root / "new_items.parquet"
    new[["item_id", "title", "description", "brand", "categories"]].to_parquet(new_path)
    return {"old": old, "new": new, "embeddings": embeddings, "item_sids": item_sids, "codebooks": codebooks,
            "folder": folder, "new_path": new_path}


def _project(tmp_path: Path, demo: dict, monkeypatch, new_items_path: Path) -> tuple[DataCatalog, dict]:
    """The project's catalog (data_root data/demo, relative: under tmp_path) holding the demo's stage outputs."""
    monkeypatch.chdir(tmp_path)
    params, catalog_conf = _params(new_items_path)
    catalog = DataCatalog.from_config({k: v for k, v in catalog_conf.items() if not k.startswith("_")})  # an earlier run's
    catalog.save("items", demo["old"])
    catalog.save("item_sids", demo["item_sids"])
    catalog.save("item_embeddings", demo["embeddings"])
    catalog.save("sid_codebooks", demo["codebooks"])
    import shutil

    copy = tmp_path / "staged" / "sft_model"
    shutil.copytree(demo["folder"], copy)
    catalog.save("sft_model", copy)
    time.sleep(0.01)  # the update is a later run: another save version
    catalog = _fresh_catalog(tmp_path, new_items_path)
    for block in ("catalog_update", "embed"):
        catalog[f"params:{block}"] = MemoryDataset(params[block])
    return catalog, params


def _fresh_catalog(tmp_path: Path, new_items_path: Path) -> DataCatalog:
    """A new catalog over the same files (loads take the latest versions, as a later run would)."""
    _, catalog_conf = _params(new_items_path)
    return DataCatalog.from_config({k: v for k, v in catalog_conf.items() if not k.startswith("_")})


def test_new_items_join_the_catalogue_and_the_model(tmp_path, demo, monkeypatch):
    catalog, _ = _project(tmp_path, demo, monkeypatch, demo["new_path"])
    old_model = catalog.load("sft_model")
    SequentialRunner().run(create_pipeline(), catalog)

    after = _fresh_catalog(tmp_path, demo["new_path"])
    new_ids = demo["new"]["item_id"].tolist()
    items, sids = after.load("items"), after.load("item_sids")
    assert items["item_id"].tolist() == demo["old"]["item_id"].tolist() + new_ids
    # old items keep their SIDs exactly; every SID is distinct and none is a prefix of another (the trie builds)
    pd.testing.assert_frame_equal(sids.iloc[: len(demo["item_sids"])].reset_index(drop=True), demo["item_sids"])
    assert sids["item_id"].tolist()[-N_NEW:] == new_ids and sids["sid"].is_unique
    assert after.load("item_embeddings").shape == (len(items), EMBED["dim"])
    folder = after.load("sft_model")
    assert folder != old_model and len(_versions(tmp_path / "data/demo/06_models/sft_model")) == 2
    meta = modeling.read_meta(folder)
    modeling.validate_sid_map(meta["sid_map"], sids)
    assert {i: meta["titles"][i] for i in new_ids} == dict(zip(new_ids, demo["new"]["title"]))
    assert not (tmp_path / "data/demo/06_models/rl_model").exists()  # no rl_model: none written
    report = json.loads((tmp_path / "data/demo/08_reporting/catalog_update/report.json").read_text())
    assert report["n_new_items"] == N_NEW and set(report["levels"]) == {"level_0", "level_1", "level_2"}
    assert report["models"]["sft_model"]["new_items"] == N_NEW
    assert "# Catalog update" in (tmp_path / "data/demo/08_reporting/catalog_update/report.md").read_text()

    # constrained decoding reaches the new items: a beam as wide as the catalogue returns every item
    recommender = SidRecommender.from_folder(tmp_path / "data/demo/06_models/sft_model")
    assert set(new_ids) <= set(recommender.item_ids)
    history = demo["old"]["item_id"].tolist()[:3]
    ranked, _ = recommender.recommend([history], k=len(recommender.item_ids), batch_size=1)
    assert set(new_ids) <= set(ranked[0])

@pytest.mark.parametrize("problem, match", [
    ("duplicate", r"new_items\.csv row 1: field 'item_id' 'n1' repeats .*row 0"),
    ("known", r"new_items\.csv row 0: field 'item_id' .* already in the catalogue"),
    ("no_title", r"new_items\.csv row 1: field 'title' is missing"),
])
def test_bad_new_items_name_the_row_and_field_and_write_nothing(tmp_path, demo, monkeypatch, problem, match):
    rows = pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Widget one", "Widget two"]})
    if problem == "duplicate":
        rows.loc[1, "item_id"] = "n1"
    elif problem == "known":
        rows.loc[0, "item_id"] = demo["old"]["item_id"][0]
    else:
        rows.loc[1, "title"] = ""
    path = tmp_path / "new_items.csv"
    rows.to_csv(path, index=False)
    catalog, _ = _project(tmp_path, demo, monkeypatch, path)
    data = tmp_path / "data/demo"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match=match):
        SequentialRunner().run(create_pipeline(), catalog)
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == before


def test_new_sid_tokens_start_at_the_mean_of_their_level(tmp_path):
    source = build_tiny_folder(tmp_path / "tiny")
    # <d_2>: a suffix beyond the two the folder has; <c_3>: a level-2 code beyond its largest
    entry = modeling.add_items_to_model_folder(source, {"n1": "<a_2><b_2><c_0><d_2>", "n2": "<a_0><b_0><c_3>"},
                                               {"n1": "New one", "n2": "New two"}, tmp_path / "updated")
    assert entry["new_tokens"] == ["<c_3>", "<d_2>"]
    old_model, old_tok, _ = modeling.load_model_folder(source)
    model, tok, meta = modeling.load_model_folder(tmp_path / "updated")
    w_old, w = old_model.get_input_embeddings().weight, model.get_input_embeddings().weight
    rows = lambda tokens: tok.convert_tokens_to_ids(tokens)  # noqa: E731
    assert w.shape[0] == w_old.shape[0] + 2 and model.config.vocab_size == w.shape[0] == len(tok)
    torch.testing.assert_close(w[: w_old.shape[0]], w_old)  # every old row unchanged
    torch.testing.assert_close(w[rows(["<d_2>"])[0]], w[rows(["<d_0>", "<d_1>"])].double().mean(0).float())
    torch.testing.assert_close(w[rows(["<c_3>"])[0]], w[rows(["<c_0>", "<c_1>", "<c_2>"])].double().mean(0).float())
    assert model.get_output_embeddings().weight.data_ptr() == w.data_ptr()  # still tied
    assert meta["sid_map"] == {**SIDS, "n1": "<a_2><b_2><c_0><d_2>", "n2": "<a_0><b_0><c_3>"}
    assert meta["titles"]["n2"] == "New two" and meta["catalog_updates"][-1]["new_items"] == 2
    with pytest.raises(ValueError, match="already in the model's sid_map"):
        modeling.add_items_to_model_folder(source, {"i0": "<a_3><b_0><c_0>"}, {}, tmp_path / "again")


def test_untied_head_rows_get_their_own_mean(tmp_path):
    model, tokenizer = modeling.build_model(TINY_MODEL, ["a b c"] * 5, modeling.sid_vocabulary_for(["<a_0><b_1>"]), seed=0)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    added = modeling.add_sid_tokens_at_mean(model, tokenizer, ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"])
    assert added["added"] == ["<a_1>", "<b_2>"]
    head, emb = model.lm_head.weight, model.get_input_embeddings().weight
    b = tokenizer.convert_tokens_to_ids(["<b_0>", "<b_1>", "<b_2>"])
    torch.testing.assert_close(head[b[2]], head[b[:2]].double().mean(0).float())
    torch.testing.assert_close(emb[b[2]], emb[b[:2]].double().mean(0).float())
    assert not torch.allclose(head[b[2]], emb[b[2]])


def test_minionerec_item_json_and_csv_are_read(tmp_path):
    item_json = tmp_path / "item.json"
    item_json.write_text(json.dumps({"900": {"title": "Tape", "description": "['Strong', 'tape']", "brand": "3M"}}))
    frame = read_new_items(item_json, "minionerec")
    assert frame.loc[0, ["item_id", "title", "brand"]].tolist() == ["900", "Tape", "3M"]
    assert frame.loc[0, "where"].endswith("item '900'")
    item_json.write_text(json.dumps({"901": {"title": ""}}))
    with pytest.raises(ValueError, match="item.json: item '901': missing required field 'title'"):
        read_new_items(item_json, "minionerec")
    csv = tmp_path / "new.csv"
    pd.DataFrame({"item_id": ["x"], "title": ["Glue"], "categories": ["Home|Glue"]}).to_csv(csv, index=False)
    frame = read_new_items(csv, "synthetic")
    assert frame.loc[0, "categories"] == ["Home", "Glue"] and frame.loc[0, "description"] == ""
    with pytest.raises(Exception, match="missing column"):
        pd.DataFrame({"id": ["x"]}).to_csv(csv, index=False)
        read_new_items(csv, "synthetic")
