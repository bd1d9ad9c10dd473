"""Raw-source readers: parsing, cleaning, and an error naming file and line for each bad input."""
import gzip
import json

import numpy as np
import pytest

from singer_rec.data.sources import (
    DataFormatError,
    IngestReport,
    clean_text,
    iter_records,
    read_amazon_dump,
    read_minionerec_sequences,
)


def _review(user, asin, time):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": time, "overall": 5.0})


def _meta(asin, title, **extra):
    return json.dumps({"asin": asin, "title": title, "description": ["d"], "brand": "B", "category": ["C"], **extra})


def _write(path, lines, gz=False):
    data = "\n".join(lines).encode("utf-8") + b"\n" if isinstance(lines, list) else lines
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def _dump(tmp_path, reviews, meta, gz=True):
    suffix = ".json.gz" if gz else ".json"
    _write(tmp_path / f"Cat_5{suffix}", reviews, gz)
    _write(tmp_path / f"meta_Cat{suffix}", meta, gz)
    return tmp_path


GOOD_REVIEWS = [_review("u1", "a", 3), _review("u1", "b", 1), _review("u2", "a", 2)]
GOOD_META = [_meta("a", "Alpha"), _meta("b", "Beta")]


@pytest.mark.parametrize("gz", [True, False])
def test_reads_json_and_gz_dumps(tmp_path, gz):
    items, interactions = read_amazon_dump(_dump(tmp_path, GOOD_REVIEWS, GOOD_META, gz), "Cat")
    assert items.to_dict("records") == [
        {"item_id": "a", "title": "Alpha", "description": "d", "brand": "B", "categories": ["C"]},
        {"item_id": "b", "title": "Beta", "description": "d", "brand": "B", "categories": ["C"]},
    ]
    assert interactions.values.tolist() == [["u1", "b", 1], ["u1", "a", 3], ["u2", "a", 2]]
    assert interactions["timestamp"].dtype == np.int64


def test_python_literal_lines_and_cleaning(tmp_path):
    reviews = ["{'reviewerID': 'u1', 'asin': 'a', 'unixReviewTime': 7, 'verified': True}", _review("u1", "c", 8)]
    meta = [
        "{'asin': 'a', 'title': ' Lowe&#39;s  <b>Gift</b>\\n Card ', 'description': ['<p>Nice &amp; new</p>', 'x<br/>y'], 'brand': None, 'category': ['Gift Cards', 'Gift Cards', '']}",
        _meta("c", '<span class="a-size-medium a-color-secondary"'),  # no usable title: dropped
        _meta("unreviewed", "Never reviewed"),  # not in any review: not kept
    ]
    items, interactions = read_amazon_dump(_dump(tmp_path, reviews, meta), "Cat")
    assert items.to_dict("records") == [
        {"item_id": "a", "title": "Lowe's Gift Card", "description": "Nice & new x y", "brand": "", "categories": ["Gift Cards"]}
    ]
    assert interactions.values.tolist() == [["u1", "a", 7]]  # the review of c went with its item


def test_literal_eval_never_executes_code(tmp_path):
    reviews = [_review("u1", "a", 1), "__import__('os').system('touch pwned')"]
    with pytest.raises(DataFormatError, match=r"Cat_5\.json\.gz:2: malformed line"):
        read_amazon_dump(_dump(tmp_path, reviews, GOOD_META), "Cat")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("gz", [True, False])
def test_malformed_line_names_file_and_line(tmp_path, gz):
    reviews = [*GOOD_REVIEWS, '{"reviewerID": "u3", "asin": ']
    suffix = "json.gz" if gz else "json"
    with pytest.raises(DataFormatError, match=rf"Cat_5\.{suffix}:4: malformed line \(neither JSON nor a Python literal\)"):
        read_amazon_dump(_dump(tmp_path, reviews, GOOD_META, gz), "Cat")


def test_missing_required_field_names_line_and_field(tmp_path):
    reviews = [_review("u1", "a", 1), json.dumps({"reviewerID": "u2", "unixReviewTime": 2})]
    with pytest.raises(DataFormatError, match=r"Cat_5\.json\.gz:2: missing required field 'asin'"):
        read_amazon_dump(_dump(tmp_path, reviews, GOOD_META), "Cat")
    reviews = [_review("u1", "a", 1), _review("u1", "b", "yesterday")]
    with pytest.raises(DataFormatError, match=r"Cat_5\.json\.gz:2: field 'unixReviewTime' must be a non-negative integer"):
        read_amazon_dump(_dump(tmp_path, reviews, GOOD_META), "Cat")
    meta = [_meta("a", "Alpha"), json.dumps({"title": "no id"})]
    with pytest.raises(DataFormatError, match=r"meta_Cat\.json\.gz:2: missing required field 'asin'"):
        read_amazon_dump(_dump(tmp_path, GOOD_REVIEWS, meta), "Cat")


def test_non_utf8_byte_names_line(tmp_path):
    raw = (GOOD_REVIEWS[0] + "\n").encode() + b'{"reviewerID": "u\xff", "asin": "a", "unixReviewTime": 1}\n'
    _dump(tmp_path, GOOD_REVIEWS, GOOD_META)
    _write(tmp_path / "Cat_5.json.gz", raw, gz=True)
    with pytest.raises(DataFormatError, match=r"Cat_5\.json\.gz:2: not valid UTF-8 \(byte 0xff at column 18\)"):
        read_amazon_dump(tmp_path, "Cat")


def test_empty_missing_and_truncated_files(tmp_path):
    _dump(tmp_path, GOOD_REVIEWS, GOOD_META)
    _write(tmp_path / "meta_Cat.json.gz", b"\n\n", gz=True)
    with pytest.raises(DataFormatError, match=r"meta_Cat\.json\.gz: empty file"):
        read_amazon_dump(tmp_path, "Cat")
    (tmp_path / "meta_Cat.json.gz").unlink()
    with pytest.raises(DataFormatError, match=r"none of the files meta_Cat\.json\.gz, meta_Cat\.json.* exists"):
        read_amazon_dump(tmp_path, "Cat")
    with pytest.raises(DataFormatError, match=r"nothing\.json: file not found"):
        list(iter_records(tmp_path / "nothing.json", IngestReport()))
    whole = gzip.compress(("\n".join(GOOD_REVIEWS * 50) + "\n").encode())
    (tmp_path / "cut.json.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.json\.gz:\d+: cannot read the file"):
        list(iter_records(tmp_path / "cut.json.gz", IngestReport()))


def test_duplicate_item_ids(tmp_path):
    same = [_meta("a", "Alpha"), _meta("b", "Beta"), _meta("a", "Alpha")]
    items, _ = read_amazon_dump(_dump(tmp_path, GOOD_REVIEWS, same), "Cat")
    assert items["item_id"].tolist() == ["a", "b"]
    conflicting = [_meta("a", "Alpha"), _meta("b", "Beta"), _meta("a", "Alpha 2")]
    with pytest.raises(DataFormatError, match=r"meta_Cat\.json\.gz:3: duplicate item id 'a' with conflicting field 'title' \(first seen at .*meta_Cat\.json\.gz:1\)"):
        read_amazon_dump(_dump(tmp_path, GOOD_REVIEWS, conflicting), "Cat")


def test_skip_bad_lines_counts_and_keeps_the_good_ones(tmp_path, caplog):
    reviews = [_review("u1", "a", 1), "not json", json.dumps({"asin": "a"}), _review("u2", "b", 2)]
    meta = [_meta("a", "Alpha"), _meta("b", "Beta"), _meta("a", "Other")]
    root = _dump(tmp_path, reviews, meta)
    with caplog.at_level("INFO", logger="singer_rec.data.sources"):
        items, interactions = read_amazon_dump(root, "Cat", skip_bad_lines=True)
    assert interactions.values.tolist() == [["u1", "a", 1], ["u2", "b", 2]]
    assert items["title"].tolist() == ["Alpha", "Beta"]  # the first copy of a is kept
    assert "3 bad lines skipped" in caplog.text
    assert "Cat_5.json.gz:2: malformed line" in caplog.text


def test_amazon2023_layout(tmp_path):
    reviews = [json.dumps({"user_id": "U", "asin": "a1", "parent_asin": "P", "timestamp": 1588687728923})]
    meta = [json.dumps({"parent_asin": "P", "title": "Pen", "description": [], "store": "S", "categories": []})]
    _write(tmp_path / "Cat.jsonl", reviews)
    _write(tmp_path / "meta_Cat.jsonl", meta)
    items, interactions = read_amazon_dump(tmp_path, "Cat", version="amazon2023")
    assert interactions.values.tolist() == [["U", "P", 1588687728]]
    assert items.to_dict("records") == [{"item_id": "P", "title": "Pen", "description": "", "brand": "S", "categories": []}]


def test_minionerec_csv_errors_name_row_and_field(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_text('user_id,history_item_id,item_id\nA1,"[1, 2]",3\nA2,"[1, oops]",2\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"valid\.csv:3: field 'history_item_id' is not a list"):
        read_minionerec_sequences(path, {"1", "2", "3"})
    path.write_text('user_id,history_item_id,item_id\nA1,"[1, 2]",9\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"valid\.csv:2: item id '9' is not in item.json"):
        read_minionerec_sequences(path, {"1", "2", "3"})


def test_clean_text():
    assert clean_text(["<div>A&amp;B</div>", None, "  c  "]) == "A&B c"
    assert clean_text("Industrial &amp; Scientific\" />") == "Industrial & Scientific"
    assert clean_text("&amp;#39;quoted&amp;#39;") == "'quoted'"
    assert clean_text(12) == ""


def test_byte_order_mark_and_blank_lines_are_ignored(tmp_path):
    raw = b"\xef\xbb\xbf" + (GOOD_REVIEWS[0] + "\n\n   \n" + GOOD_REVIEWS[1] + "\n").encode()
    _write(tmp_path / "r.json", raw)
    records = list(iter_records(tmp_path / "r.json", IngestReport()))
    assert [(n, r["asin"]) for n, r in records] == [(1, "a"), (4, "b")]


@pytest.mark.realdata
def test_real_magazine_dump_drops_broken_titles(shared_data, caplog):
    """meta_Magazine_Subscriptions has '<span class=...' instead of almost every title."""
    with caplog.at_level("INFO", logger="singer_rec.data.sources"):
        items, interactions = read_amazon_dump(shared_data / "raw", "Magazine_Subscriptions")
    assert sorted(items["title"]) == ["Gourmet (1-year)", "SmartMoney (1-year)", "Woman's Day"]
    assert set(interactions["item_id"]) == set(items["item_id"])
    assert "148 items dropped without a usable title" in caplog.text
    assert "98 duplicate item records merged" in caplog.text


@pytest.mark.realdata
def test_real_dump_without_meta_is_named(shared_data):
    with pytest.raises(DataFormatError, match=r"raw: none of the files meta_All_Beauty\.json\.gz"):
        read_amazon_dump(shared_data / "raw", "All_Beauty")
