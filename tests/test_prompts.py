"""Prompts of the six tasks for a hand-made two-user catalog, compared with exact strings."""
from __future__ import annotations

import pandas as pd
import pytest

from singer_rec.prompts import (
    PAPER_TEMPLATES, PromptBuilder, TASKS, check_templates, heldout_users, render_for_model, semantic_prompt,
)

ITEMS = pd.DataFrame({
    "item_id": ["A", "B", "C"],
    "title": ["Red Pen", "Blue\nPencil", "Eraser"],
    "description": ["A red pen.", "", "Soft   white eraser."],
    "brand": ["X", "Y", "Z"],
    "categories": [["Office"], ["Office"], ["Office"]],
})
SIDS = pd.DataFrame({"item_id": ["A", "B", "C"],
                     "sid": ["<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_0><b_5><c_6>"]})
SEQUENCES = pd.DataFrame({
    "user_id": ["u1", "u2"],
    "history": [["A", "B"], ["C"]],
    "target": ["C", "A"],
    "timestamp": [10, 20],
})
NEXT = "Can you predict the next possible item that the user may expect?"
NEXT_TITLE = "Can you predict the title of the next item that the user may expect?"


def _builder(**kw):
    return PromptBuilder(ITEMS, SIDS, PAPER_TEMPLATES, seed=7, **kw)


def test_all_six_tasks_give_the_expected_rows():
    frame = _builder().build(list(TASKS), SEQUENCES, "train_sequences")
    expected = [
        ("semantic", f"The user has interacted with items <a_1><b_2><c_3>, <a_1><b_2><c_4> in chronological order. {NEXT}", "<a_0><b_5><c_6>", "u1", "C"),
        ("semantic", f"The user has interacted with items <a_0><b_5><c_6> in chronological order. {NEXT}", "<a_1><b_2><c_3>", "u2", "A"),
        ("sid_to_title", "What is the title of <a_1><b_2><c_3>?", "Red Pen", None, "A"),
        ("sid_to_title", "What is the title of <a_1><b_2><c_4>?", "Blue Pencil", None, "B"),
        ("sid_to_title", "What is the title of <a_0><b_5><c_6>?", "Eraser", None, "C"),
        ("title_to_sid", "Which item has the title Red Pen?", "<a_1><b_2><c_3>", None, "A"),
        ("title_to_sid", "Which item has the title Blue Pencil?", "<a_1><b_2><c_4>", None, "B"),
        ("title_to_sid", "Which item has the title Eraser?", "<a_0><b_5><c_6>", None, "C"),
        ("title_history_to_sid", f"The user has interacted with items 'Red Pen', 'Blue Pencil' in chronological order. {NEXT}", "<a_0><b_5><c_6>", "u1", "C"),
        ("title_history_to_sid", f"The user has interacted with items 'Eraser' in chronological order. {NEXT}", "<a_1><b_2><c_3>", "u2", "A"),
        ("sid_history_to_title", f"The user has interacted with items '<a_1><b_2><c_3>', '<a_1><b_2><c_4>' in chronological order. {NEXT_TITLE}", "Eraser", "u1", "C"),
        ("sid_history_to_title", f"The user has interacted with items '<a_0><b_5><c_6>' in chronological order. {NEXT_TITLE}", "Red Pen", "u2", "A"),
        # B has no description: no row for it
        ("description_to_sid", "An item can be described as follows: A red pen. Which item is it describing?", "<a_1><b_2><c_3>", None, "A"),
        ("description_to_sid", "An item can be described as follows: Soft white eraser. Which item is it describing?", "<a_0><b_5><c_6>", None, "C"),
    ]
    got = [(r.task, r.prompt, r.answer, None if pd.isna(r.user_id) else r.user_id, r.target) for r in frame.itertuples()]
    assert got == expected
    assert list(frame.columns) == ["task", "prompt", "answer", "user_id", "target"]


def test_rows_built_in_chunks_equal_one_chunk(monkeypatch):
    """Rows become columns a chunk at a time (memory): any chunk size gives the same table, dtypes
    included (user_id is a string column with missing values for the item tasks)."""
    from singer_rec import prompts

    whole = _builder().build(list(TASKS), SEQUENCES, "train_sequences")
    assert str(whole["user_id"].dtype) == "str" and whole["user_id"].isna().sum() == 8
    for chunk_rows in (1, 2, 5):
        monkeypatch.setattr(prompts, "BUILD_CHUNK_ROWS", chunk_rows)
        pd.testing.assert_frame_equal(_builder().build(list(TASKS), SEQUENCES, "train_sequences"), whole)
    only_items = _builder().build(["sid_to_title"], SEQUENCES, "train_sequences")
    assert only_items["user_id"].tolist() == [None, None, None]


def test_semantic_task_matches_the_shared_semantic_prompt_and_render_format():
    frame = _builder().build(["semantic"], SEQUENCES, "valid_sequences", item_tasks=False)
    assert frame.prompt[0] == semantic_prompt(["<a_1><b_2><c_3>", "<a_1><b_2><c_4>"])
    assert render_for_model("Q?") == "### Input:\nQ?\n### Response:\n"


def test_history_keeps_the_last_items_only():
    frame = _builder(history_length=1).build(["semantic"], SEQUENCES, "train_sequences")
    assert frame.prompt[0] == f"The user has interacted with items <a_1><b_2><c_4> in chronological order. {NEXT}"


def test_item_tasks_can_be_left_out_and_task_choice_is_a_parameter():
    frame = _builder().build(["semantic", "title_to_sid"], SEQUENCES, "valid_sequences", item_tasks=False)
    assert frame.task.tolist() == ["semantic", "semantic"]


def test_template_choice_is_seeded():
    templates = {**PAPER_TEMPLATES, "sid_to_title": ["T1 {sid}", "T2 {sid}", "T3 {sid}"]}
    def prompts(seed):
        builder = PromptBuilder(ITEMS, SIDS, templates, seed=seed)
        return builder.build(["sid_to_title"], SEQUENCES, "train_sequences").prompt.tolist()
    assert prompts(1) == prompts(1)
    assert {p.split()[0] for s in range(5) for p in prompts(s)} == {"T1", "T2", "T3"}


def test_bad_input_names_the_table_row_and_field():
    bad = SEQUENCES.copy()
    bad.loc[1, "history"] = ["Z"]
    with pytest.raises(ValueError, match=r"train_sequences row 1 \(user u2\) history: item 'Z' has no SID in item_sids"):
        _builder().build(["semantic"], bad, "train_sequences")
    with pytest.raises(ValueError, match=r"items: missing column\(s\) \['description'\]"):
        PromptBuilder(ITEMS.drop(columns=["description"]), SIDS, PAPER_TEMPLATES)
    with pytest.raises(ValueError, match="unknown prompt task 'poetry'"):
        check_templates(PAPER_TEMPLATES, ["poetry"])
    with pytest.raises(ValueError, match=r"prompts.templates.title_to_sid\[0\]: template must contain \{title\}"):
        check_templates({"title_to_sid": ["Which item?"]}, ["title_to_sid"])


def test_heldout_users_are_a_seeded_share_of_the_distinct_users():
    users = [f"u{i}" for i in range(10)] * 3  # each user has several sequences
    held = heldout_users(users, 0.3, seed=42)
    assert len(held) == 3 and held <= set(users)
    assert heldout_users(reversed(users), 0.3, seed=42) == held  # the order of the rows does not matter
    assert heldout_users(users, 0.3, seed=43) != held
    larger = heldout_users(users, 0.5, seed=42)
    assert len(larger) == 5 and held < larger  # one permutation per seed: a larger share extends a smaller one
    for share in (0.01, 0.99):
        with pytest.raises(ValueError, match="at least one user out and one in"):
            heldout_users(users, share, seed=42)
