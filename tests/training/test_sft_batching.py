"""The SFT epoch order (``group_by_length`` off and on) and the micro-batches of a step."""
from __future__ import annotations

import numpy as np
import pytest

from singer_rec.training import sft

LENGTHS = [5, 1, 4, 2, 3, 6, 8, 7, 9, 10, 11]  # example i has LENGTHS[i] tokens


def test_without_grouping_the_order_is_the_seeded_permutation_of_before():
    # seed + epoch: the demo's fixed-seed results do not move when the option is off
    assert sft.epoch_order(LENGTHS, seed=7, epoch=1, batch_size=2).tolist() == \
        np.random.default_rng(8).permutation(len(LENGTHS)).tolist() == [7, 3, 8, 0, 1, 9, 6, 10, 5, 2, 4]


def test_grouped_batches_come_from_length_sorted_mega_batches(monkeypatch):
    # permutation [7, 3, 8, 0 | 1, 9, 6, 10 | 5, 2, 4] in mega-batches of 2 batches of 2; each sorted by
    # length: [3, 0], [7, 8] | [1, 6], [9, 10] | [4, 2], [5]; the full batches shuffled, the short one last
    monkeypatch.setattr(sft, "LENGTH_GROUP_BATCHES", 2)
    order = sft.epoch_order(LENGTHS, seed=7, epoch=1, batch_size=2, group_by_length=True)
    batches = [order[i : i + 2].tolist() for i in range(0, len(order), 2)]
    assert batches == [[4, 2], [9, 10], [7, 8], [3, 0], [1, 6], [5]]
    assert sorted(order.tolist()) == list(range(len(LENGTHS)))  # every example exactly once


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 257])
def test_grouped_order_is_seeded_and_holds_every_example_once(n):
    lengths = list(np.random.default_rng(n).integers(1, 50, size=n))
    first = sft.epoch_order(lengths, seed=3, epoch=2, batch_size=4, group_by_length=True)
    assert first.tolist() == sft.epoch_order(lengths, seed=3, epoch=2, batch_size=4, group_by_length=True).tolist()
    assert sorted(first.tolist()) == list(range(n))
    if n > 8:
        assert first.tolist() != sft.epoch_order(lengths, seed=3, epoch=3, batch_size=4, group_by_length=True).tolist()
    if n > 4 * sft.LENGTH_GROUP_BATCHES:
        return
    # one mega-batch: the full batches are runs of the length-sorted order
    spans = [sorted(lengths[i] for i in first[k : k + 4]) for k in range(0, n - n % 4, 4)]
    assert sorted(spans) == [sorted(lengths)[k : k + 4] for k in range(0, n - n % 4, 4)]


def test_micro_batches_sort_a_step_by_length():
    examples = [([0] * n, [0] * n) for n in (3, 1, 2, 5, 4)]
    chunks = sft.micro_batches(examples, 2)
    assert [[len(ids) for ids, _ in chunk] for chunk in chunks] == [[1, 2], [3, 4], [5]]


def test_group_by_length_is_a_checked_boolean_setting():
    assert sft.SFTSettings.from_dict({"group_by_length": True}).group_by_length is True
    assert sft.SFTSettings().group_by_length is False
    with pytest.raises(ValueError, match="group_by_length"):
        sft.SFTSettings.from_dict({"group_by_length": "yes"})


TASKS = ["s", "a", "s", "a", "a", "a", "s", "a", "b", "b"]  # task of train row i


def test_without_fractions_an_epoch_is_every_row():
    assert sft.epoch_rows(TASKS, None, seed=5, epoch=3).tolist() == list(range(len(TASKS)))
    assert sft.epoch_rows(TASKS, {}, seed=5, epoch=0).tolist() == list(range(len(TASKS)))


def test_a_task_fraction_walks_one_seeded_permutation_window_by_window():
    # task a: rows [1, 3, 4, 5, 7]; fraction 0.4 -> 2 rows an epoch; the seeded walk is [7, 5, 3, 4, 1]
    assert np.random.default_rng([5, 0]).permutation([1, 3, 4, 5, 7]).tolist() == [7, 5, 3, 4, 1]
    epochs = [sft.epoch_rows(TASKS, {"a": 0.4}, seed=5, epoch=e).tolist() for e in range(4)]
    others = [0, 2, 6, 8, 9]  # tasks without a fraction: every row, every epoch
    assert epochs == [sorted(others + [7, 5]), sorted(others + [3, 4]), sorted(others + [1, 7]),
                      sorted(others + [5, 3])]
    # three epochs see every row of task a; every epoch has the same size
    assert set().union(*map(set, epochs[:3])) == set(range(len(TASKS)))
    assert {len(rows) for rows in epochs} == {7}


def test_a_small_fraction_keeps_at_least_one_row_and_a_fraction_of_one_keeps_all():
    assert len(sft.epoch_rows(TASKS, {"b": 0.01}, seed=1, epoch=0)) == len(TASKS) - 1
    assert sft.epoch_rows(TASKS, {"a": 1.0}, seed=1, epoch=2).tolist() == list(range(len(TASKS)))


def test_a_fraction_for_a_task_without_rows_names_it_and_the_tasks_there_are():
    with pytest.raises(ValueError, match=r"task_fractions: task\(s\) \['sid_to_titel'\] have no train rows; "
                                         r"tasks in sft_dataset_train: \['a', 'b', 's'\]"):
        sft.epoch_rows(TASKS, {"sid_to_titel": 0.5}, seed=1, epoch=0)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_task_fractions_outside_zero_to_one_are_refused_by_key(fraction):
    with pytest.raises(ValueError, match=r"sft.train.task_fractions.title_to_sid must be in \(0, 1\], got"):
        sft.SFTSettings.from_dict({"task_fractions": {"title_to_sid": fraction}})


def test_a_task_fraction_must_be_a_number():
    with pytest.raises(ValueError, match="task_fractions.title_to_sid must be a number"):
        sft.SFTSettings.from_dict({"task_fractions": {"title_to_sid": "half"}})
