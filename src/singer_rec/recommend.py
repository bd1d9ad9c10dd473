"""Next-item recommendation from a model folder: the library class and the ``singer-recommend`` command.

``SidRecommender`` turns user histories (item ids) into semantic prompts (the folder's semantic
template, ``render_for_model``), decodes them with the trie-constrained beam search over the
folder's SID map and returns item ids with their sequence log-probs. The evaluate stage and the
command line share it, so both see the same prompts and the same decoder.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from singer_rec.decoding import PrefixTrie, beam_search
from singer_rec.prompts import DEFAULT_SEMANTIC_TEMPLATE, render_for_model, semantic_prompt
from singer_rec.sid.tokens import sid_tokens

logger = logging.getLogger(__name__)

META_FILE = "singer.json"  # the same name as singer_rec.modeling.META_FILE (not imported: keeps --help fast)


def resolve_model_folder(path: str | Path) -> Path:
    """A model folder, or a versioned dataset folder (``data/06_models/sft_model``): its latest version."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if path.is_dir():
        # Kedro versioned layout: <path>/<version>/<name>/singer.json, versions sort by time
        versions = sorted(v for v in path.iterdir() if (v / path.name / META_FILE).is_file())
        if versions:
            return versions[-1] / path.name
    raise FileNotFoundError(f"{path} is not a model folder ({META_FILE} missing) nor a versioned folder of model folders")


class SidRecommender:
    """A model, its tokenizer and SID map, ready to decode next items for histories of item ids."""

    def __init__(self, model, tokenizer, meta: dict, template_index: int = 0, history_length: int = 10) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sid_map: dict[str, str] = {str(k): str(v) for k, v in meta["sid_map"].items()}
        self.titles: dict[str, str] = {str(k): str(v) for k, v in (meta.get("titles") or {}).items()}
        templates = (meta.get("templates") or {}).get("semantic") or [DEFAULT_SEMANTIC_TEMPLATE]
        if not 0 <= template_index < len(templates):
            raise ValueError(f"template_index {template_index}: the model folder has {len(templates)} semantic templates")
        self.template = templates[template_index]
        self.history_length = int(history_length)
        self.item_ids = list(self.sid_map)
        self.trie = PrefixTrie.build(self._sid_token_ids(), max(len(tokenizer), model.config.vocab_size))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_folder(cls, path: str | Path, device: str = "cpu", **kwargs) -> "SidRecommender":
        from singer_rec.modeling import load_model_folder

        model, tokenizer, meta = load_model_folder(resolve_model_folder(path), device=device)
        return cls(model, tokenizer, meta, **kwargs)

    def _sid_token_ids(self) -> list[list[int]]:
        owner: dict[str, str] = {}
        unk = self.tokenizer.unk_token_id
        sequences = []
        for item, sid in self.sid_map.items():
            if sid in owner:
                raise ValueError(f"sid_map: items {owner[sid]!r} and {item!r} share the SID {sid} (item<->SID must be one-to-one)")
            owner[sid] = item
            tokens = sid_tokens(sid)
            ids = self.tokenizer.convert_tokens_to_ids(tokens)
            missing = [t for t, i in zip(tokens, ids) if i is None or (unk is not None and i == unk)]
            if missing:
                raise ValueError(f"sid_map: item {item!r} SID {sid}: token {missing[0]} is not in the tokenizer")
            sequences.append(list(ids))
        return sequences

    def sid(self, item_id: str) -> str:
        return self.sid_map[item_id]

    def prompt_ids(self, history: Sequence[str], where: str = "history") -> list[int]:
        """Token ids of the semantic prompt for a history of item ids (oldest first, last ``history_length`` kept)."""
        shown = [str(i) for i in list(history)[-self.history_length:]]
        unknown = [i for i in shown if i not in self.sid_map]
        if unknown:
            raise ValueError(f"{where}: item {unknown[0]!r} has no SID in the model's sid_map")
        text = render_for_model(semantic_prompt([self.sid_map[i] for i in shown], self.template))
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def recommend(self, histories: Sequence[Sequence[str]], k: int, num_beams: int | None = None, batch_size: int = 32,
                  autocast_dtype: torch.dtype | None = None, progress: bool = False,
                  where: str = "history") -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` item ids per history (best first) and their sequence log-probs."""
        prompts = [self.prompt_ids(h, f"{where} {row}") for row, h in enumerate(histories)]
        result = beam_search(self.model, prompts, self.trie, num_beams=num_beams or k, num_return=k,
                             batch_size=batch_size, pad_token_id=self.pad_token_id, autocast_dtype=autocast_dtype,
                             progress=progress)
        items = [[self.item_ids[j] for j in row] for row in result.items]
        return items, result.scores

    def resolve_items(self, entries: Sequence[str], titles_only: bool = False) -> list[str]:
        """Item ids for entries given as item ids or exact titles; one error lists every unknown entry."""
        return resolve_items(entries, self.sid_map, self.titles, titles_only)


def closest(entry: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """The few candidates most like ``entry`` (difflib's ratio, best first)."""
    return difflib.get_close_matches(entry, list(candidates), n=n, cutoff=0.5)


def resolve_items(entries: Sequence[str], sid_map: dict[str, str], titles: dict[str, str],
                  titles_only: bool = False) -> list[str]:
    """Item ids for entries given as item ids or exact titles.

    One ``ValueError`` (one line) names every entry that is unknown, with the closest titles
    (or ids) as suggestions, or that is the title of several items.
    """
    by_title: dict[str, list[str]] = {}
    for item, title in titles.items():
        by_title.setdefault(title, []).append(item)
    resolved, problems = [], []
    for entry in entries:
        if not titles_only and entry in sid_map:
            resolved.append(entry)
        elif len(by_title.get(entry, [])) == 1:
            resolved.append(by_title[entry][0])
        elif entry in by_title:
            problems.append(f"{entry!r} is the title of several items {by_title[entry]}: give the item id")
        else:
            kind = "title" if titles_only else "item id or title"
            near = closest(entry, by_title) or ([] if titles_only else closest(entry, sid_map))
            hint = f" (closest: {', '.join(repr(t) for t in near)})" if near else ""
            problems.append(f"{entry!r} is not a known {kind}{hint}")
    if problems:
        raise ValueError("history: " + "; ".join(problems))
    return resolved


def read_checked_meta(folder: Path) -> dict:
    """The folder's ``singer.json``, checked for what recommending needs; a ``ValueError`` names the file."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    sid_map = meta.get("sid_map")
    if not isinstance(sid_map, dict) or not sid_map:
        raise ValueError(f"{path}: 'sid_map' must be a non-empty object of item id -> SID, got {sid_map!r:.60}")
    bad = next((k for k, v in sid_map.items() if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise ValueError(f"{path}: sid_map[{bad!r}] must be a SID string, got {sid_map[bad]!r:.60}")
    for key in ("titles", "templates"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ValueError(f"{path}: {key!r} must be an object, got {type(meta[key]).__name__}")
    return meta


EXAMPLE = """example:
  singer-recommend --model data/06_models/sft_model --history 1534 2210 87 -k 5
  singer-recommend --model data/06_models/sft_model --titles --history "Scotch Super 33+ Vinyl Electrical Tape, 3/4 in x 66 ft"

--model takes a model folder (it holds singer.json) or a versioned dataset folder such as
data/06_models/sft_model, whose latest version is used."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="singer-recommend", description="Print the top-k next items for a user history, with titles and scores.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or versioned model dataset folder")
    parser.add_argument("--history", required=True, nargs="*", metavar="ITEM",
                        help="the user's items, oldest first: item ids or exact titles")
    parser.add_argument("--titles", action="store_true", help="match every history entry as a title only")
    parser.add_argument("-k", type=int, default=10, help="how many items to print (default 10)")
    parser.add_argument("--beams", type=int, default=None, help="beam width (default: max(k, 20))")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    return parser.parse_args(argv)


def format_table(rows: list[tuple[int, str, float, str, str]]) -> str:
    header = f"{'rank':>4}  {'item_id':<12} {'log-prob':>9}  {'sid':<28} title"
    lines = [header] + [f"{r:>4}  {i:<12} {s:>9.3f}  {sid:<28} {t}" for r, i, s, sid, t in rows]
    return "\n".join(lines)


class UsageError(ValueError):
    """A bad argument or input: printed as one line, exit status 2."""


def check_request(args: argparse.Namespace) -> list[str]:
    """The history entries, or a UsageError for an empty history or a -k/--beams below 1."""
    history = [entry for entry in args.history if entry.strip()]
    if not history:
        raise UsageError("--history is empty: give the user's items (ids or titles), oldest first")
    if args.k < 1:
        raise UsageError(f"-k {args.k}: must be at least 1")
    if args.beams is not None and args.beams < 1:
        raise UsageError(f"--beams {args.beams}: must be at least 1")
    return history


def load_recommender(folder: Path, meta: dict) -> SidRecommender:
    """The model of a folder whose meta was checked; a broken model or tokenizer is one ValueError."""
    from singer_rec.modeling import load_model_folder

    try:
        model, tokenizer, _ = load_model_folder(folder)
    except Exception as err:  # transformers/safetensors raise many types for a damaged folder
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{folder}: cannot load the model or tokenizer ({type(err).__name__}: {first})") from err
    return SidRecommender(model, tokenizer, meta)


def recommend_rows(args: argparse.Namespace) -> list[tuple[int, str, float, str, str]]:
    """Everything the command does before printing; any bad input raises ValueError/OSError."""
    entries = check_request(args)
    folder = resolve_model_folder(args.model)
    meta = read_checked_meta(folder)
    sid_map = {str(k): str(v) for k, v in meta["sid_map"].items()}
    titles = {str(k): str(v) for k, v in (meta.get("titles") or {}).items()}
    history = resolve_items(entries, sid_map, titles, titles_only=args.titles)
    if args.k > len(sid_map):
        raise UsageError(f"-k {args.k}: the model knows {len(sid_map)} items; use 1 to {len(sid_map)}")
    recommender = load_recommender(folder, meta)
    beams = max(args.k, args.beams or 20)
    items, scores = recommender.recommend([history], k=args.k, num_beams=beams,
                                          autocast_dtype=torch.bfloat16 if args.bf16 else None)
    return [(rank, item, score, recommender.sid(item), recommender.titles.get(item, ""))
            for rank, (item, score) in enumerate(zip(items[0], scores[0]), start=1)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would clutter the printed table
    try:
        rows = recommend_rows(args)
    except (ValueError, OSError) as err:  # FileNotFoundError is an OSError
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"singer-recommend: {message}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
