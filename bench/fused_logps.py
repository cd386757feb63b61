"""Per-token log-probs from the last hidden states on CPU: forward + backward of
``logp = log softmax(hidden @ weight.T)[label]`` for the plain path (full logits, then
`token_logps`), ours (`fused_token_logps`, at several ``chunk_elements``) and the maintained
fused implementations that run on a CPU at all (Liger-Kernel, Apple's cut-cross-entropy).

    python bench/fused_logps.py --json out.json      # default grid: ~35 min here, see below
    python bench/fused_logps.py --n 2048 --shapes smol-135m --impls plain ours --chunks 21 23
    python bench/fused_logps.py --n 8192 --impls plain ours cce --sweep-n   # no chunk sweep
    python bench/fused_logps.py --check-only                     # float64 equality only
    python bench/fused_logps.py ... --json out.json --append     # add a run to one file

Default grid: N in {2048, 8192} x (H, V) in {(576, 49152) SmolLM2-135M, (960, 49152)
SmolLM2-360M, (896, 151936) Qwen2.5-0.5B}; plain, ours (chunk_elements 2**20..2**23 at
N=2048, 2**23 at N=8192), liger (N=2048 only: it is the slowest), cce. One forward+backward
of the largest point is 40-80 s on 2 cores, so the whole grid at best-of-3 does not fit the
~15 min this bench was meant to take: repeats stop once a configuration's timed calls reach
--budget-s (30 s), i.e. the big points are best of 1-2, and --n / --shapes / --impls /
--chunks cut the grid.

What is timed: one call ``logp = f(hidden, weight, labels)`` plus ``logp.backward(g)`` with a
random float32 upstream gradient ``g``; bf16 ``hidden`` (N, H) and ``weight`` (V, H) both
require grad, labels uniform in [0, V). Seeds are fixed, so every implementation sees the
same tensors. Each configuration runs in a fresh child process with 2 intra-op threads:
one warm-up call at min(N, 256) positions (the same H, V; it also triggers torch.compile
for CCE, whose graph is compiled with dynamic shapes), then the best of ``--repeats`` timed
calls at the full shape (``.grad`` cleared before each). Peak RSS is the child's VmHWM,
reset (``/proc/self/clear_refs``) once the inputs exist so the fp32 temporaries that made
them do not count; "extra" is that peak minus the RSS with the inputs in place, i.e. what
the call needs beyond its inputs, the two gradients it returns (the size of hidden +
weight) included. "bf16 dlogp" is max |logp - plain's logp| at the timed shape.

Implementations:
  plain  ``token_logps((hidden @ weight.T)[None], labels[None])[0]`` (alignment.losses).
  ours   ``fused_token_logps(hidden, weight, labels, chunk_elements=2**k)``.
  liger  liger-kernel 0.8.5's pure-torch chunked selective log-prob,
         ``liger_kernel.chunked_loss.fused_linear_ppo._ChunkedSelectiveLogProbFunction``
         (what its LigerFusedLinearGRPOLoss uses; vocabulary chunks of 4096 within position
         chunks of 2048; forward logits in fp32, backward matmuls in fp32). Liger's public
         fused linear cross-entropy (``LigerFusedLinearCrossEntropyLoss`` /
         ``LigerFusedLinearCrossEntropyFunction``) is Triton-only and fails on a CPU tensor
         with ``RuntimeError: 0 active drivers ([]). There should only be one.``
  cce    cut-cross-entropy 25.1.1, ``linear_cross_entropy(h, w, labels, impl="torch_compile",
         reduction="none")`` negated: ``torch.compile`` of the full logits + F.cross_entropy
         (the (N, V) logits are not avoided). ``impl="cce"`` is Triton-only and fails with the
         same "0 active drivers" error.
Liger and CCE are optional (``pip install --no-deps liger-kernel cut-cross-entropy``; not
project dependencies); an implementation that is not installed is reported as skipped.

Float64 check (``--check``, on by default): N=96, H=48, V=3001 in float64, values and the
gradients of hidden and weight under a random upstream gradient, each implementation vs the
plain path (ours at its default and at chunk_elements=2**12, which splits both passes).

A configuration whose full logits would not fit in the memory available (plain / cce, about
20 bytes per logit at peak) is skipped, not run into the OOM killer.

Numbers in bench/fused_logps.json: 2026-12-07, AMD EPYC, 2 cores (avx512_bf16), torch 2.13
CPU; a shared, noisy machine (load average 3.5-7 on 2 cores from other jobs): the same
point differed up to 3x between runs (plain, N=2048, Qwen head: 44-47 s, then 15.6 s), so
compare rows of one run only. The file holds four runs: 0, the default grid killed after
the N=2048 Qwen plain row (rows parsed from its log; peak RSS of ours / liger there still
counted the input-making temporaries); 1, N=2048 Qwen with chunks 2**22-2**24; 2, N=8192
plain / ours@2**23 / cce (plain at the Qwen head skipped: ~23 GB); 3, the N=2048 rerun
of plain / ours@2**23 / liger / cce at lower load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {   # name: (H, V) of the LM head
    "smol-135m": (576, 49152),
    "smol-360m": (960, 49152),
    "qwen2.5-0.5b": (896, 151936),
}
IMPLS = ("plain", "ours", "liger", "cce")


# ----------------------------------------------------------------------------- child side

def _status_gb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _impl(name: str, chunk: int | None):
    """f(hidden, weight, labels) -> (N,) log-probs, with autograd."""
    if name == "plain":
        from alignment.losses import token_logps

        return lambda h, w, y: token_logps((h @ w.T)[None], y[None])[0]
    if name == "ours":
        from alignment.losses import fused_token_logps
        from alignment.losses.logps import CHUNK_ELEMENTS

        kw = {"chunk_elements": chunk or CHUNK_ELEMENTS}
        return lambda h, w, y: fused_token_logps(h, w, y, **kw)
    if name == "liger":
        from liger_kernel.chunked_loss.fused_linear_ppo import (
            _SELECTIVE_LOGPROB_VOCAB_CHUNK_SIZE,
            _ChunkedSelectiveLogProbFunction,
        )

        return lambda h, w, y: _ChunkedSelectiveLogProbFunction.apply(
            h, w, y, None, 1.0, _SELECTIVE_LOGPROB_VOCAB_CHUNK_SIZE)
    if name == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return lambda h, w, y: -linear_cross_entropy(h, w, y, impl="torch_compile",
                                                     reduction="none")
    raise ValueError(name)


def _inputs(n, h, v, dtype, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).to(dtype)                    # post-norm scale
    weight = (torch.randn(v, h, generator=gen) * h ** -0.5).to(dtype)     # logits ~ N(0, 1)
    labels = torch.randint(0, v, (n,), generator=gen)
    grad = torch.randn(n, generator=gen, dtype=torch.float64 if dtype == torch.float64
                       else torch.float32)
    return hidden.requires_grad_(), weight.requires_grad_(), labels, grad


def child_time(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    f = _impl(cfg["impl"], cfg.get("chunk"))
    n, (hd, v) = cfg["n"], SHAPES[cfg["shape"]]
    base_gb = _status_gb("VmRSS")
    hidden, weight, labels, grad = _inputs(n, hd, v, torch.bfloat16)
    input_gb = sum(t.numel() * t.element_size() for t in (hidden, weight, labels, grad)) / 1024**3
    inputs_rss_gb = _status_gb("VmRSS")
    # the fp32 temporaries that made the inputs are not the call's: reset VmHWM to VmRSS now
    Path("/proc/self/clear_refs").write_text("5")

    def call(rows: int) -> torch.Tensor:
        hidden.grad = weight.grad = None
        h = hidden[:rows] if rows < n else hidden
        out = f(h, weight, labels[:rows])
        out.backward(grad[:rows])
        return out.detach()

    start = time.perf_counter()
    call(min(n, 256))
    warmup = time.perf_counter() - start
    times = []
    while len(times) < cfg["repeats"] and (not times or sum(times) < cfg["budget_s"]):
        start = time.perf_counter()
        out = call(n)
        times.append(time.perf_counter() - start)
    peak = _status_gb("VmHWM")
    result = {"s": min(times), "times": times, "warmup_s": warmup, "peak_rss_gb": peak,
              "base_rss_gb": base_gb, "input_gb": input_gb, "inputs_rss_gb": inputs_rss_gb,
              "extra_gb": peak - inputs_rss_gb,
              "finite": bool(torch.isfinite(out).all())}
    ref = cfg.get("ref")
    if ref:
        if cfg["impl"] == "plain":
            torch.save(out, ref)
        elif os.path.exists(ref):
            result["bf16_logp_maxdiff"] = (out - torch.load(ref)).abs().max().item()
    return result


def child_check(cfg: dict) -> dict:
    """float64: values and gradients of hidden and weight vs the plain path."""
    import torch

    torch.set_num_threads(cfg["threads"])
    n, hd, v = 96, 48, 3001
    hidden, weight, labels, grad = _inputs(n, hd, v, torch.float64, seed=1)

    def run(f):
        hidden.grad = weight.grad = None
        out = f(hidden, weight, labels)
        out.backward(grad)
        return out.detach().clone(), hidden.grad.clone(), weight.grad.clone()

    want = run(_impl("plain", None))
    results = {}
    for name, chunk in cfg["variants"]:
        label = name if chunk is None else f"{name}@2^{chunk.bit_length() - 1}"
        try:
            got = run(_impl(name, chunk))
        except Exception as err:   # noqa: BLE001 - report whatever the library raises
            results[label] = {"error": f"{type(err).__name__}: {err}"[:500]}
            continue
        results[label] = {
            "dtype": str(got[0].dtype),
            **{k: (a - b).abs().max().item()
               for k, a, b in zip(("logp", "grad_hidden", "grad_weight"), got, want,
                                  strict=True)}}
    return results


# ---------------------------------------------------------------------------- parent side

def _mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("inf")


def _installed(impl: str) -> bool:
    mod = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}.get(impl)
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def spawn(mode: str, cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, json.dumps(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"rc {proc.returncode}: " + " | ".join(tail)[-600:]}
    return json.loads(lines[-1][len("RESULT "):])


def configs(args) -> list[dict]:
    out = []
    for n in args.n:
        for shape in args.shapes:
            for impl in args.impls:
                if impl in args.smallest_n_only and n != min(args.n):
                    continue
                if impl == "ours":
                    sweep = n in args.sweep_n
                    chunks = args.chunks if sweep else [args.default_chunk]
                    out += [{"impl": impl, "n": n, "shape": shape, "chunk": 1 << k}
                            for k in chunks]
                else:
                    out.append({"impl": impl, "n": n, "shape": shape, "chunk": None})
    return out


def label(cfg: dict) -> str:
    return cfg["impl"] + (f"@2^{cfg['chunk'].bit_length() - 1}" if cfg.get("chunk") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CFG"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--chunks", type=int, nargs="+", default=[20, 21, 22, 23],
                    help="log2 of chunk_elements for ours")
    ap.add_argument("--sweep-n", type=int, nargs="*", default=[2048],
                    help="N values at which all --chunks run (default: 2048); "
                         "elsewhere ours runs at --default-chunk only")
    ap.add_argument("--default-chunk", type=int, default=23)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=30,
                    help="no further repeat once the timed calls of a configuration took this "
                         "long (so the slowest configurations run once or twice)")
    ap.add_argument("--smallest-n-only", nargs="*", default=["liger"],
                    help="implementations timed at the smallest N only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--append", action="store_true",
                    help="add this run's rows (and its meta under 'runs') to --json")
    args = ap.parse_args()

    if args.child:
        mode, cfg = args.child[0], json.loads(args.child[1])
        result = child_time(cfg) if mode == "time" else child_check(cfg)
        print("RESULT " + json.dumps(result), flush=True)
        return

    impls = [i for i in args.impls if _installed(i)]
    skipped = sorted(set(args.impls) - set(impls))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", flush=True)
    check = {}
    if not args.no_check:
        variants = [(i, None) for i in impls if i != "plain"]
        if "ours" in impls:
            variants.append(("ours", 1 << 12))
        check = spawn("check", {"threads": args.threads, "variants": variants}, args.timeout)
        print("float64 check (max |diff| vs plain: logp, grad_hidden, grad_weight):")
        for k, r in check.items():
            print(f"  {k:10s} " + (r["error"] if "error" in r else
                                   f"{r['logp']:.1e} {r['grad_hidden']:.1e} "
                                   f"{r['grad_weight']:.1e}  ({r['dtype']})"), flush=True)
    if args.check_only:
        return
    args.impls = impls
    rows = []
    t0 = time.perf_counter()
    print(f"\n{'impl':10s} {'N':>5s} {'shape':13s} {'s fwd+bwd':>9s} {'peak GB':>8s} "
          f"{'extra GB':>8s} {'reps':>4s} {'bf16 dlogp':>10s} {'f64 max|diff|':>13s}", flush=True)
    ref = f"/tmp/fused_logps_ref_{os.getpid()}.pt"
    for cfg in configs(args):
        cfg = {**cfg, "threads": args.threads, "repeats": args.repeats,
               "budget_s": args.budget_s,
               "ref": f"{ref}.{cfg['n']}.{cfg['shape']}"}
        hd, v = SHAPES[cfg["shape"]]
        per_logit = {"plain": 20, "cce": 6}.get(cfg["impl"], 0)   # bytes at peak, measured
        need = per_logit * cfg["n"] * v / 1024**3
        if need > 0.9 * _mem_available_gb():
            res = {"error": f"skipped: needs ~{need:.0f} GB, {_mem_available_gb():.0f} GB "
                            "available"}
        else:
            res = spawn("time", cfg, args.timeout)
        cfg.pop("ref")
        rows.append({**cfg, "label": label(cfg), **res})
        key = label(cfg) if cfg["impl"] != "ours" or cfg["chunk"] != 1 << 23 else "ours"
        f64 = check.get(key) or check.get(cfg["impl"]) or {}
        f64s = (f"{max(f64[k] for k in ('logp', 'grad_hidden', 'grad_weight')):.1e}"
                if "logp" in f64 else "-")
        if "error" in res:
            print(f"{label(cfg):10s} {cfg['n']:5d} {cfg['shape']:13s} {res['error']}",
                  flush=True)
        else:
            dl = res.get("bf16_logp_maxdiff")
            print(f"{label(cfg):10s} {cfg['n']:5d} {cfg['shape']:13s} {res['s']:9.2f} "
                  f"{res['peak_rss_gb']:8.2f} {res['extra_gb']:8.2f} {len(res['times']):4d} "
                  f"{'-' if dl is None else f'{dl:.1e}':>10s} {f64s:>13s}", flush=True)
    for n in args.n:
        for shape in args.shapes:
            p = Path(f"{ref}.{n}.{shape}")
            p.unlink(missing_ok=True)
    total = time.perf_counter() - t0
    print(f"\ntotal {total / 60:.1f} min", flush=True)
    if args.json:
        import torch

        meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                "threads": args.threads, "repeats": args.repeats, "total_s": total,
                "cpu": next((x.split(":", 1)[1].strip() for x in
                             Path("/proc/cpuinfo").read_text().splitlines()
                             if x.startswith("model name")), "?"),
                "argv": sys.argv[1:]}
        for mod in ("liger_kernel", "cut_cross_entropy"):
            try:
                from importlib.metadata import version

                meta[mod] = version(mod.replace("_", "-"))
            except Exception:   # noqa: BLE001
                meta[mod] = None
        data = {"runs": [], "check_float64": check, "rows": []}
        if args.append and args.json.exists():
            data = json.loads(args.json.read_text())
            data["check_float64"] = check or data.get("check_float64", {})
        meta["run"] = len(data["runs"])
        data["runs"].append(meta)
        data["rows"] += [{**r, "run": meta["run"]} for r in rows]
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
