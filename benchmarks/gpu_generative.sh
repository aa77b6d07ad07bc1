#!/usr/bin/env bash
# Generative QA on a GPU machine: fine-tune t5-small on SQuAD v2 with qa.py (HF run_seq2seq_qa.py's reference
# command, translated) and print the scores, the null threshold and the time. Needs the hub (or t5-small and
# squad_v2 in the local caches: set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1). CPU-only machines are refused:
# this is hours of work there.
#
#   bash benchmarks/gpu_generative.sh [OUTPUT_DIR] [extra qa.py flags...]
#
# QUICK=1 trains on 2,000 questions and evaluates 1,000 (a few minutes): a check that the path runs on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/t5-small-squad2}
shift || true
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_generative.sh: no CUDA device; run it on a GPU machine" >&2
  exit 1
fi
LIMITS=()
if [[ "${QUICK:-0}" == 1 ]]; then
  LIMITS=(--max_train_samples 2000 --max_eval_samples 1000)
fi
start=$(date +%s)
python qa.py --model_name_or_path "${MODEL:-google-t5/t5-small}" --dataset_name squad_v2 --version_2_with_negative \
  --context_column context --question_column question --answer_column answers --do_train --do_eval \
  --predict_with_generate --per_device_train_batch_size 12 --per_device_eval_batch_size 32 --learning_rate 3e-5 \
  --num_train_epochs 2 --max_seq_length 384 --doc_stride 128 --generation_num_beams 4 --bf16 --tf32 true \
  --report_to none --overwrite_output_dir --output_dir "$OUT" "${LIMITS[@]}" "$@"
end=$(date +%s)
python - "$OUT" "$((end - start))" <<'PY'
import json, sys
r = json.load(open(f"{sys.argv[1]}/all_results.json"))
keys = ["eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_best_f1", "eval_best_f1_thresh",
        "eval_examples_per_second", "train_runtime"]
print("  ".join(f"{k}={r[k]}" for k in keys if k in r), f" wall_s={sys.argv[2]}")
PY
