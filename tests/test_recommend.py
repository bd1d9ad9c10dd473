"""singer-recommend: the console script on a versioned model folder; ids and titles; clear errors."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from decoding.tiny_folder import SIDS, TITLES, build_tiny_folder, exhaustive_ranking
from singer_rec.recommend import SidRecommender, main, resolve_model_folder


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """A Kedro versioned dataset folder with two versions; the later one must be picked."""
    root = tmp_path_factory.mktemp("models") / "sft_model"
    build_tiny_folder(root / "2026-01-01T00.00.00.000Z" / "sft_model")
    latest = build_tiny_folder(root / "2026-02-01T00.00.00.000Z" / "sft_model")
    return root, latest


def test_resolve_picks_latest_version(versioned, tmp_path):
    root, latest = versioned
    assert resolve_model_folder(root) == latest
    assert resolve_model_folder(latest) == latest
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        resolve_model_folder(tmp_path)


def test_prints_exhaustive_top_k_with_titles(versioned, capsys):
    root, latest = versioned
    history = ["i0", "i1"]
    expected, scores = exhaustive_ranking(latest, history)
    assert main(["--model", str(root), "--history", *history, "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "log-prob"]
    assert len(lines) == 5
    for rank, (line, item) in enumerate(zip(lines[1:], expected[:4]), start=1):
        fields = line.split()
        assert fields[:2] == [str(rank), item]
        assert float(fields[2]) == pytest.approx(scores[item], abs=1e-3)
        assert fields[3] == SIDS[item]
        assert " ".join(fields[4:]) == TITLES[item]


def one_error_line(capsys) -> str:
    """stderr of a failed run: exactly one line, the command's own, and no traceback."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("singer-recommend: "), captured.err
    assert captured.out == ""
    return lines[0][len("singer-recommend: "):]


def test_titles_and_ids_resolve_and_unknowns_are_named(versioned, capsys):
    root, latest = versioned
    recommender = SidRecommender.from_folder(latest)
    assert recommender.resolve_items(["i3", "Widget number 4"]) == ["i3", "i4"]
    assert recommender.resolve_items(["Widget number 3"], titles_only=True) == ["i3"]
    assert main(["--model", str(root), "--history", "i0", "no-such-item", "Widget number 10"]) == 2
    assert one_error_line(capsys) == ("history: 'no-such-item' is not a known item id or title; "
                                      "'Widget number 10' is the title of several items ['i10', 'i11']: give the item id")
    assert main(["--model", str(root), "--titles", "--history", "i0"]) == 2
    assert one_error_line(capsys) == "history: 'i0' is not a known title"


def test_misspelled_title_gets_the_closest_titles(versioned, capsys):
    root, _ = versioned
    assert main(["--model", str(root), "--history", "Widgit numbr 3"]) == 2
    assert one_error_line(capsys) == ("history: 'Widgit numbr 3' is not a known item id or title (closest: "
                                      "'Widget number 3', 'Widget number 9', 'Widget number 8')")
    assert main(["--model", str(root), "--history", "i99"]) == 2  # no title is close: the closest ids
    assert one_error_line(capsys) == "history: 'i99' is not a known item id or title (closest: 'i9')"


@pytest.mark.parametrize("history", [[], [""], ["  "]])
def test_empty_history(versioned, capsys, history):
    assert main(["--model", str(versioned[0]), "--history", *history]) == 2
    assert one_error_line(capsys) == "--history is empty: give the user's items (ids or titles), oldest first"


@pytest.mark.parametrize("k, message", [("0", "-k 0: must be at least 1"),
                                        ("13", "-k 13: the model knows 12 items; use 1 to 12")])
def test_k_out_of_range(versioned, capsys, k, message):
    assert main(["--model", str(versioned[0]), "--history", "i0", "-k", k]) == 2
    assert one_error_line(capsys) == message


def test_folder_that_is_not_a_model_folder(tmp_path, capsys):
    for folder in (tmp_path, tmp_path / "missing"):
        assert main(["--model", str(folder), "--history", "i0"]) == 2
        assert one_error_line(capsys) == (f"{folder} is not a model folder (singer.json missing) "
                                          "nor a versioned folder of model folders")


@pytest.mark.parametrize("meta, message", [
    ('{"preset": "scratch", ', "invalid JSON at line 1 column 23: Expecting property name enclosed in double quotes"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"preset": "scratch"}', "'sid_map' must be a non-empty object of item id -> SID, got None"),
    ('{"sid_map": {"i0": 3}}', "sid_map['i0'] must be a SID string, got 3"),
    ('{"sid_map": {"i0": "<a_0><b_0><c_0>"}, "titles": ["x"]}', "'titles' must be an object, got list"),
])
def test_corrupt_meta(versioned, tmp_path, capsys, meta, message):
    folder = tmp_path / "model"
    shutil.copytree(versioned[1], folder)
    (folder / "singer.json").write_text(meta, encoding="utf-8")
    assert main(["--model", str(folder), "--history", "i0"]) == 2
    assert one_error_line(capsys) == f"{folder / 'singer.json'}: {message}"


def test_damaged_weights(versioned, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(versioned[1], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["--model", str(folder), "--history", "i0"]) == 2
    assert one_error_line(capsys).startswith(f"{folder}: cannot load the model or tokenizer (")


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    """The installed command itself: no traceback, whatever the fault."""
    (tmp_path / "singer.json").write_text("{oops", encoding="utf-8")
    run = subprocess.run(["singer-recommend", "--model", str(tmp_path), "--history", "i0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"singer-recommend: {tmp_path / 'singer.json'}: invalid JSON at line 1 column 2: "
                          "Expecting property name enclosed in double quotes\n")


def test_help_shows_an_example():
    out = subprocess.run([sys.executable, "-m", "singer_rec.recommend", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "singer-recommend --model data/06_models/sft_model --history" in out
