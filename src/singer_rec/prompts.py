"""Task prompts of the paper (Fig. 5-10) and the one way a prompt is shown to the model.

Six tasks (paper §3.1, Appendix D). Sequence tasks make one row per user sequence; item tasks
one row per item:

| task | input | answer | rows |
|---|---|---|---|
| ``semantic`` | SID history | next SID | sequences |
| ``sid_to_title`` | SID | title | items |
| ``title_to_sid`` | title | SID | items |
| ``title_history_to_sid`` | title history | next SID | sequences |
| ``sid_history_to_title`` | SID history | next title | sequences |
| ``description_to_sid`` | description | SID | items |

One more task serves the BIGRec / D3 baselines only (never SINGER's task lists):
``title_history_to_title`` (title history -> next title, BIGRec's instruction), one row per sequence.

Templates are ``str.format`` strings with the fields ``{history}``, ``{sid}``, ``{title}`` or
``{description}``; a task may have several phrasings, one is picked per row by a seeded RNG.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

INPUT_HEADER = "### Input:\n"
RESPONSE_HEADER = "\n### Response:\n"

DEFAULT_SEMANTIC_TEMPLATE = (
    "The user has interacted with items {history} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)

SEQUENCE_TASKS = ("semantic", "title_history_to_sid", "sid_history_to_title")
ITEM_TASKS = ("sid_to_title", "title_to_sid", "description_to_sid")
TASKS = ("semantic", "sid_to_title", "title_to_sid", "title_history_to_sid", "sid_history_to_title", "description_to_sid")
BASELINE_TASKS = ("title_history_to_title",)  # the title-generating LLM baselines' task, not SINGER's
TITLE_HISTORY_TASKS = ("title_history_to_sid", "title_history_to_title")
TITLE_ANSWER_TASKS = ("sid_history_to_title", "title_history_to_title")
TASK_FIELDS = {
    "title_history_to_title": "history",
    "semantic": "history",
    "title_history_to_sid": "history",
    "sid_history_to_title": "history",
    "sid_to_title": "sid",
    "title_to_sid": "title",
    "description_to_sid": "description",
}
# The phrasings of the paper's figures; conf/base/parameters_prompts.yml may add more.
PAPER_TEMPLATES: dict[str, list[str]] = {
    "semantic": [DEFAULT_SEMANTIC_TEMPLATE],
    "sid_to_title": ["What is the title of {sid}?"],
    "title_to_sid": ["Which item has the title {title}?"],
    "title_history_to_sid": [DEFAULT_SEMANTIC_TEMPLATE],
    "sid_history_to_title": [
        "The user has interacted with items {history} in chronological order. "
        "Can you predict the title of the next item that the user may expect?"
    ],
    "description_to_sid": ["An item can be described as follows: {description} Which item is it describing?"],
    # BIGRec's instruction and input (Bao et al. 2023), with "item" for the domain word
    "title_history_to_title": [
        "Given a list of items the user has interacted with before, please recommend a new item that the user "
        "likes to the user. The user has interacted with the following items before: {history}"
    ],
}
OUTPUT_COLUMNS = ["task", "prompt", "answer", "user_id", "target"]
_STRING_COLUMNS = {"task": str, "prompt": str, "answer": str, "target": str}
BUILD_CHUNK_ROWS = 131072


def render_for_model(prompt: str) -> str:
    """The model's input text for a task prompt; the answer (then EOS) follows it directly."""
    return f"{INPUT_HEADER}{prompt}{RESPONSE_HEADER}"


def semantic_prompt(history_sids: list[str], template: str = DEFAULT_SEMANTIC_TEMPLATE) -> str:
    """Semantic task (Fig. 5): SID history (oldest first) -> next SID."""
    return template.format(history=", ".join(history_sids))


def quoted_history(values: Sequence[str]) -> str:
    """Histories of titles or SIDs as in Fig. 8-9: ``'first', 'second'``."""
    return ", ".join(f"'{v}'" for v in values)


def check_templates(templates: Mapping[str, Sequence[str]], tasks: Sequence[str]) -> None:
    """Every requested task is known, has at least one template, and each uses its field."""
    for task in tasks:
        if task not in TASK_FIELDS:
            raise ValueError(f"unknown prompt task {task!r}; expected one of {list(TASKS)}")
        phrasings = templates.get(task)
        if not phrasings:
            raise ValueError(f"prompts.templates.{task}: no template given")
        for i, template in enumerate(phrasings):
            field = "{" + TASK_FIELDS[task] + "}"
            if field not in template:
                raise ValueError(f"prompts.templates.{task}[{i}]: template must contain {field}: {template!r}")


def heldout_users(user_ids: Sequence[Any], share: float, seed: int) -> set[str]:
    """A seeded ``share`` of the distinct users (``round(share * n)``, at least one, not all): the
    train users whose sequences RL may use as prompts that SFT has not trained on."""
    users = sorted({str(u) for u in user_ids})
    count = round(share * len(users))
    if not 1 <= count < len(users):
        raise ValueError(f"a held-out share of {share} of {len(users)} users keeps {count}: "
                         "it must keep at least one user out and one in")
    order = np.random.default_rng([int(seed), 0x48454C44]).permutation(len(users))  # its own stream
    return {users[i] for i in order[:count]}


def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")


def _clean(text: Any) -> str:
    """One line of text: whitespace collapsed (titles and descriptions may hold newlines)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return " ".join(str(text).split())


class PromptBuilder:
    """Builds task rows from the catalog tables; template choice is seeded per task."""

    def __init__(self, items: pd.DataFrame, item_sids: pd.DataFrame, templates: Mapping[str, Sequence[str]],
                 history_length: int = 10, description_max_chars: int = 400, seed: int = 0) -> None:
        _require_columns(items, "items", ["item_id", "title", "description"])
        _require_columns(item_sids, "item_sids", ["item_id", "sid"])
        self.sid_of = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
        self.title_of = {str(i): _clean(t) for i, t in zip(items["item_id"], items["title"])}
        self.description_of = {str(i): _clean(d) for i, d in zip(items["item_id"], items["description"])}
        self.items = items
        self.templates = {k: list(v) for k, v in templates.items()}
        self.history_length = int(history_length)
        self.description_max_chars = int(description_max_chars)
        self.seed = int(seed)

    def _rng(self, task: str, split: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, (TASKS + BASELINE_TASKS).index(task), sum(map(ord, split))])

    def _sid(self, item_id: str, where: str) -> str:
        try:
            return self.sid_of[item_id]
        except KeyError:
            raise ValueError(f"{where}: item {item_id!r} has no SID in item_sids") from None

    def _title(self, item_id: str, where: str) -> str:
        try:
            return self.title_of[item_id]
        except KeyError:
            raise ValueError(f"{where}: item {item_id!r} is not in items") from None

    def sequence_rows(self, task: str, sequences: pd.DataFrame, name: str) -> Iterator[dict[str, Any]]:
        _require_columns(sequences, name, ["user_id", "history", "target"])
        templates = self.templates[task]
        rng = self._rng(task, name)
        for row, (user, history, target) in enumerate(zip(sequences["user_id"], sequences["history"], sequences["target"])):
            where = f"{name} row {row} (user {user})"
            history = [str(h) for h in list(history)[-self.history_length:]] if history is not None else []
            if not history:
                continue
            target = str(target)
            if task == "semantic":
                shown = ", ".join(self._sid(h, where + " history") for h in history)
            elif task in TITLE_HISTORY_TASKS:
                shown = quoted_history([self._title(h, where + " history") for h in history])
            else:
                shown = quoted_history([self._sid(h, where + " history") for h in history])
            answer = self._title(target, where + " target") if task in TITLE_ANSWER_TASKS else self._sid(target, where + " target")
            if not answer:
                continue  # an item without a title cannot be a title answer
            template = templates[int(rng.integers(len(templates)))]
            yield {"task": task, "prompt": template.format(history=shown), "answer": answer,
                   "user_id": str(user), "target": target}

    def item_rows(self, task: str, name: str) -> Iterator[dict[str, Any]]:
        templates = self.templates[task]
        rng = self._rng(task, name)
        for item_id in self.items["item_id"].astype(str):
            sid = self._sid(item_id, f"items (item {item_id!r})")
            title, description = self.title_of[item_id], self.description_of[item_id]
            if task == "sid_to_title":
                fields, answer = {"sid": sid}, title
            elif task == "title_to_sid":
                fields, answer = {"title": title}, sid
            else:
                fields, answer = {"description": description[: self.description_max_chars]}, sid
            if not answer or not all(fields.values()):
                continue
            template = templates[int(rng.integers(len(templates)))]
            yield {"task": task, "prompt": template.format(**fields), "answer": answer,
                   "user_id": None, "target": item_id}

    def build(self, tasks: Sequence[str], sequences: pd.DataFrame, name: str, item_tasks: bool = True) -> pd.DataFrame:
        """Rows of ``tasks`` over ``sequences`` (and over the items, for item tasks when ``item_tasks``)."""
        check_templates(self.templates, tasks)
        # rows as Python objects a chunk at a time, kept as Arrow-backed string columns: the peak
        # memory is one chunk's Python rows plus the compact columns, not every row's objects
        frames = []
        for task in tasks:
            if task in SEQUENCE_TASKS + BASELINE_TASKS:
                rows = self.sequence_rows(task, sequences, name)
            elif item_tasks:
                rows = self.item_rows(task, name)
            else:
                continue
            while chunk := list(itertools.islice(rows, BUILD_CHUNK_ROWS)):
                frames.append(pd.DataFrame(chunk, columns=OUTPUT_COLUMNS).astype(_STRING_COLUMNS))
        if not frames:
            return pd.DataFrame([], columns=OUTPUT_COLUMNS).astype(_STRING_COLUMNS)
        frame = pd.concat(frames, ignore_index=True)
        if frame["user_id"].dtype == object:  # typed as one table of all rows would be (str when any row has a user)
            frame["user_id"] = pd.Series(frame["user_id"].to_numpy(dtype=object), index=frame.index)
        return frame
