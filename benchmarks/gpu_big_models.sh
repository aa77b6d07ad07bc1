#!/usr/bin/env bash
# Big-model engines on a GPU machine: DeepSpeed ZeRO-2 and ZeRO-3 (configs/), and FSDP, each with 1 and 2
# processes, fine-tuning a Llama-class model for extractive QA with qa.py. Prints one line per run:
# training tokens/s (non-padding tokens seen / train runtime), samples/s, and peak GPU memory of rank 0.
# Needs GPUs (CUDA), deepspeed for the ZeRO runs, the model and the data (hub or local caches).
#
# With LoRA (--lora_r 16, bf16 weights, the head in full) on one GPU and on two (DDP), as issue 21 asks for a
# 7B model: MODEL=meta-llama/Llama-2-7b-hf STEPS=50 ONLY=lora bash benchmarks/gpu_big_models.sh
#
#   bash benchmarks/gpu_big_models.sh [extra qa.py flags...]
#   MODEL=meta-llama/Llama-3.2-1B DATA=squad_v2 STEPS=30 bash benchmarks/gpu_big_models.sh
#   ONLY=zero3 ...: only the runs whose name starts so
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T}
DATA=${DATA:-squad_v2}
STEPS=${STEPS:-30}
OUT=${OUT:-out/bench-big}
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= 1 else 1)"; then
  echo "gpu_big_models.sh: no CUDA device; run it on a GPU machine" >&2
  exit 1
fi
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
run() {  # name nproc engine-flags...
  local name=$1 nproc=$2; shift 2
  if [[ "$name" != "${ONLY:-}"* ]]; then return; fi
  if (( nproc > GPUS )); then echo "$name: skipped (needs $nproc GPUs, $GPUS here)"; return; fi
  local dir="$OUT/$name"
  torchrun --nproc_per_node "$nproc" --master_port $((29600 + RANDOM % 300)) qa.py \
    --model_name_or_path "$MODEL" --dataset_name "$DATA" --version_2_with_negative --do_train \
    --max_steps "$STEPS" --per_device_train_batch_size 4 --learning_rate 2e-5 --bf16 --max_seq_length 384 \
    --doc_stride 128 --gradient_checkpointing --include_num_input_tokens_seen non_padding --logging_steps 5 \
    --save_strategy no --report_to none --overwrite_output_dir --output_dir "$dir" "$@" "${EXTRA[@]}" \
    > "$dir.log" 2>&1 || { echo "$name: FAILED (see $dir.log)"; return; }
  python - "$dir" "$name" <<'PY'
import json, sys
d, name = sys.argv[1], sys.argv[2]
r = json.load(open(f"{d}/all_results.json"))
state = json.load(open(f"{d}/trainer_state.json"))
tokens = state.get("num_input_tokens_seen") or 0
print(f"{name}: {tokens / r['train_runtime']:,.0f} tokens/s, {r['train_samples_per_second']:.2f} samples/s, "
      f"peak {r.get('run_peak_gpu_mib', float('nan')):,.0f} MiB on GPU 0")
PY
}
EXTRA=("$@")
mkdir -p "$OUT"
for n in 1 2; do
  run "zero2-x$n" "$n" --deepspeed configs/ds_zero2.json
  run "zero3-x$n" "$n" --deepspeed configs/ds_zero3.json
  run "fsdp-x$n" "$n" --fsdp "full_shard auto_wrap" --fsdp_config configs/fsdp_full_shard.json
  run "lora-x$n" "$n" --lora_r 16 --learning_rate 2e-4 --torch_dtype bfloat16
done
