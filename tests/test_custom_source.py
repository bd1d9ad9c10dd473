"""The `custom` source (your own items + interactions as CSV, Parquet or JSON Lines), the data-source
registry, the `custom` environment template and `sid.codebook_size: null` (auto)."""
import gzip
import json

import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT
from singer_rec.data import registry
from singer_rec.datasets.raw_files import RawFilesDataset
from singer_rec.data.source_custom import read_custom
from singer_rec.data.sources import DataFormatError, empty_given_sequences
from singer_rec.datasets.parquet import ListParquetDataset
from singer_rec.pipelines.ingest import create_pipeline as ingest_pipeline
from singer_rec.pipelines.sid.nodes import auto_codebook_size, build_semantic_ids
from singer_rec.settings import CONFIG_LOADER_ARGS

EXAMPLE = PROJECT_ROOT / "tests" / "data" / "custom_example"
ITEMS_CSV = "item_id,title,description,brand,categories\nA,Alpha lamp,bright,Acme,Home|Lights\nB,Beta desk,,,\nC,Gamma pen,blue ink,Inko,Office\n"
INTERACTIONS_CSV = "user_id,item_id,timestamp,rating\nu1,A,10,5\nu1,B,20,\nu2,C,15,3\nu2,A,30,4\n"


def _write(folder, items=ITEMS_CSV, interactions=INTERACTIONS_CSV, items_name="items.csv",
           interactions_name="interactions.csv"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((items_name, items), (interactions_name, interactions)):
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as handle:
                handle.write(text)
        else:
            path.write_text(text, encoding="utf-8")
    return folder / items_name, folder / interactions_name


# --------------------------------------------------------------------------- reading


def test_small_csv_catalogue_is_read_and_cleaned(tmp_path):
    items, interactions = read_custom(*_write(tmp_path))
    assert items.to_dict("records") == [
        {"item_id": "A", "title": "Alpha lamp", "description": "bright", "brand": "Acme", "categories": ["Home", "Lights"]},
        {"item_id": "B", "title": "Beta desk", "description": "", "brand": "", "categories": []},
        {"item_id": "C", "title": "Gamma pen", "description": "blue ink", "brand": "Inko", "categories": ["Office"]},
    ]
    assert interactions.values.tolist() == [["u1", "A", 10], ["u1", "B", 20], ["u2", "C", 15], ["u2", "A", 30]]
    assert interactions["timestamp"].dtype == np.int64


def test_the_example_reads_the_same_from_csv_jsonl_parquet_and_gzip(tmp_path):
    items, interactions = read_custom(EXAMPLE / "items.csv", EXAMPLE / "interactions.csv")
    assert len(items) == 36 and len(interactions) == 337 and interactions["user_id"].nunique() == 48
    jsonl = read_custom(EXAMPLE / "items.jsonl", EXAMPLE / "interactions.jsonl")
    pd.testing.assert_frame_equal(jsonl[0], items)
    pd.testing.assert_frame_equal(jsonl[1], interactions)
    # Parquet: a list column of categories and integer timestamps, as a user's pandas would write them
    pd.read_json(EXAMPLE / "items.jsonl", lines=True).to_parquet(tmp_path / "items.parquet")
    events = pd.read_json(EXAMPLE / "interactions.jsonl", lines=True, dtype=False)
    events.to_parquet(tmp_path / "interactions.parquet")
    parquet = read_custom(tmp_path / "items.parquet", tmp_path / "interactions.parquet")
    pd.testing.assert_frame_equal(parquet[0], items)
    pd.testing.assert_frame_equal(parquet[1], interactions)
    # a typed timestamp column (what pandas writes for datetimes) counts in seconds, naive = UTC
    events.assign(timestamp=pd.to_datetime(events["timestamp"], unit="s")).to_parquet(tmp_path / "dated.parquet")
    pd.testing.assert_frame_equal(read_custom(tmp_path / "items.parquet", tmp_path / "dated.parquet")[1], interactions)
    with gzip.open(tmp_path / "interactions.csv.gz", "wb") as handle:
        handle.write((EXAMPLE / "interactions.csv").read_bytes())
    pd.testing.assert_frame_equal(read_custom(EXAMPLE / "items.csv", tmp_path / "interactions.csv.gz")[1], interactions)


def test_options_min_rating_and_milliseconds(tmp_path):
    items_path, interactions_path = _write(tmp_path, interactions="user_id,item_id,timestamp,rating\nu1,A,10000,5\nu1,B,20000,2\nu2,C,15999,3\n")
    _, interactions = read_custom(items_path, interactions_path, timestamp_unit="milliseconds", min_rating=3)
    assert interactions.values.tolist() == [["u1", "A", 10], ["u2", "C", 15]]
    _write(tmp_path, interactions="user_id,item_id,timestamp,rating\nu1,A,10,5\nu1,B,20,\n")
    with pytest.raises(DataFormatError, match=r"interactions\.csv:3: missing field 'rating' \(min_rating is set\)"):
        read_custom(items_path, interactions_path, min_rating=3)
    with pytest.raises(ValueError, match=r"timestamp_unit must be one of \['seconds', 'milliseconds'\], got 'days'"):
        read_custom(items_path, interactions_path, timestamp_unit="days")


BAD_ITEMS = [
    ("item_id,title\nA,Alpha\n,Beta\n", r"items\.csv:3: missing required field 'item_id'"),
    ("item_id,title\nA,Alpha\nB,Beta\nA,Alpha again\n", r"items\.csv:4: duplicate item id 'A' \(first seen at .*items\.csv:2\)"),
    ("item_id,title\nA,Alpha\nB,<br/> !!\n", r"items\.csv:3: field 'title' has no letter or digit"),
    ("item_id,name\nA,Alpha\n", r"items\.csv:1: missing required column\(s\) \['title'\]"),
    ("item_id,title\nA,Alpha,extra\n", r"items\.csv:2: 3 fields, but the header has 2"),
    ("item_id,title\n", r"items\.csv: empty file \(no rows\)"),
    ("", r"items\.csv: empty file \(no header line\)"),
    (b"item_id,title\nA,Alpha\nB,B\xffta\n", r"items\.csv:3: not valid UTF-8"),
]


@pytest.mark.parametrize("items, message", BAD_ITEMS)
def test_bad_item_rows_name_file_line_and_field(tmp_path, items, message):
    with pytest.raises(DataFormatError, match=message):
        read_custom(*_write(tmp_path, items=items, interactions="user_id,item_id,timestamp\nu,A,1\n"))


BAD_INTERACTIONS = [
    ("user_id,item_id,timestamp\nu1,A,10\nu1,B,yesterday\n", r"interactions\.csv:3: field 'timestamp' must be a non-negative integer time, got 'yesterday'"),
    ("user_id,item_id,timestamp\nu1,A,10\nu1,B,-5\n", r"interactions\.csv:3: field 'timestamp' must be a non-negative integer time, got '-5'"),
    ("user_id,item_id,timestamp\nu1,A,10\nu1,ZZ,11\n", r"interactions\.csv:3: field 'item_id': item 'ZZ' is not in items\.csv"),
    ("user_id,item_id,timestamp\nu1,A,10\n,B,11\n", r"interactions\.csv:3: missing required field 'user_id'"),
    ("user_id,item_id,timestamp\nu1,A,\n", r"interactions\.csv:2: missing required field 'timestamp'"),
    ("user_id,item_id,timestamp,rating\nu1,A,10,five\n", r"interactions\.csv:2: field 'rating' must be a number, got 'five'"),
    ("user_id,item_id\nu1,A\n", r"interactions\.csv:1: missing required column\(s\) \['timestamp'\]"),
]


@pytest.mark.parametrize("interactions, message", BAD_INTERACTIONS)
def test_bad_interaction_rows_name_file_line_and_field(tmp_path, interactions, message):
    with pytest.raises(DataFormatError, match=message):
        read_custom(*_write(tmp_path, interactions=interactions))


def test_jsonl_and_parquet_errors_name_line_or_row(tmp_path):
    items = '{"item_id": "A", "title": "Alpha"}\n{"item_id": "B", "title": "Beta"}\n'
    interactions = '{"user_id": "u1", "item_id": "A", "timestamp": 1}\n{"user_id": "u1", "item_id": "B", "timestamp": "noon"}\n'
    paths = _write(tmp_path, items, interactions, "items.jsonl", "interactions.jsonl")
    with pytest.raises(DataFormatError, match=r"interactions\.jsonl:2: field 'timestamp' must be a non-negative integer time, got 'noon'"):
        read_custom(*paths)
    _write(tmp_path, items, '{"user_id": "u1", "item_id": "A", "timestamp": 1}\n{"user_id": "u1", "item_id": \n',
           "items.jsonl", "interactions.jsonl")
    with pytest.raises(DataFormatError, match=r"interactions\.jsonl:2: malformed line"):
        read_custom(*paths)
    _write(tmp_path, items, '{"user_id": "u1", "item_id": "Q", "timestamp": 1}\n', "items.jsonl", "interactions.jsonl.gz")
    with pytest.raises(DataFormatError, match=r"interactions\.jsonl\.gz:1: field 'item_id': item 'Q' is not in items\.jsonl"):
        read_custom(tmp_path / "items.jsonl", tmp_path / "interactions.jsonl.gz")
    pd.DataFrame({"user_id": ["u1", None], "item_id": ["A", "B"], "timestamp": [1, 2]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(DataFormatError, match=r"i\.parquet: row 2: missing required field 'user_id'"):
        read_custom(tmp_path / "items.jsonl", tmp_path / "i.parquet")
    (tmp_path / "items.xlsx").write_text("x")
    with pytest.raises(DataFormatError, match=r"items\.xlsx: unsupported file type; use one of \.csv"):
        read_custom(tmp_path / "items.xlsx", tmp_path / "i.parquet")
    with pytest.raises(DataFormatError, match=r"nothing\.csv: file not found"):
        read_custom(tmp_path / "nothing.csv", tmp_path / "i.parquet")


def test_skip_bad_lines_keeps_the_good_rows(tmp_path, caplog):
    items = "item_id,title\nA,Alpha\nA,Alpha twice\nB,Beta\n,no id\n"
    interactions = "user_id,item_id,timestamp\nu1,A,1\nu1,A,1\nu1,ZZ,2\nu2,B,x\nu2,B,3\n"
    with caplog.at_level("INFO", logger="singer_rec.data.sources"):
        items, interactions = read_custom(*_write(tmp_path, items, interactions), skip_bad_lines=True)
    assert items["title"].tolist() == ["Alpha", "Beta"]  # the first copy of A
    assert interactions.values.tolist() == [["u1", "A", 1], ["u2", "B", 3]]
    assert "4 bad lines skipped" in caplog.text and "1 duplicate interactions dropped" in caplog.text
    assert "items.csv:3: duplicate item id 'A'" in caplog.text


def test_items_nobody_interacted_with_are_dropped(tmp_path):
    items, _ = read_custom(*_write(tmp_path, interactions="user_id,item_id,timestamp\nu1,C,1\nu1,A,2\n"))
    assert items["item_id"].tolist() == ["A", "C"]


# --------------------------------------------------------------------------- registry and catalog


def test_registry_knows_every_source():
    assert registry.source_names() == ["amazon2018", "amazon2023", "custom", "minionerec", "synthetic"]
    custom = registry.get_source("custom")
    assert custom.file_keys == ("items", "interactions") and not custom.needs_dataset
    assert registry.get_source("amazon2018").needs_dataset
    with pytest.raises(KeyError, match="unknown data source 'nope'"):
        registry.get_source("nope")
    with pytest.raises(DatasetError, match=r"source must be one of \['amazon2018', 'amazon2023', 'custom', 'minionerec', 'synthetic'\]"):
        RawFilesDataset(source="nope").load()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_source("custom")(lambda request: None)


def test_a_new_source_is_one_registration(tmp_path):
    """What a new source needs: one decorated function (a module of its own in practice); the raw
    dataset and the ingest node find it by name."""
    items = pd.DataFrame({"item_id": ["x"], "title": ["X"], "description": [""], "brand": [""], "categories": [[]]})

    def locate(root, dataset, files, options):
        return {"dump": root / files.get("dump", "dump.txt")}

    @registry.register_source("toy", locate=locate, file_keys=("dump",), options={"scale": 1})
    def read_toy(request):
        scale = request.options["scale"]
        interactions = pd.DataFrame({"user_id": ["u"], "item_id": ["x"], "timestamp": np.array([scale], dtype=np.int64)})
        return registry.SourceTables(items, interactions, empty_given_sequences())

    try:
        raw = RawFilesDataset(source="toy", root=str(tmp_path), files={"dump": "d.txt"}, options={"scale": 7}).load()
        assert raw.files == {"dump": tmp_path / "d.txt"} and raw.options == {"scale": 7}
        catalog = DataCatalog({"params:seed": MemoryDataset(0), "params:ingest": MemoryDataset({})})
        catalog["raw_files"] = MemoryDataset(raw, copy_mode="assign")
        for name in ("items", "interactions", "given_sequences"):
            catalog[name] = MemoryDataset(copy_mode="assign")
        SequentialRunner().run(ingest_pipeline(), catalog)
        assert catalog["interactions"].load()["timestamp"].tolist() == [7]
        with pytest.raises(DatasetError, match=r"unknown option\(s\) \['size'\] for source 'toy'; allowed: \['scale'\]"):
            RawFilesDataset(source="toy", root=str(tmp_path), options={"size": 1}).load()
        with pytest.raises(DatasetError, match=r"source 'toy' takes \['dump'\], got \['items'\]"):
            RawFilesDataset(source="toy", root=str(tmp_path), files={"items": "a.csv"}).load()
    finally:
        registry._REGISTRY.pop("toy", None)


def _custom_catalog_entry(runtime_params=None) -> dict:
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env="custom", runtime_params=runtime_params, **CONFIG_LOADER_ARGS)
    return {k: v for k, v in loader["catalog"]["raw_files"].items() if k != "type"}


def test_the_custom_environment_template_points_at_two_files():
    entry = _custom_catalog_entry({"raw_root": str(EXAMPLE)})
    assert entry == {"source": "custom", "dataset": "my_catalogue", "root": str(EXAMPLE),
                     "files": {"items": "items.csv", "interactions": "interactions.csv"},
                     "options": {"timestamp_unit": "seconds", "min_rating": None}}
    raw = RawFilesDataset(**entry).load()
    assert raw.files == {"items": EXAMPLE / "items.csv", "interactions": EXAMPLE / "interactions.csv"}
    entry = _custom_catalog_entry({"raw_root": str(EXAMPLE), "items_file": "items.jsonl", "interactions_file": "interactions.jsonl"})
    assert RawFilesDataset(**entry).load().files["items"] == EXAMPLE / "items.jsonl"
    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env="custom", **CONFIG_LOADER_ARGS)["parameters"]
    assert params["sid"]["codebook_size"] is None
    # every key of the template is commented
    for line in (PROJECT_ROOT / "conf" / "custom" / "globals.yml").read_text().splitlines():
        if line and not line.startswith("#"):
            key = line.split(":")[0]
            assert "#" in line or key in ("items_file", "interactions_file"), f"uncommented key: {line}"


def test_files_default_to_items_and_interactions_under_raw_root(tmp_path):
    _write(tmp_path, items_name="items.jsonl", items='{"item_id": "A", "title": "Alpha"}\n')
    raw = RawFilesDataset(source="custom", root=str(tmp_path)).load()
    assert raw.files == {"items": tmp_path / "items.jsonl", "interactions": tmp_path / "interactions.csv"}
    with pytest.raises(DatasetError, match=r"empty: none of the files items\.csv, items\.csv\.gz, items\.parquet"):
        RawFilesDataset(source="custom", root=str(tmp_path / "empty")).load()


def test_bad_custom_input_leaves_no_output(tmp_path):
    raw = tmp_path / "raw"
    _write(raw, interactions="user_id,item_id,timestamp\nu1,A,10\nu1,B,10:30\n")
    out = tmp_path / "out"
    catalog = DataCatalog({"params:seed": MemoryDataset(0), "params:ingest": MemoryDataset({"skip_bad_lines": False})})
    catalog["raw_files"] = RawFilesDataset(source="custom", root=str(raw))
    for name in ("items", "interactions", "given_sequences"):
        catalog[name] = ListParquetDataset(filepath=str(out / f"{name}.parquet"))
    with pytest.raises(DataFormatError, match=r"interactions\.csv:3: field 'timestamp' must be a non-negative integer time, got '10:30'"):
        SequentialRunner().run(ingest_pipeline(), catalog)
    assert not out.exists()


# --------------------------------------------------------------------------- codebook size: auto


@pytest.mark.parametrize("n, levels, k", [
    (2, 3, 2), (36, 3, 4), (40, 3, 4), (148, 3, 9), (238, 3, 14), (3686, 3, 230), (100_000, 3, 256), (9, 1, 9), (64, 2, 8),
])
def test_auto_codebook_size_rule(n, levels, k):
    got, reason = auto_codebook_size(n, levels)
    assert got == k
    assert reason.startswith(f"auto: K = min(256, n, max(r, n // 16)) with n = {n} items")


def test_sid_report_states_the_codebook_size_and_why():
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(40)]})
    embeddings = rng.normal(size=(40, 8)).astype(np.float32)
    table, codebooks, report = build_semantic_ids(items, embeddings, {"num_levels": 3, "codebook_size": None}, seed=0)
    assert report["codebook_size"] == 4 and codebooks.shape[1] == 4 and table["sid"].is_unique
    assert report["codebook_size_rule"] == ("auto: K = min(256, n, max(r, n // 16)) with n = 40 items, r = 4 "
                                            "(the smallest K with K^3 >= n), n // 16 = 2")
    _, _, report = build_semantic_ids(items, embeddings, {"num_levels": 2, "codebook_size": 5}, seed=0)
    assert report["codebook_size"] == 5 and report["codebook_size_rule"] == "set: sid.codebook_size"
    with pytest.raises(ValueError, match=r"at least 2 are needed"):
        auto_codebook_size(1, 3)


def test_example_writer_reproduces_the_committed_files(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_example", EXAMPLE / "make_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    for name in ("items.csv", "interactions.csv", "items.jsonl", "interactions.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name
    assert json.loads((EXAMPLE / "items.jsonl").read_text().splitlines()[4]).get("description") is None
