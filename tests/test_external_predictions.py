"""`singer-score-predictions`: another system's ranked predictions (MiniOneRec's result JSON or a
table) mapped to items, aligned with our test split and scored against one of our models."""
import json
import math

import pandas as pd
import pytest

from singer_rec import external_predictions as ep
from singer_rec.external_predictions import AlignmentError

# four test rows; D and E share a SID (a collision the other system left unresolved)
TEST = pd.DataFrame({"user_id": ["u1", "u2", "u1", "u3"], "history": [["B"], ["A"], ["A", "B"], ["C"]],
                     "target": ["A", "B", "C", "D"], "timestamp": [1, 2, 3, 4]})
INDEX = {"A": ["<a_0>", "<b_0>"], "B": ["<a_0>", "<b_1>"], "C": ["<a_1>", "<b_0>"], "D": ["<a_1>", "<b_1>"],
         "E": ["<a_1>", "<b_1>"]}
RECORDS = [  # what MiniOneRec's evaluate.py writes: input, output (target SID + newline), predict (best first)
    {"input": "...", "output": "<a_0><b_0>\n", "predict": ["<a_0><b_0>", "<a_0><b_1>"]},                 # A at 1
    {"input": "...", "output": "<a_0><b_1>\n", "predict": ["<a_0><b_0>", "<a_9><b_9>", "<a_0><b_1>"]},  # B at 3 (a SID of no item)
    {"input": "...", "output": "<a_1><b_0>\n", "predict": ["<a_1><b_1>", "<a_1><b_0>"]},                 # [D, E, C]: C at 3
    {"input": "...", "output": "<a_1><b_1>\n", "predict": ["<a_0><b_0>"]},                               # D missed
]
OURS = pd.DataFrame({"user_id": ["u1", "u2", "u1"], "target": ["A", "B", "C"],  # the first 3 rows (evaluate.max_rows=3)
                     "ranked_items": [["B", "A"], ["B"], ["C", "A"]], "scores": [[-1.0, -2.0], [-1.0], [-1.0, -3.0]]})


@pytest.fixture
def files(tmp_path):
    test = tmp_path / "test_sequences.parquet"
    TEST.to_parquet(test)
    index = tmp_path / "Cat.index.json"
    index.write_text(json.dumps(INDEX))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RECORDS, indent=4))  # the layout MiniOneRec writes
    ours = tmp_path / "rl" / "test_predictions.parquet"
    ours.parent.mkdir()
    OURS.to_parquet(ours)
    return {"test": test, "index": index, "results": results, "ours": ours, "dir": tmp_path}


def _record_lines(path) -> list[int]:
    return [n for n, line in enumerate(path.read_text().splitlines(), 1) if line == "    {"]


def test_minionerec_results_scored_exactly(files):
    test = ep.read_test_split(files["test"])
    theirs = ep.read_minionerec_results(files["results"], test, ep.read_item_sids(files["index"]))
    assert theirs.ranked == {0: ["A", "B"], 1: ["A", None, "B"], 2: ["D", "E", "C"], 3: ["A"]}
    assert (theirs.unknown_sids, theirs.ambiguous_sids) == (1, 1)
    result = ep.score(test, theirs, ks=(1, 3))
    # ranks 1, 3, 3, miss
    assert result["external"] == {"HR@1": 0.25, "NDCG@1": 0.25, "HR@3": 0.75, "NDCG@3": 0.5, "n": 4}
    assert result["rows_scored"] == 4 and "ours" not in result


def test_against_our_model_on_the_shared_rows_with_paired_intervals(files):
    test = ep.read_test_split(files["test"])
    theirs = ep.read_minionerec_results(files["results"], test, ep.read_item_sids(files["index"]))
    ours = ep.read_our_predictions(files["ours"], test)
    result = ep.score(test, theirs, ours, ks=(1, 3), resamples=500, seed=1)
    assert result["rows_scored"] == 3 and result["test_rows"] == 4
    # rows 0-2: theirs ranks 1, 3, 3; ours 2, 1, 1
    assert result["external"]["HR@1"] == pytest.approx(1 / 3) and result["external"]["NDCG@3"] == pytest.approx(2 / 3)
    assert result["ours"]["HR@1"] == pytest.approx(2 / 3) and result["ours"]["HR@3"] == 1.0
    assert result["ours"]["NDCG@3"] == pytest.approx((1 / math.log2(3) + 2) / 3)
    diff = result["ours_minus_external"]
    assert diff["HR@3"] == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "rows_up": 0, "rows_down": 0, "n": 3}
    assert diff["HR@1"]["mean"] == pytest.approx(1 / 3) and (diff["HR@1"]["rows_up"], diff["HR@1"]["rows_down"]) == (2, 1)
    assert diff["HR@1"]["ci95_low"] <= diff["HR@1"]["mean"] <= diff["HR@1"]["ci95_high"]
    assert diff["NDCG@3"]["mean"] == pytest.approx((1 / math.log2(3) + 2) / 3 - 2 / 3)
    # seeded: the same intervals again
    assert ep.score(test, theirs, ours, ks=(1, 3), resamples=500, seed=1) == result


def test_the_command_prints_a_table_and_writes_json(files, capsys):
    out = files["dir"] / "comparison.json"
    code = ep.main(["--predictions", str(files["results"]), "--item-sids", str(files["index"]), "--test", str(files["test"]),
                    "--ours", str(files["ours"]), "--name", "MiniOneRec", "--ks", "1", "3", "--resamples", "200",
                    "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Test rows scored: 3 of 4" in printed
    assert "| metric | MiniOneRec | rl | rl − MiniOneRec | 95% CI | rows up / down |" in printed
    assert "| HR@3 | 1.0000 | 1.0000 | +0.0000 | [+0.0000, +0.0000] | 0 / 0 |" in printed
    saved = json.loads(out.read_text())
    assert saved["format"] == "minionerec" and saved["ours"]["HR@1"] == pytest.approx(2 / 3)


def test_env_option_finds_the_environments_files(files, tmp_path, monkeypatch):
    """--env takes test_sequences, item_sids (a versioned dataset: its latest version) and the model's
    predictions from the environment's data_root."""
    data_root = tmp_path / "data" / "custom"
    (data_root / "03_primary").mkdir(parents=True)
    TEST.to_parquet(data_root / "03_primary" / "test_sequences.parquet")
    version = data_root / "04_feature" / "item_sids.parquet" / "v1"
    version.mkdir(parents=True)
    pd.DataFrame({"item_id": list(INDEX), "sid": ["".join(t) for t in INDEX.values()]}).to_parquet(version / "item_sids.parquet")
    (data_root / "07_model_output" / "sft").mkdir(parents=True)
    OURS.to_parquet(data_root / "07_model_output" / "sft" / "test_predictions.parquet")
    monkeypatch.setattr(ep, "_env_paths", lambda env, conf: data_root)
    assert ep.main(["--predictions", str(files["results"]), "--env", "custom", "--ours", "sft", "--ks", "3",
                    "--resamples", "50"]) == 0


def test_a_table_of_item_ids_by_row_or_in_order(files):
    test = ep.read_test_split(files["test"])
    table = files["dir"] / "preds.csv"
    table.write_text("row,user_id,ranked_items\n3,u3,D A\n0,u1,A|B\n2,,B C C\n")
    aligned = ep.read_prediction_table(table, test)
    assert aligned.ranked == {3: ["D", "A"], 0: ["A", "B"], 2: ["B", "C"]}
    result = ep.score(test, aligned, ks=(1, 3))
    assert result["external"] == {"HR@1": 2 / 3, "NDCG@1": 2 / 3, "HR@3": 1.0, "NDCG@3": pytest.approx((2 + 1 / math.log2(3)) / 3), "n": 3}
    jsonl = files["dir"] / "preds.jsonl"
    jsonl.write_text('{"ranked_sids": ["<a_0><b_0>"]}\n{"ranked_sids": ["<a_1><b_1>", "<a_0><b_1>"], "target": "B"}\n')
    aligned = ep.read_prediction_table(jsonl, test, ep.read_item_sids(files["index"]))
    assert aligned.ranked == {0: ["A"], 1: ["D", "E", "B"]}


ALIGNMENT_ERRORS = [
    ("row,ranked_items\n0,A\n4,B\n", r"preds\.csv:3: field 'row': 4 is outside the test split \(rows 0-3\)"),
    ("row,ranked_items\n1,A\n1,B\n", r"preds\.csv:3: test row 1 is given twice \(first at .*preds\.csv:2\)"),
    ("user_id,ranked_items\nu1,A\nu9,B\n", r"preds\.csv:3: field 'user_id' is 'u9', but test row 1 \(user 'u2', target 'B'\) does not match"),
    ("target,ranked_items\nA,A\nC,B\n", r"preds\.csv:3: field 'target' is 'C', but test row 1"),
    ("row,ranked_items\nx,A\n", r"preds\.csv:2: field 'row' must be an integer index, got 'x'"),
    ("row,items\n0,A\n", r"preds\.csv:2: missing field 'ranked_items' \(or 'ranked_sids'\)"),
    ("ranked_items\nA\nB\nC\nD\nA\n", r"preds\.csv:6: more rows than the 4 test rows"),
    ("ranked_sids\n<a_0><b_0>\n", r"preds\.csv:2: field 'ranked_sids' needs an item_sids table"),
]


@pytest.mark.parametrize("text, message", ALIGNMENT_ERRORS)
def test_table_rows_that_do_not_align_are_named_by_line(files, text, message):
    table = files["dir"] / "preds.csv"
    table.write_text(text)
    with pytest.raises(AlignmentError, match=message):
        ep.read_prediction_table(table, ep.read_test_split(files["test"]))


def test_minionerec_records_that_do_not_align_are_named_by_line(files):
    test = ep.read_test_split(files["test"])
    sids = ep.read_item_sids(files["index"])
    swapped = [RECORDS[0], RECORDS[2], RECORDS[1]]
    files["results"].write_text(json.dumps(swapped, indent=4))
    line = _record_lines(files["results"])[1]
    with pytest.raises(AlignmentError, match=rf"results\.json:{line} \(record 1\): field 'output': target SID '<a_1><b_0>' is "
                                             r"item\(s\) \['C'\], but test row 1 \(user 'u2', target 'B'\) does not match"):
        ep.read_minionerec_results(files["results"], test, sids)
    files["results"].write_text(json.dumps([*RECORDS, RECORDS[0]], indent=4))
    line = _record_lines(files["results"])[4]
    with pytest.raises(AlignmentError, match=rf"results\.json:{line} \(record 4\): more records than the 4 test rows"):
        ep.read_minionerec_results(files["results"], test, sids)
    files["results"].write_text(json.dumps([RECORDS[0], {"output": "<a_7><b_7>", "predict": []}], indent=4))
    line = _record_lines(files["results"])[1]
    with pytest.raises(AlignmentError, match=rf"results\.json:{line} \(record 1\): field 'output': target SID '<a_7><b_7>' is not in the item_sids table"):
        ep.read_minionerec_results(files["results"], test, sids)
    files["results"].write_text(json.dumps([RECORDS[0], {"output": "<a_0><b_1>"}], indent=4))
    with pytest.raises(AlignmentError, match=r"\(record 1\): missing field 'predict'"):
        ep.read_minionerec_results(files["results"], test, sids)
    files["results"].write_text('[\n  {"output": "<a_0><b_0>", "predict": []},\n  {"output": \n]')
    with pytest.raises(AlignmentError, match=r"results\.json:4: malformed JSON"):
        ep.read_minionerec_results(files["results"], test, sids)


def test_our_predictions_must_be_the_test_rows_in_order(files, capsys):
    OURS.iloc[[1, 0, 2]].to_parquet(files["ours"])
    with pytest.raises(AlignmentError, match=r"test_predictions\.parquet: row 0 is user 'u2', target 'B', but test row 0 "):
        ep.read_our_predictions(files["ours"], ep.read_test_split(files["test"]))
    code = ep.main(["--predictions", str(files["results"]), "--item-sids", str(files["index"]), "--test", str(files["test"]),
                    "--ours", str(files["ours"])])
    assert code == 2 and "singer-score-predictions: " in capsys.readouterr().err


@pytest.mark.realdata
def test_minionerec_layout_on_the_real_test_split(shared_data, tmp_path):
    """Records built from MiniOneRec's own Office test CSV (its item_sid column, in its order) align
    with our test split of the `minionerec` source through its index.json, collisions included."""
    from singer_rec.data.sources import read_minionerec

    root = shared_data / "minionerec"
    _, _, given = read_minionerec(root, "Office_Products")
    test = given[given["split"] == "test"].reset_index(drop=True)
    csv = pd.read_csv(root / "test" / "Office_Products_5_2016-10-2018-11.csv", usecols=["item_sid"])
    records = [{"output": sid + "\n", "predict": [sid, "<a_0><b_0><c_0>"]} for sid in csv["item_sid"]]
    path = tmp_path / "office.json"
    path.write_text(json.dumps(records, indent=4))
    aligned = ep.read_minionerec_results(path, test.assign(target=test["target"].astype(str)),
                                         ep.read_item_sids(root / "index" / "Office_Products.index.json"))
    result = ep.score(test, aligned, ks=(10,))
    assert result["rows_scored"] == len(test) == 4866
    assert result["external"]["HR@10"] == 1.0  # the target's own SID comes first (with its collision partner, if any)
