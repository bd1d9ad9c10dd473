"""The paper's path at the paper's model shape, one markdown table row per check (value, pass/FAIL/skipped).

    python benchmarks/gpu/paper_shape_check.py --device cuda --shape 0.5b     # what benchmarks/gpu_check.sh runs
    python benchmarks/gpu/paper_shape_check.py --device cpu --shape tiny --skip kedro   # CPU smoke run (tests)

The model is Qwen2.5-Instruct-0.5B's shape built from its config with random weights
(``singer_rec.shaped_models``: 896 hidden, 24 layers, 14/2 heads, 151,936 tied rows for 151,665
tokens, the padding rows zero), or a real folder given with ``--llm-path`` / ``LLM_PATH``. It gets the
SID tokens of a synthetic catalogue of 3 levels x 256 codes through the ``hf`` preset, as the SFT stage
builds it, then:

- ``sid_rows``: every SID token row equals the mean of the pretrained real-token rows, none is a
  padding row, real rows untouched, the matrix padded to a multiple of 64 rows, the head still tied;
- ``beam``: constrained beam search (beam 20) in float32 and under bf16 autocast, top-10 overlap;
- ``sft``: SFT steps of the paper's batch (128 samples, micro-batches of 32) under bf16 autocast:
  seconds per step, peak memory, the loss going down on a repeated batch;
- ``rl``: one RL micro-batch of the paper's shape (16 prompts x k = 16 beam rollouts) against a frozen
  copy of the policy: the KL at step 1 is 0, the loss backpropagates;
- ``lora``: a LoRA step (SID rows trainable), save (adapters merged) and reload give the same logits;
- ``kedro``: ``kedro run --config=conf/paper_gpu.yml`` on the synthetic demo in a scratch copy of the
  project with this model folder, a few SFT steps of 128, one RL step of 512 prompts, evaluate.

Before the checks, the SID rows are what the model folder gives them (``sid_rows``); for ``beam`` and
later they get a seeded offset of the real rows' scale, because fresh SID rows are all equal and
would tie every candidate. A check whose input is missing (no embedding model for ``kedro`` and no
offline MiniLM package) prints "skipped". Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("sid_rows", "beam", "sft", "rl", "lora", "kedro")
RESULTS: list[str] = []


def report(check: str, what: str, value: str, ok: bool | None) -> None:
    status = "pass" if ok is True else "FAIL" if ok is False else "skipped"
    RESULTS.append(status)
    print(f"| {check}: {what} | {value} | {status} |", flush=True)


@contextlib.contextmanager
def guard(check: str):
    """A check that raises is a FAIL row (with the error), and the next checks still run."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - reported, not hidden
        report(check, "raised", f"{type(error).__name__}: {' '.join(str(error).split())[:300]}", False)


def peak_gib(device: torch.device) -> str:
    from singer_rec.training.memory import local_peak_memory_mb

    mib, kind = local_peak_memory_mb(device)
    return f"{mib / 1024:.2f} GiB {'CUDA allocated' if kind == 'cuda_allocated' else 'process RSS'}"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def catalogue(num_items: int, codebook: int, seed: int) -> list[str]:
    """``num_items`` distinct 3-level SIDs with codes below ``codebook`` (code codebook - 1 used, so the
    SID vocabulary is 3 x codebook tokens, as the paper's 3 x 256)."""
    from singer_rec.sid.tokens import format_sid

    g = torch.Generator().manual_seed(seed)
    seen = {(codebook - 1, codebook - 1, codebook - 1)}
    while len(seen) < num_items:
        seen.add(tuple(torch.randint(codebook, (3,), generator=g).tolist()))
    return [format_sid(codes) for codes in sorted(seen)]


def original_embedding(folder: Path) -> torch.Tensor | None:
    """The input embedding matrix as stored in the folder (before any SID token)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __contains__)
                if name.endswith("embed_tokens.weight"):
                    return handle.get_tensor(name).float()
    return None


def sft_batch(tokenizer, sids: list[str], rows: int, seed: int):
    """``rows`` semantic-task examples (10 history SIDs -> next SID), encoded as SFT encodes them."""
    from singer_rec.prompts import semantic_prompt
    from singer_rec.training.sft import encode_example

    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(rows):
        picks = torch.randint(len(sids), (11,), generator=g).tolist()
        examples.append(encode_example(tokenizer, semantic_prompt([sids[i] for i in picks[:10]]), sids[picks[10]], 512))
    return examples


def prompt_ids(tokenizer, examples) -> list[list[int]]:
    """The prompt part of encoded examples (labels are -100 there)."""
    from singer_rec.training.sft import IGNORE_INDEX

    return [[t for t, label in zip(ids, labels) if label == IGNORE_INDEX] for ids, labels in examples]


def sft_steps(model, tokenizer, examples, device, steps: int, micro: int, lr: float, dtype):
    """``steps`` optimizer steps on the same batch (sum of the answer-token losses / tokens): losses, s/step."""
    from singer_rec.training import common
    from singer_rec.training.sft import answer_token_loss, collate

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses, seconds = [], []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total_tokens = sum(sum(1 for label in labels if label != -100) for _, labels in examples)
        value = 0.0
        for first in range(0, len(examples), micro):
            batch = {k: v.to(device) for k, v in collate(examples[first:first + micro], tokenizer.pad_token_id).items()}
            with common.autocast(device, dtype):
                loss, _ = answer_token_loss(model, batch)
            (loss / total_tokens).backward()
            value += loss.item() / total_tokens
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sync(device)
        seconds.append(time.perf_counter() - start)
        losses.append(value)
    del optimizer
    return losses, seconds


def logits_of(model, prompts, device) -> torch.Tensor:
    """Last-position logits of each prompt, float32."""
    with torch.no_grad():
        return torch.stack([model(input_ids=torch.tensor([p], device=device)).logits[0, -1].float() for p in prompts])


def run_kedro(folder: Path, embedding: str, device: torch.device, out: Path, timeout: int) -> tuple[int, float, Path, str]:
    """``kedro run --config=conf/paper_gpu.yml`` in a scratch copy of the project (conf + pyproject)."""
    root = out / "project"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    (root / "src").mkdir()
    caps = {"llm_path": folder, "embedding_path": embedding, "sft.train.max_steps": 4,
            "sft.train.valid_ranking_rows": 64, "sft.train.max_valid_samples": 64,
            "rl.settings.max_steps": 1, "rl.settings.probe_prompts": 16}  # one RL step of the paper's 512 prompts
    if device.type == "cpu":  # the smoke run: the paper's wiring at CPU size
        caps.update({"embed.device": "cpu", "sft.train.device": "cpu", "rl.device": "cpu", "evaluate.device": "cpu",
                     "sft.train.max_steps": 2, "sft.train.batch_size": 16, "sft.train.micro_batch_size": 16,
                     "rl.settings.batch_size": 2, "rl.settings.micro_batch_size": 32,
                     "rl.settings.rollout_batch_size": 2, "rl.settings.probe_prompts": 2,
                     "evaluate.max_rows": 16, "evaluate.valid_max_rows": 16})
    params = [f"{key}={value}" for key, value in caps.items()]
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    with open(out / "kedro.log", "w") as log:
        try:
            rc = subprocess.run([sys.executable, "-m", "kedro", "run", "--config=conf/paper_gpu.yml",
                                 "--params=" + ",".join(params)], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - start, root / "data" / "demo", str(out / "kedro.log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda | cpu")
    parser.add_argument("--shape", default="0.5b", choices=("0.5b", "tiny"))
    parser.add_argument("--llm-path", default=os.environ.get("LLM_PATH"),
                        help="a real Qwen2.5-Instruct folder instead of the shape (default: $LLM_PATH)")
    parser.add_argument("--embedding-path", default=os.environ.get("EMBEDDING_PATH"),
                        help="sentence-transformers folder for the kedro check (default: $EMBEDDING_PATH, "
                             "else the offline MiniLM package)")
    parser.add_argument("--skip", nargs="*", default=[], choices=CHECKS)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--kedro-timeout", type=int, default=420)
    args = parser.parse_args(argv)

    from singer_rec import decoding, modeling
    from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss
    from singer_rec.shaped_models import write_qwen25_folder
    from singer_rec.sid.tokens import sid_tokens

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("paper_shape_check: no CUDA device visible to torch", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    paper = args.shape == "0.5b" or bool(args.llm_path)
    # the paper's sizes at its shape; a few rows for the tiny CPU smoke run
    sft_rows, sft_micro, beam_prompts, rl_prompts = (128, 32, 32, 16) if paper else (32, 16, 8, 4)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="paper_shape_check-"))
    work.mkdir(parents=True, exist_ok=True)
    bf16 = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    print(f"paper-shape check on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}")
    print("| check | value | result |")
    print("|---|---|---|")
    try:
        # ---- the model folder and the SID-token model, as the SFT stage builds it (hf preset)
        start = time.perf_counter()
        built = False
        with guard("model"):
            if args.llm_path:
                folder, origin = Path(args.llm_path), f"LLM_PATH {args.llm_path}"
            else:
                folder = write_qwen25_folder(work / f"qwen25-{args.shape}", args.shape)
                origin = f"Qwen2.5-{args.shape} shape, random weights"
            model_cfg = {"preset": "hf", "hf": {"path": str(folder)}}
            real_tokens = len(modeling.base_tokenizer(model_cfg))
            codebook = 256 if paper else 16
            sids = catalogue(2048 if codebook == 256 else 200, codebook, seed=0)
            sid_vocab = modeling.sid_vocabulary_for(sids)
            model, tokenizer = modeling.build_model(model_cfg, [], sid_vocab)
            params = sum(p.numel() for p in model.parameters())
            report("model", "hf preset + SID tokens", f"{origin}; {params / 1e6:.1f}M parameters, {len(sid_vocab)} SID "
                   f"tokens, built in {time.perf_counter() - start:.1f} s", True)
            built = True
        if not built:
            return 1

        sid_ids = modeling.sid_token_ids(tokenizer, sid_vocab)
        embedding = model.get_input_embeddings().weight.detach()
        if "sid_rows" in args.skip:
            report("sid_rows", "SID rows = mean of real rows", "-", None)
        else:
            with guard("sid_rows"):
                original = original_embedding(folder)
                rows = embedding.shape[0]
                mean = original[:real_tokens].double().mean(dim=0).float() if original is not None else None
                padding = original[real_tokens:] if original is not None else torch.empty(0, embedding.shape[1])
                sid_rows = embedding[sid_ids]
                checks = {
                    "a multiple of 64 rows": rows % modeling.ROW_MULTIPLE == 0 and rows >= len(tokenizer),
                    "SID ids after the real tokens": min(sid_ids) >= real_tokens,
                    "real rows untouched": original is not None and torch.equal(embedding[:real_tokens], original[:real_tokens]),
                    "SID rows = mean": mean is not None and torch.allclose(sid_rows, mean.expand_as(sid_rows), atol=1e-6),
                    "no SID row is a padding row": not any(bool((padding == row).all(dim=1).any()) for row in sid_rows)
                    and bool(sid_rows.norm(dim=1).min() > 0),
                    "head tied": not model.config.tie_word_embeddings
                    or model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr(),
                }
                failed = [name for name, ok in checks.items() if not ok]
                report("sid_rows", "SID rows = mean of real rows, none a padding row",
                       f"{len(sid_ids)} SID rows, {real_tokens:,} real rows, matrix {rows:,} rows"
                       + (f"; failed: {', '.join(failed)}" if failed else ""), not failed)

        # distinct SID rows from here on (fresh ones are all equal: every candidate would tie)
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            scale = float(embedding[:real_tokens].std())
            offset = torch.randn((len(sid_ids), embedding.shape[1]), generator=g) * scale
            model.get_input_embeddings().weight[sid_ids] += offset
        model.to(device)
        trie = decoding.PrefixTrie.build([modeling.sid_token_ids(tokenizer, sid_tokens(s)) for s in sids],
                                         model.get_input_embeddings().weight.shape[0]).to(device)
        examples = sft_batch(tokenizer, sids, sft_rows, seed=2)
        prompts = prompt_ids(tokenizer, examples)

        if "beam" in args.skip:
            report("beam", "top-10 overlap float32 vs bf16", "-", None)
        else:
            with guard("beam"):
                model.eval()
                chosen = prompts[:beam_prompts]
                found = {}
                for name, dtype in (("fp32", None), ("bf16", bf16)):
                    sync(device)
                    start = time.perf_counter()
                    result = decoding.beam_search(model, chosen, trie, num_beams=20, pad_token_id=tokenizer.pad_token_id,
                                                  autocast_dtype=dtype)
                    sync(device)
                    found[name] = (result.items, time.perf_counter() - start)
                overlap = sum(len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(found["fp32"][0], found["bf16"][0])) / len(chosen)
                top1 = sum(a[0] == b[0] for a, b in zip(found["fp32"][0], found["bf16"][0])) / len(chosen)
                report("beam", f"top-10 overlap float32 vs bf16 ({len(chosen)} prompts, beam 20)",
                       f"{overlap:.3f} (top-1 equal {top1:.2f}; {found['fp32'][1]:.1f} s / {found['bf16'][1]:.1f} s)",
                       overlap >= 0.8)

        if "sft" in args.skip:
            report("sft", "bf16 step of 128", "-", None)
        else:
            with guard("sft"):
                model.train()
                reset_peak(device)
                losses, seconds = sft_steps(model, tokenizer, examples, device, steps=3, micro=sft_micro, lr=3e-4,
                                            dtype=bf16)
                ok = all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
                report("sft", f"bf16 step of {sft_rows} (micro-batches of {sft_micro}), lr 3e-4",
                       f"{min(seconds[1:]):.2f} s/step ({sft_rows / min(seconds[1:]):.0f} samples/s), peak {peak_gib(device)}, "
                       f"loss {losses[0]:.3f} -> {losses[-1]:.3f}", ok)
                model.zero_grad(set_to_none=True)

        if "rl" in args.skip:
            report("rl", "micro-batch, KL at step 1", "-", None)
        else:
            with guard("rl"):
                reference = copy.deepcopy(model).eval().requires_grad_(False)
                group_prompts = prompts[:rl_prompts]
                model.eval()
                rollouts = decoding.beam_search(model, group_prompts, trie, num_beams=16,
                                                pad_token_id=tokenizer.pad_token_id, autocast_dtype=bf16)
                model.train()
                rows = [(p, trie.sequences[item]) for p, items in zip(group_prompts, rollouts.items) for item in items]
                reset_peak(device)
                start = time.perf_counter()
                from singer_rec.training import common

                with common.autocast(device, bf16):
                    policy = completion_logprobs(model, [p for p, _ in rows], [c for _, c in rows], tokenizer.pad_token_id)
                    with torch.no_grad():
                        ref = completion_logprobs(reference, [p for p, _ in rows], [c for _, c in rows], tokenizer.pad_token_id)
                g = torch.Generator().manual_seed(3)
                rewards = torch.rand((len(group_prompts), 16), generator=g)
                advantages = torch.cat([group_advantages(r) for r in rewards]).to(device)
                parts = grpo_loss(policy.logp, policy.logp.detach(), ref.logp, advantages, policy.mask, beta=0.1)
                parts.loss.backward()
                sync(device)
                grads = math.isfinite(float(sum(p.grad.float().norm() for p in model.parameters() if p.grad is not None)))
                report("rl", f"micro-batch of {len(rows)} ({len(group_prompts)} prompts x k=16), KL at step 1",
                       f"KL {parts.kl:.2e}, {time.perf_counter() - start:.2f} s forward+backward, peak {peak_gib(device)}",
                       abs(parts.kl) < 1e-5 and grads and math.isfinite(float(parts.loss)))
                model.zero_grad(set_to_none=True)
                del reference, policy, ref, parts

        if "lora" in args.skip:
            report("lora", "step + save/reload", "-", None)
        else:
            with guard("lora"):
                lora = modeling.apply_lora(copy.deepcopy(model), {"r": 8, "alpha": 16, "dropout": 0.0}, sid_ids).to(device)
                check_prompts = prompts[:4]
                lora.eval()
                before = logits_of(lora, check_prompts, device)
                lora.train()
                sft_steps(lora, tokenizer, examples[:sft_micro], device, steps=1, micro=sft_micro, lr=1e-3, dtype=bf16)
                lora.eval()
                after = logits_of(lora, check_prompts, device)
                target = work / "lora_model"
                sid_map = {f"i{k}": sid for k, sid in enumerate(sids)}
                start = time.perf_counter()
                modeling.save_model_folder(lora, tokenizer, {"preset": "hf", "sid_map": sid_map}, target)
                reloaded, _, _ = modeling.load_model_folder(target, device=str(device))
                saved_s = time.perf_counter() - start
                again = logits_of(reloaded, check_prompts, device)
                diff = float((again - after).abs().max())
                moved = float((after - before).abs().max())
                report("lora", "step + save (merged) / reload, largest logit difference",
                       f"{diff:.2e} (the step moved logits by {moved:.2e}; save+reload {saved_s:.1f} s)",
                       diff <= 1e-3 * max(1.0, float(after.abs().max())) and moved > 0)
                del lora, reloaded
                shutil.rmtree(target, ignore_errors=True)

        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

        if "kedro" in args.skip:
            report("kedro", "run --config=conf/paper_gpu.yml (demo)", "-", None)
        else:
            with guard("kedro"):
                embedding_path = args.embedding_path
                if not embedding_path:
                    try:
                        from singer_rec.sid.encoders import minilm_model_path

                        embedding_path = str(minilm_model_path())
                    except (ImportError, FileNotFoundError):
                        embedding_path = None
                if not embedding_path:
                    report("kedro", "run --config=conf/paper_gpu.yml (demo)", "no embedding model (EMBEDDING_PATH)", None)
                else:
                    rc, wall, data, log = run_kedro(folder, embedding_path, device, work, args.kedro_timeout)
                    value = f"rc={rc} in {wall:.0f} s (log {log})"
                    ok = rc == 0
                    if ok:
                        from singer_rec.modeling import read_meta, training_seconds

                        metrics = {m: json.loads((data / "08_reporting" / m / "test_metrics.json").read_text())
                                   for m in ("sft", "rl")}
                        model_dir = data / "06_models" / "rl_model"
                        versions = sorted(p for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []
                        folder_meta = read_meta(versions[-1] / "rl_model") if versions else {}
                        trained = training_seconds(folder_meta)
                        value = (f"ok in {wall:.0f} s; SFT {trained.get('sft', float('nan')):.0f} s, RL "
                                 f"{trained.get('rl', float('nan')):.0f} s; NDCG@10 sft {metrics['sft']['NDCG@10']:.4f}, "
                                 f"rl {metrics['rl']['NDCG@10']:.4f} on {metrics['rl']['n']} rows")
                        ok = read_meta(sorted((data / "06_models" / "sft_model").iterdir())[-1] / "sft_model")["preset"] == "hf"
                    report("kedro", "run --config=conf/paper_gpu.yml (demo, few steps)", value, ok)
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if "FAIL" in RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
