#!/usr/bin/env bash
# The pipeline and the server on one GPU: qakit.pipeline against transformers 4.57's pipeline (fp32 and bf16,
# one window at a time and in batches), then the server under load against one request at a time, on 2,000
# dev-v2.0 questions with MiniLM (a seeded span head), or MODEL_DIR. Needs the second environment
# (bash .ci/setup_v457.sh) and ../shared/data/squad. CPU-only machines are refused.
#
#   bash benchmarks/gpu_pipeline.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_pipeline.sh: no CUDA device; run it on a GPU machine" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL=(); [[ $# -ge 1 ]] && MODEL=(--model "$1")
for batch in 1 32; do
  .venv-v457/bin/python benchmarks/bench_pipeline.py "${MODEL[@]}" --n 2000 --device cuda --batch_size "$batch" \
    --bf16_batch_size 64
done
python benchmarks/bench_server.py "${MODEL[@]}" --questions 2000 --clients 1 --requests 200 --batch_size 64
python benchmarks/bench_server.py "${MODEL[@]}" --questions 2000 --clients 16 --requests 100 --batch_size 64
