#!/usr/bin/env bash
# Evaluate a model with no network: writes eval_predictions.json, eval_nbest_predictions.json,
# eval_null_odds.json and eval_results.json. With nothing set: the model run_train_offline.sh fine-tuned, on the
# sample in data/.
#   MODEL_PATH  local model folder (default outputs/train_offline)   SQUAD_PATH  file, or folder with dev-v2.0.json
#   OUTPUT_DIR  where results go     NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# Extra arguments go to qa.py (e.g. --null_score_diff_threshold -1.5, --test_file F --do_predict).
set -euo pipefail
source "$(dirname "$0")/scripts/launch.sh"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
model="$(trained_or_default)"
dev="$(squad_file "${SQUAD_PATH:-$REPO/data/sample_squad_v2.json}" dev-v2.0.json)"
launch --model_name_or_path "$model" --validation_file "$dev" --version_2_with_negative --do_eval \
  --per_device_eval_batch_size 64 --max_seq_length 384 --doc_stride 128 --report_to none \
  --output_dir "${OUTPUT_DIR:-$REPO/outputs/eval_offline}" "$@"
