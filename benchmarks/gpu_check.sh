#!/usr/bin/env bash
# GPU figures in one command (about 5-8 minutes on one GPU; installs nothing, reaches no network):
# the decoder benchmark, an SFT step and an RL step benchmark, and a short demo `kedro run` with
# device cuda, then one results table. Run from the repository root of an installed checkout:
#
#   bash benchmarks/gpu_check.sh            # logs and the table under benchmarks/.gpu_check/
#
# The decoder and RL benchmarks need ../shared/data/amazon18/minionerec (real Industrial SIDs and
# titles); without it those rows say "skipped".
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
: > "$OUT/status.txt"

# 1. decoder: ours vs generate vs the bare-forward floor, scratch preset, beam 16
run decode 120 python benchmarks/decode/bench_decode.py --preset scratch --beams 16 --prompts 256 --batch-size 64 \
  --repeats 3 --threads 4 --device cuda
# 2. RL step on Industrial-shaped data (32 prompts x k = 16), float32 and bf16 autocast
run rl_fp32 150 python benchmarks/rl/bench_rl_step.py --steps 6 --threads 4 --device cuda
run rl_bf16 150 python benchmarks/rl/bench_rl_step.py --steps 6 --threads 4 --device cuda --set autocast=auto
# 3. the demo chain with every stage on the GPU (ingest -> ... -> evaluate)
run demo 300 kedro run --params="sft.train.device=cuda,rl.device=cuda,evaluate.device=cuda"
# 4. SFT step on the demo's SFT rows (written by 3)
ITEM_SIDS=$(ls -t data/demo/04_feature/item_sids.parquet/*/item_sids.parquet 2>/dev/null | head -1)
if [ -n "$ITEM_SIDS" ]; then
  run sft 120 python benchmarks/sft/bench_sft_step.py --rows data/demo/05_model_input/sft_dataset_train.parquet \
    --items data/demo/02_intermediate/items.parquet --item-sids "$ITEM_SIDS" --repeats 5 --device cuda
else
  echo "sft rc=skipped (no demo item_sids)" | tee -a "$OUT/status.txt"
fi

python - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
status = dict(re.match(r"(\S+) (.*)", line).groups() for line in (out / "status.txt").read_text().splitlines())
def log(name):
    path = out / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""
def find(name, pattern):
    found = re.findall(pattern, log(name), flags=re.M)
    return found[-1] if found else f"- ({status.get(name, 'not run')})"
rows = [
    ("decoder, scratch, beam 16, ours prompts/s (wall)", find("decode", r"^\| scratch \| 16 \| wall \| ([\d.]+) \|")),
    ("decoder, ours time / floor time (wall)", find("decode", r"^\| scratch \| 16 \| wall \|.*\| ([\d.]+) \|$")),
    ("RL step, 32 prompts x k=16, float32, s", find("rl_fp32", r"^\| \*\*step \(wall clock\)\*\* \| \*\*([\d.]+)\*\*")),
    ("RL step, 32 prompts x k=16, bf16 autocast, s", find("rl_bf16", r"^\| \*\*step \(wall clock\)\*\* \| \*\*([\d.]+)\*\*")),
    ("SFT step, bf16 length-sorted, samples/s (wall)", find("sft", r"^\| bf16 autocast, length-sorted \| ([\d.]+) \|")),
    ("demo kedro run (cuda), status", status.get("demo", "not run")),
]
for model in ("sft", "rl"):
    path = pathlib.Path("data/demo/08_reporting") / model / "test_metrics.json"
    if path.exists():
        metrics = json.loads(path.read_text())
        flat = metrics.get("metrics", metrics)
        rows.append((f"demo {model} test HR@10 / NDCG@10",
                     f"{flat.get('HR@10', flat.get('hr@10', '?'))} / {flat.get('NDCG@10', flat.get('ndcg@10', '?'))}"))
print(f"GPU check: {(out / 'device.txt').read_text().strip()}")
print("| measure | value |")
print("|---|---|")
for name, value in rows:
    print(f"| {name} | {value} |")
EOF
