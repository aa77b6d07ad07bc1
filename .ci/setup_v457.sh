#!/usr/bin/env bash
# Create (or reuse) the transformers-4.57.x virtualenv used for the legacy-model tests
# (ErnieM, Mega, Nezha, QDQBert exist only in transformers <= 4.57.x).
#
#   bash .ci/setup_v457.sh [VENV_DIR]      (default: <repo>/.venv-v457)
#
# The venv sees the base interpreter's site-packages through a .pth file (after its own), so it
# reuses the base's CPU torch whether the base is a system python or itself a venv
# (--system-site-packages would see only the system's). torch is pinned (as a constraint) to the
# installed version so pip can never pull a multi-GB CUDA build. Everything else the legacy models
# need is pinned in requirements-v457.txt and installed here when the base lacks it.
# Idempotent: if the venv already matches the pins (stamp + import check) nothing is installed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-v457}"
REQ="$REPO/requirements-v457.txt"
PY="${PYTHON:-$(command -v python3 || command -v python)}"

[ -f "$REQ" ] || { echo "setup_v457: missing $REQ" >&2; exit 1; }

TORCH_VER="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" || {
  echo "setup_v457: '$PY' cannot import torch; install CPU torch in the base interpreter first" >&2
  exit 1
}

# Stamp = pins + base interpreter + torch version; a change in any of them forces a reinstall.
STAMP_WANT="$( { cat "$REQ"; "$PY" -c 'import sys; print(sys.executable, sys.version)'; echo "torch=$TORCH_VER"; } | sha256sum | cut -d' ' -f1)"
STAMP_FILE="$VENV/.v457-stamp"

check() {
  "$VENV/bin/python" - <<'PYEOF'
import warnings; warnings.simplefilter("ignore")
import os, sys
import torch, transformers, tokenizers, huggingface_hub, datasets, evaluate, accelerate
import pytorch_quantization, sentencepiece
assert transformers.__version__.startswith("4.57."), transformers.__version__
assert os.path.realpath(transformers.__file__).startswith(os.path.realpath(sys.prefix)), transformers.__file__
from transformers import (ErnieMForQuestionAnswering, MegaForQuestionAnswering,
                          NezhaForQuestionAnswering, QDQBertForQuestionAnswering,
                          Trainer, TrainingArguments)
print("python", sys.version.split()[0], sys.executable)
for m in (torch, transformers, tokenizers, huggingface_hub, datasets, evaluate, accelerate, pytorch_quantization):
    print(f"  {m.__name__:22s} {m.__version__}")
PYEOF
}

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP_FILE" 2>/dev/null)" = "$STAMP_WANT" ] \
   && OUT="$(check 2>&1)"; then
  echo "setup_v457: $VENV is up to date"
  echo "$OUT"
  exit 0
fi
echo "setup_v457: creating $VENV (base $PY, torch $TORCH_VER)"
"$PY" -m venv --clear "$VENV"
BASE_SITE="$("$PY" -c 'import site, sysconfig; print("\n".join(dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])))')"
VENV_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$BASE_SITE" > "$VENV_SITE/_qa_base_site.pth"
# The venv's bundled setuptools (65.x) would shadow the system one and break torch's
# setuptools>=77 requirement; let the system copy show through instead.
"$VENV/bin/python" -m pip uninstall -q -y setuptools >/dev/null 2>&1 || true
CONS="$(mktemp)"; LOG="$(mktemp)"; trap 'rm -f "$CONS" "$LOG"' EXIT
echo "torch==$TORCH_VER" > "$CONS"
rc=0
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q \
    -c "$CONS" -r "$REQ" >"$LOG" 2>&1 || rc=$?
# Drop known noise: this machine's extra-index warnings, and the resolver's complaints
# about system-site packages built for transformers 5 (sentence-transformers, datasets 5).
grep -v -e "is ignored: it is neither a file nor a directory" \
        -e "dependency resolver does not currently take into account" \
        -e "^sentence-transformers .* requires" \
        -e "^datasets .* requires huggingface-hub" "$LOG" || true
[ "$rc" -eq 0 ] || { echo "setup_v457: pip install failed (rc=$rc)" >&2; exit "$rc"; }
check
echo "$STAMP_WANT" > "$STAMP_FILE"
