"""SIDs of new items from trained codebooks: codes computed by hand on a 2-level, 2-code codebook."""
import numpy as np
import pytest

from singer_rec.sid.assign import assign_sids, nearest_codes

# level 0: (0, 0) and (10, 0); level 1 (on the residual): (0, 1) and (0, -1)
CODEBOOKS = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]], dtype=np.float32)
X = [9.0, 0.5]   # level 0: 81.25 vs 1.25 -> 1; residual (-1, 0.5): 1.25 vs 3.25 -> 0
Y = [1.0, -2.0]  # level 0: 5 vs 85 -> 0; residual (1, -2): 10 vs 2 -> 1
Z = [0.5, 1.5]   # level 0: 2.5 vs 92.5 -> 0; residual (0.5, 1.5): 0.5 vs 6.5 -> 0
# old catalogue: (0,0) held by one item without suffix, (1,0) a suffixed group {0, 1}, (1,1) one item
OLD = ["<a_0><b_0>", "<a_1><b_0><c_0>", "<a_1><b_0><c_1>", "<a_1><b_1>"]


def test_nearest_code_per_level_on_the_residual():
    assert nearest_codes(np.array([X, Y, Z]), CODEBOOKS).tolist() == [[1, 0], [0, 1], [0, 0]]


def test_free_path_takes_no_suffix():
    result = assign_sids(np.array([Y]), CODEBOOKS, OLD)
    assert result.sids == ["<a_0><b_1>"]
    assert result.report["new_tokens"] == []
    assert result.report["collisions"]["new_items_with_suffix"] == 0


def test_collisions_follow_the_suffix_scheme():
    result = assign_sids(np.array([X, Y, Z]), CODEBOOKS, OLD)
    # X joins the suffixed group (1,0) with the next free suffix 2; Z's path (0,0) belongs to an old item
    # without suffix, so Z moves to its next-nearest last-level code (0,1), which it shares with Y:
    # both new, they get 0 and 1 in row order
    assert result.sids == ["<a_1><b_0><c_2>", "<a_0><b_1><c_0>", "<a_0><b_1><c_1>"]
    assert result.codes.tolist() == [[1, 0], [0, 1], [0, 1]]
    report = result.report
    assert report["new_tokens"] == ["<c_2>"] and report["new_suffix_tokens"] == ["<c_2>"]
    assert report["collisions"] == {"new_items_with_suffix": 3, "joined_old_suffixed_group": 1,
                                    "new_groups_among_new_items": 1, "relocated_from_unsuffixed_old_path": 1}
    # balanced ceiling ceil(4 / 2) = 2; level 0 counts old [1, 3] + new [2, 1] = [3, 4]
    assert report["levels"]["level_0"] == {"balanced_size_max": 2, "size_max_after": 4, "max_overflow": 2,
                                           "codes_over": 2, "codes_receiving_new_items": 2}
    # level 1: old [3, 1] + new [1, 2] = [4, 3]
    assert report["levels"]["level_1"]["max_overflow"] == 2
    assert report["levels"]["level_1"]["size_max_after"] == 4
    assert not set(result.sids) & set(OLD)


def test_first_suffix_of_a_catalogue_without_any():
    result = assign_sids(np.array([Y, Y]), CODEBOOKS, ["<a_0><b_0>", "<a_1><b_0>"])
    assert result.sids == ["<a_0><b_1><c_0>", "<a_0><b_1><c_1>"]
    assert result.report["new_suffix_tokens"] == ["<c_0>", "<c_1>"]


def test_no_free_last_level_code_is_an_error():
    with pytest.raises(ValueError, match="rebuild the SIDs"):
        assign_sids(np.array([Z]), CODEBOOKS, ["<a_0><b_0>", "<a_0><b_1>"])


def test_embeddings_of_another_encoder_are_rejected():
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        assign_sids(np.zeros((1, 3)), CODEBOOKS, OLD)
