#!/usr/bin/env bash
# Fine-tune and evaluate with no network. With nothing set, trains all-MiniLM-L6-v2 (from its PyPI
# package) on the SQuAD v2 sample in data/ and prints EM/F1: a first run that works on a laptop.
#   MODEL_PATH  local model folder           SQUAD_PATH  file, or folder with train-v2.0.json + dev-v2.0.json
#   OUTPUT_DIR  where results go             NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# Extra arguments go to qa.py and override these defaults.
# It logs the loss every 10% of the steps (every 2 of the sample's 12) and evaluates after each epoch, so the
# run leaves every picture README shows: training_loss.png and training_eval.png need those log entries.
set -euo pipefail
source "$(dirname "$0")/scripts/launch.sh"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
model="$(model_or_default)"
squad="${SQUAD_PATH:-$REPO/data/sample_squad_v2.json}"
train="$(squad_file "$squad" train-v2.0.json)"
dev="$(squad_file "$squad" dev-v2.0.json)"
launch --model_name_or_path "$model" --train_file "$train" --validation_file "$dev" \
  --version_2_with_negative --do_train --do_eval \
  --per_device_train_batch_size 12 --learning_rate 5e-5 --num_train_epochs 3 \
  --max_seq_length 384 --doc_stride 128 --logging_steps 0.1 --eval_strategy epoch \
  --save_strategy no --report_to none \
  --output_dir "${OUTPUT_DIR:-$REPO/outputs/train_offline}" --overwrite_output_dir "$@"
