#!/usr/bin/env bash
# Fine-tune and evaluate with models and data from the hub (HF's usual recipe: SQuAD v2, 2 epochs).
#   MODEL_PATH  hub id or folder (default google-bert/bert-base-uncased)
#   SQUAD_PATH  hub dataset name (default squad_v2)    OUTPUT_DIR  where results go
#   NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# Extra arguments go to qa.py (e.g. --bf16 --tf32 true --per_device_train_batch_size 32).
set -euo pipefail
source "$(dirname "$0")/scripts/launch.sh"
launch --model_name_or_path "${MODEL_PATH:-google-bert/bert-base-uncased}" --dataset_name "${SQUAD_PATH:-squad_v2}" \
  --version_2_with_negative --do_train --do_eval \
  --per_device_train_batch_size 12 --learning_rate 3e-5 --num_train_epochs 2 \
  --max_seq_length 384 --doc_stride 128 --report_to none \
  --output_dir "${OUTPUT_DIR:-$REPO/outputs/train_online}" "$@"
