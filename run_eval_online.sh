#!/usr/bin/env bash
# Evaluate a model on SQuAD v2's validation split from the hub.
#   MODEL_PATH  hub id or folder (default deepset/roberta-base-squad2)
#   SQUAD_PATH  hub dataset name (default squad_v2)    OUTPUT_DIR  where results go
#   NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# Extra arguments go to qa.py.
set -euo pipefail
source "$(dirname "$0")/scripts/launch.sh"
launch --model_name_or_path "${MODEL_PATH:-deepset/roberta-base-squad2}" --dataset_name "${SQUAD_PATH:-squad_v2}" \
  --version_2_with_negative --do_eval --per_device_eval_batch_size 64 \
  --max_seq_length 384 --doc_stride 128 --report_to none \
  --output_dir "${OUTPUT_DIR:-$REPO/outputs/eval_online}" "$@"
