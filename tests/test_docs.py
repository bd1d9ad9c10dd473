"""The reference docs agree with conf/, name no path outside the repository and carry no history;
every relative link in README.md and docs/ resolves (to a file, and to a heading for a `#anchor`).

Reference docs: ``docs/{architecture,data,sid,sft,rl,evaluate,baselines}.md`` (the results pages
under ``docs/experiments/`` are records of runs and are not checked here).

Parameter tables, the convention the docs follow:

- A parameter table is a markdown table whose first header cell is ``key`` or ``parameter``. Its
  caption, the nearest non-blank line above it (a heading or a sentence), names the file and the
  block: ``(`conf/base/parameters_rl.yml`, key `rl`)``. Keys are relative to that block
  (``settings.num_generations`` is ``rl.settings.num_generations``); ``globals `source``` is the
  key ``source`` of ``globals.yml``.
- One key per row, in backticks. Every documented key must exist in the conf.
- Value columns are named by environment: ``default`` / ``default (base)`` / ``demo`` is
  ``conf/base``; a header naming ``giftcards``, ``industrial`` or ``office`` (``industrial, office``
  names both) is that environment's resolved parameters (base with the environment soft-merged
  over it, as ``kedro run --env=...`` sees them). Other columns (``meaning``) are prose.
- A value cell is parsed with ``yaml.safe_load`` after dropping backticks and a trailing
  ``(note)``, and compared with the conf value: numbers as numbers (``3e-4`` equals ``3.0e-4``),
  lists element by element, a mapping (``{hidden_size: 128, ...}``) against the same keys of the
  conf's mapping (the conf may hold more keys). ``data/<env>/`` stands for the environment's
  ``data_root``; a ``${...}`` value is compared with the conf text before interpolation.
- An empty cell in an environment column means "as in the base column"; ``—`` means the value is
  not written in the table (a long value such as the prompt templates: the key is still checked).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from singer_rec.settings import CONFIG_LOADER_ARGS, project_parameters

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REFERENCE_DOCS = ["architecture", "data", "sid", "sft", "rl", "evaluate", "baselines"]
ENVS = ["giftcards", "industrial", "office"]
# How many parameter tables each reference doc has (a caption the parser cannot read must not
# silently drop a table from the check).
EXPECTED_TABLES = {"data": 2, "sid": 2, "sft": 2, "rl": 1, "evaluate": 1, "baselines": 1}

CAPTION = re.compile(r"`conf/base/(parameters_\w+\.yml)`, key `(\w+)`")
NOT_WRITTEN = "—"
_MISSING = object()


def _doc(name: str) -> str:
    return (ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parameter_tables(text: str):
    """Yield (line number, file, block, header, rows) for every parameter table of a doc."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if (line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-|: ]+\|$", lines[i + 1])
                and _cells(line)[0].lower() in ("key", "parameter")):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            caption = CAPTION.search(lines[j]) if j >= 0 else None
            header = _cells(line)
            rows = []
            k = i + 2
            while k < len(lines) and lines[k].startswith("|"):
                rows.append((k + 1, _cells(lines[k])))
                k += 1
            yield i + 1, caption and caption.group(1), caption and caption.group(2), header, rows
            i = k
        else:
            i += 1


def column_envs(header: str) -> list[str]:
    h = header.lower()
    envs = [e for e in ENVS if e in h]
    if not envs and ("default" in h or "demo" in h or "base" in h):
        envs = ["base"]
    return envs


def _get(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _same(doc, conf) -> bool:
    if isinstance(doc, dict):
        return isinstance(conf, dict) and all(k in conf and _same(v, conf[k]) for k, v in doc.items())
    if isinstance(doc, list):
        return isinstance(conf, list) and len(doc) == len(conf) and all(map(_same, doc, conf))
    if isinstance(conf, bool) or isinstance(doc, bool) or conf is None or doc is None:
        return doc == conf
    if isinstance(conf, (int, float)):
        try:
            return math.isclose(float(doc), float(conf), rel_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return doc == conf


def parse_value(cell: str, data_root: str):
    text = cell.replace("`", "").strip()
    text = re.sub(r"\s+\([^()]*\)$", "", text)  # a trailing (note)
    text = text.replace("data/<env>", data_root)
    return yaml.safe_load(text)


class Conf:
    """Resolved parameters and globals per environment, and the raw (uninterpolated) yaml."""

    def __init__(self):
        self._params, self._globals = {}, {}

    def params(self, env):
        if env not in self._params:
            self._params[env] = project_parameters(CONF, env)
        return self._params[env]

    def globals(self, env):
        if env not in self._globals:
            self._globals[env] = OmegaConfigLoader(str(CONF), env=env, **CONFIG_LOADER_ARGS)["globals"]
        return self._globals[env]

    @staticmethod
    def raw(env, file, dotted):
        value = _MISSING
        if env != "base" and (CONF / env / "parameters.yml").exists():
            value = _get(yaml.safe_load((CONF / env / "parameters.yml").read_text()) or {}, dotted)
        if value is _MISSING:
            value = _get(yaml.safe_load((CONF / "base" / file).read_text()), dotted)
        return value


@pytest.fixture(scope="module")
def conf():
    return Conf()


def table_problems(doc_name: str, text: str, conf: Conf) -> tuple[int, list[str]]:
    """(number of tables, one line per disagreement) for one doc."""
    problems, n_tables = [], 0
    for line_no, file, block, header, rows in parameter_tables(text):
        n_tables += 1
        if file is None:
            problems.append(f"{doc_name}.md:{line_no}: a parameter table needs a caption (the line above it) "
                            "naming `conf/base/parameters_<stage>.yml`, key `<block>`")
            continue
        block_keys = yaml.safe_load((CONF / "base" / file).read_text())
        if block not in block_keys:
            problems.append(f"{doc_name}.md:{line_no}: conf/base/{file} has no block `{block}`")
            continue
        value_cols = [(c, column_envs(h)) for c, h in enumerate(header) if c > 0 and column_envs(h)]
        base_col = next((c for c, envs in value_cols if "base" in envs), None)
        for row_no, cells in rows:
            where = f"{doc_name}.md:{row_no}"
            keys = re.findall(r"`([^`]+)`", cells[0])
            is_global = cells[0].startswith("globals ")
            if len(keys) != 1 or cells[0].replace(f"`{keys[0] if keys else ''}`", "").strip() not in ("", "globals"):
                problems.append(f"{where}: one key per row, in backticks: {cells[0]!r}")
                continue
            key = keys[0]
            for col, envs in value_cols:
                cell = cells[col] if col < len(cells) else ""
                if cell == "" and col != base_col and base_col is not None:
                    cell = cells[base_col]
                for env in envs:
                    tree = conf.globals(env) if is_global else conf.params(env)
                    dotted = key if is_global else f"{block}.{key}"
                    actual = _get(tree, dotted)
                    if actual is _MISSING:
                        problems.append(f"{where}: `{dotted}` is not in the conf ({env})")
                        break
                    if cell in ("", NOT_WRITTEN):
                        continue
                    data_root = conf.globals(env)["data_root"]
                    try:
                        documented = parse_value(cell, data_root)
                    except yaml.YAMLError:
                        problems.append(f"{where}: `{dotted}` [{env}]: cannot parse {cell!r}")
                        continue
                    if isinstance(documented, str) and "${" in documented:
                        actual = conf.raw(env, file, dotted)
                    if not _same(documented, actual):
                        problems.append(f"{where}: `{dotted}` [{env}]: doc {cell!r}, conf {actual!r}")
    return n_tables, problems


@pytest.mark.parametrize("doc_name", REFERENCE_DOCS)
def test_parameter_tables_agree_with_conf(doc_name, conf):
    n_tables, problems = table_problems(doc_name, _doc(doc_name), conf)
    assert not problems, "\n".join(problems)
    assert n_tables == EXPECTED_TABLES.get(doc_name, 0)


# A date in history style (2026-12-06); `_2016-10-2018-11.csv` (a file name) is not one.
DATE = re.compile(r"(?<![\w-])20\d\d-\d\d-\d\d(?![\w-])")


@pytest.mark.parametrize("doc_name", REFERENCE_DOCS)
def test_reference_docs_have_no_outside_paths_or_dates(doc_name):
    text = _doc(doc_name)
    bad = [f"{doc_name}.md:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1)
           if "../shared" in line or DATE.search(line)]
    assert not bad, "a path outside the repository (name `raw_root`) or a dated sentence:\n" + "\n".join(bad)


def _conf_data_paths(params: dict) -> set[str]:
    """Every `data/...` string value of the base conf (e.g. the shared model cache)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node.startswith("data/"):
            found.add(node)

    walk(params)
    return found


@pytest.mark.parametrize("doc_name", REFERENCE_DOCS)
def test_data_paths_are_under_an_environment(doc_name, conf):
    """Catalog paths sit under `data/<env>/` (the environment's data_root), not `data/0N_.../`."""
    allowed = _conf_data_paths(conf.params("base"))
    bad = []
    for n, line in enumerate(_doc(doc_name).splitlines(), 1):
        for path in re.findall(r"(?<![\w/.])data/0\d_[\w./<>{}-]*", line):
            if not any(path.startswith(p) for p in allowed):
                bad.append(f"{doc_name}.md:{n}: {path}")
    assert not bad, "write data/<env>/... (data_root) for:\n" + "\n".join(bad)


def test_pipelines_left_out_of_the_default_run_are_documented():
    from singer_rec.pipeline_registry import NOT_IN_DEFAULT

    match = re.search(r"`__default__` is all of them\s+except ([^.(]+)", _doc("architecture"))
    assert match, "docs/architecture.md names the pipelines left out of __default__"
    assert set(re.findall(r"`(\w+)`", match.group(1))) == NOT_IN_DEFAULT


# A reference doc says how the project is; how it got there (runs, tuning, what changed) is in
# docs/experiments/. These phrases only make sense in such a log.
HISTORY_PHRASES = ["this session", "previous defaults", "new defaults", "old defaults",
                   "before this work", "then-current", "until 20", "since 20"]


@pytest.mark.parametrize("doc_name", REFERENCE_DOCS)
def test_reference_docs_carry_no_history(doc_name):
    bad = [f"{doc_name}.md:{n}: {phrase!r} in {line.strip()[:100]}"
           for n, line in enumerate(_doc(doc_name).splitlines(), 1)
           for phrase in HISTORY_PHRASES if phrase in line.lower()]
    assert not bad, "history belongs in docs/experiments/ (an experiment log):\n" + "\n".join(bad)


LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (lowercase, punctuation dropped, - for spaces)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors, seen = set(), {}
    for title in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every relative link or image in a markdown file, code left out."""
    text = path.read_text(encoding="utf-8")
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        found.append((text.count("\n", 0, m.start()) + 1, target))
    return found


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, target in relative_links(path):
        where = f"{path.relative_to(root)}:{line}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def test_relative_links_resolve():
    bad = [p for path in markdown_files() for p in link_problems(path)]
    assert not bad, "relative links in README.md and docs/ must resolve:\n" + "\n".join(bad)


def test_link_check_finds_a_broken_link(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# B\n\n## Some `code` heading\n", encoding="utf-8")
    doc.write_text("[ok](b.md) [anchor](b.md#some-code-heading) [web](https://x.org/y.md)\n"
                   "`[not a link](nowhere.md)` ![img](missing.png) [bad](b.md#nope)\n"
                   "```\n[in code](gone.md)\n```\n[gone](c.md)\n", encoding="utf-8")
    problems = [p.rsplit(": ", 1)[0] for p in link_problems(doc, root=tmp_path)]
    assert problems == ["a.md:2: missing.png", "a.md:2: b.md#nope", "a.md:6: c.md"]
