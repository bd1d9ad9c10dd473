"""singer-recommend: the console script on a versioned model folder; ids and titles; clear errors."""
from __future__ import annotations

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


def test_titles_and_ids_resolve_and_unknowns_are_named(versioned, capsys):
    root, latest = versioned
    recommender = SidRecommender.from_folder(latest)
    assert recommender.resolve_items(["i3", "Widget number 4"]) == ["i3", "i4"]
    assert recommender.resolve_items(["Widget number 3"], titles_only=True) == ["i3"]
    assert main(["--model", str(root), "--history", "i0", "no-such-item", "Widget number 10"]) == 2
    err = capsys.readouterr().err
    assert "'no-such-item' is not a known item id or title" in err
    assert "'Widget number 10' is the title of several items ['i10', 'i11']" in err
    assert main(["--model", str(root), "--titles", "--history", "i0"]) == 2
    assert "'i0' is not a known title" in capsys.readouterr().err


def test_help_shows_an_example():
    out = subprocess.run([sys.executable, "-m", "singer_rec.recommend", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "singer-recommend --model data/06_models/sft_model --history" in out
