#!/usr/bin/env bash
# GPU figures in one command, one results table (installs nothing, reaches no network):
#   1-3. the decoder benchmark and an RL step benchmark on real Industrial data, float32 and bf16;
#   4.   the demo chain (`kedro run`) with every stage on the GPU, then an SFT step benchmark on its rows;
#   5.   the paper's path at the paper's model shape (benchmarks/gpu/paper_shape_check.py): a
#        Qwen2.5-0.5B-shaped model through the hf preset (SID rows, float32/bf16 beam agreement, a bf16
#        SFT step of 128 with peak memory, an RL micro-batch with KL 0 at step 1, LoRA save/reload),
#        then `kedro run --config=conf/paper_gpu.yml` on the demo for a few steps per stage.
# Run from the repository root of an installed checkout:
#
#   bash benchmarks/gpu_check.sh                       # logs and the table under benchmarks/.gpu_check/
#   LLM_PATH=/models/Qwen2.5-0.5B-Instruct EMBEDDING_PATH=/models/Qwen3-Embedding-0.6B bash benchmarks/gpu_check.sh
#
# Without LLM_PATH the paper-shape rows use random weights of the 0.5B shape; without EMBEDDING_PATH
# its kedro run embeds with the offline MiniLM package. Rows 1-3 need ../shared/data/amazon18/minionerec
# (real Industrial SIDs and titles); without it they say "skipped", as does any row whose input is
# missing. Time, estimated on paper (no GPU has run it yet): about 10 minutes on one H100 without the
# real data (demo ≈ 3, SFT benchmark ≈ 1, paper shape ≈ 6-7), about 3 more with it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${GPU_CHECK_OUT:-benchmarks/.gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

python - <<'EOF' || { echo "gpu_check: no CUDA device visible to torch" >&2; exit 1; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
python -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$OUT/device.txt"

run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/status.txt"
}
skip() {  # name, reason
  echo "$1 skipped ($2)" | tee -a "$OUT/status.txt"
}
: > "$OUT/status.txt"

MINIONEREC=../shared/data/amazon18/minionerec
if [ -d "$MINIONEREC" ]; then
  # 1. decoder: ours vs generate vs the bare-forward floor, scratch preset, beam 16
  run decode 120 python benchmarks/decode/bench_decode.py --preset scratch --beams 16 --prompts 256 --batch-size 64 \
    --repeats 3 --threads 4 --device cuda
  # 2-3. RL step on Industrial-shaped data (32 prompts x k = 16), float32 and bf16 autocast
  run rl_fp32 150 python benchmarks/rl/bench_rl_step.py --steps 4 --threads 4 --device cuda --set autocast=off
  run rl_bf16 150 python benchmarks/rl/bench_rl_step.py --steps 4 --threads 4 --device cuda --set autocast=auto
else
  for name in decode rl_fp32 rl_bf16; do skip "$name" "no $MINIONEREC"; done
fi
# 4. the demo chain with every stage on the GPU (ingest -> ... -> evaluate)
run demo 300 kedro run --params="sft.train.device=cuda,rl.device=cuda,evaluate.device=cuda"
# 4b. SFT step on the demo's SFT rows (written by 4)
ITEM_SIDS=$(ls -t data/demo/04_feature/item_sids.parquet/*/item_sids.parquet 2>/dev/null | head -1)
if [ -n "$ITEM_SIDS" ]; then
  run sft 120 python benchmarks/sft/bench_sft_step.py --rows data/demo/05_model_input/sft_dataset_train.parquet \
    --items data/demo/02_intermediate/items.parquet --item-sids "$ITEM_SIDS" --repeats 5 --device cuda
else
  skip sft "no demo item_sids"
fi
# 5. the paper's path at the paper's shape (LLM_PATH: a real Qwen2.5-Instruct folder instead)
run paper 660 python benchmarks/gpu/paper_shape_check.py --device cuda --shape 0.5b --out "$OUT/paper"

python - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
status = dict(re.match(r"(\S+) (.*)", line).groups() for line in (out / "status.txt").read_text().splitlines())
def log(name):
    path = out / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""
def find(name, pattern):
    """(value, result): the last match in the step's log, else its status."""
    found = re.findall(pattern, log(name), flags=re.M)
    if found:
        return found[-1], "measured"
    state = status.get(name, "not run")
    if state.startswith("skipped"):
        return f"- {state[len('skipped '):]}", "skipped"
    return f"- ({state})", "FAIL"
rows = [
    ("decoder, scratch, beam 16, ours prompts/s (wall)", *find("decode", r"^\| scratch \| 16 \| wall \| ([\d.]+) \|")),
    ("decoder, ours time / floor time (wall)", *find("decode", r"^\| scratch \| 16 \| wall \|.*\| ([\d.]+) \|$")),
    ("RL step, 32 prompts x k=16, float32, s", *find("rl_fp32", r"^\| \*\*step \(wall clock\)\*\* \| \*\*([\d.]+)\*\*")),
    ("RL step, 32 prompts x k=16, bf16 autocast, s", *find("rl_bf16", r"^\| \*\*step \(wall clock\)\*\* \| \*\*([\d.]+)\*\*")),
    ("SFT step, bf16 length-sorted, samples/s (wall)", *find("sft", r"^\| bf16 autocast, length-sorted \| ([\d.]+) \|")),
    ("demo kedro run (cuda), status", status.get("demo", "not run"),
     "pass" if status.get("demo", "").startswith("rc=0") else "FAIL"),
]
for model in ("sft", "rl"):
    path = pathlib.Path("data/demo/08_reporting") / model / "test_metrics.json"
    if path.exists():
        metrics = json.loads(path.read_text())
        flat = metrics.get("metrics", metrics)
        rows.append((f"demo {model} test HR@10 / NDCG@10",
                     f"{flat.get('HR@10', flat.get('hr@10', '?'))} / {flat.get('NDCG@10', flat.get('ndcg@10', '?'))}",
                     "measured"))
# the paper-shape script prints its own rows: | check: what | value | pass/FAIL/skipped |
paper_rows = [line for line in log("paper").splitlines()
              if re.match(r"^\| \w+: .* \| (pass|FAIL|skipped) \|$", line)]
if not paper_rows:
    rows.append(("paper shape check", f"- ({status.get('paper', 'not run')})", "FAIL"))
print(f"GPU check: {(out / 'device.txt').read_text().strip()} ({status.get('paper', '')} for the paper shape)")
print("| measure | value | result |")
print("|---|---|---|")
for name, value, result in rows:
    print(f"| {name} | {value} | {result} |")
for line in paper_rows:
    print(line)
EOF
