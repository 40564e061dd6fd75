"""Markdown tables of saved benchmark results: ``python -m benchmarks.table [FILE ...]`` prints them
(default: every ``benchmarks/results/*.json``); ``--markdown --out docs/performance.md`` writes the
performance page: the options that make a search faster or leaner, what the suite measures, and
every results file with the machine and date it was measured on."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

#: benchmark -> (column title, record key) pairs; a key missing from a record prints as "–"
COLUMNS = {
    "darts": [("order", "order"), ("case", "case"), ("wall s/step (min)", "wall"), ("CPU s/step", "cpu_s_per_step"),
              ("speed-up", "speedup_vs_reference"), ("step peak MB", "step_peak_mb"),
              ("memory ratio", "memory_ratio_vs_reference"), ("α grads identical", "alpha_grads_match")],
    "shapley": [("case", "case"), ("step s", "step_s"), ("step peak MB", "step_peak_mb"),
                ("memory ratio", "memory_ratio_vs_fairdarts"), ("time ratio", "time_ratio_vs_fairdarts"),
                ("passes alone", "pass_floor_time_ratio")],
    "compile": [("step", "case"), ("eager s/step", "eager_s"), ("compiled s/step", "compiled_s"),
                ("speed-up", "speedup"), ("first step s (compile)", "compile_s"), ("graph breaks", "graph_breaks"),
                ("recompiles", "recompiles"), ("note", "note")],
    "nasiam": [("case", "case"), ("dnas ms/step", "dnas_step_ms"), ("plain torch ms/step", "plain_step_ms"),
               ("ratio", "ratio"), ("control ratio", "control_ratio"), ("target", "target_ratio")],
    "dario": [("case", "case"), ("before", "images_per_s_before"), ("after (images/s)", "images_per_s_after"),
              ("speed-up", "speedup"), ("iteration s", "iter_s"), ("iteration / forward (batch 1)", "iter_over_forward"),
              ("its two passes alone / forward", "passes_over_forward")],
}

PAGE = """# Performance

This page is generated from `benchmarks/results/*.json` by
`python -m benchmarks.table --markdown --out docs/performance.md`; edit `benchmarks/table.py`,
not this file. Every figure below comes from one run of the suite on the machine named with it.
Timings on a shared machine are noisy (up to ~20 % run to run): each benchmark compares its cases
inside one process, in interleaved rounds (one step of each case per round), and reports ratios.

## Options

```bash
dnas search ... --checkpoint-cells          # recompute cells in backward: same gradients, less memory
dnas search ... --partial-channels 4        # PC-DARTS: 1/4 of the channels through the mixed ops
dnas search ... --amp bf16                  # autocast the steps (bf16, or fp16 with a GradScaler)
dnas search ... --no-channels-last          # NCHW on the CPU too (NHWC is the CPU default)
dnas search ... --compile                   # torch.compile each mixed op of the supernet
dnas bench                                  # the benchmark suite (= python -m benchmarks), JSON lines
dnas bench darts --full --save              # the DARTS CIFAR config -> benchmarks/results/<machine>-cpu-full.json
python -m benchmarks.table                  # the saved results as tables
```

What makes a search step cheaper without changing its math (`darts`, `ddarts` spaces; every item
is tested against the plain computation):

- The mixed op never computes `none` (it adds exactly 0); the ops that start with a ReLU (sep/dil
  convs) share one `relu(x)` per input state instead of each keeping its own copy for backward.
  Weights that are merely near zero are *not* skipped: that would change the math.
- `Supernet.grad_only(params)`: each pass records gradients only for what it differentiates. In the
  α step the weights are frozen, in the weight step α are; the second-order step freezes in its
  three passes that need one side only, `shapley` in all of its passes.
- The ops' convolutions and batch norms (`dnas.spaces.ops.Conv2d`, `BatchNorm2d`) keep less for
  backward than torch's: a convolution whose weight is frozen keeps no input (autograd's keeps it
  whatever requires grad), so the α step keeps no activation for the weights; a batch norm without
  γ, β keeps its output x̂ rather than its input (its backward needs only x̂ and 1/σ, and x̂ is the
  o_k(x) the mixed op keeps for ∇α anyway), and the ReLU after it is recomputed from x̂ instead of
  kept. What the α step keeps halves; the weight step keeps about 12 % less.
- On the CPU a depthwise convolution's input gradient is a forward convolution of the output
  gradient with the flipped kernel: oneDNN's own depthwise backward is 5–40× slower than its
  forward for the 5×5 and dilated kernels of the DARTS ops (N 64, C 16, 32×32: 5.7 ms against 0.6
  ms for `dil_conv_5x5`). The lean modules are tested against torch's in float64 (every S_o op,
  strides 1 and 2, frozen or trained weights, odd sizes, both layouts); they step aside in eval,
  without grad and under autocast, stay inside `torch.compile`, and `module.lean = False` turns them off.
- The max pool keeps its input instead of its int64 indices for backward (the average pool beside it
  keeps that input anyway) and recomputes the argmax in backward.
- On the CPU the activations are channels-last by default (`channels_last: null`): mkldnn's
  convolutions run the step 1.2–1.6× faster on NHWC. On a GPU the default stays NCHW (not measured
  yet); `--channels-last` / `--no-channels-last` force either.
- D-DARTS' `shapley` α step runs its n ablated networks as a tree: the network without cell j
  computes the same states as the full network before cell j, so its pass starts at cell j from
  the full network's cached inputs, and reverse mode runs branch by branch from the last cell down
  with the gradients accumulated at the branch points (the algebra is in the docstring of
  `dnas/strategies/shapley.py`). The gradient is the one of n + 1 separate passes (tested in
  float64), and at most one network's graph is alive at a time. Its cost has a floor, which the
  benchmark measures in the same run ("passes alone": each cell's forward and pull-back timed
  alone, then summed as the tree runs them). The network without cell j recomputes the
  n − j − 1 cells after j, so the tree runs n + n(n − 1)/2 cell forwards where a FairDARTS α step
  runs n. Its trunk pulls two cotangents back through every cell but the last, u from L and v
  from Σ_j L_j: optimizer k weights ∇_k L and ∇_k Σ_j L_j by its own two scalars, so no single
  cotangent can carry both, and with batch statistics in every cell a doubled batch cannot
  either. On the quick config (5 cells) that floor measured 3.2–3.3× a FairDARTS α step in two
  runs, and the step 3.5–3.6×; it grows with n (about n/2 + 1 for equal cells): at the DARTS
  search net (8 cells, C = 16, batch 32) the floor is 4.36× and the step 4.96×, against 9.23× for
  n + 1 separate passes, at 1.02× FairDARTS' memory (`vm-cpu-full.json`).

Options that trade something:

- `checkpoint_cells` (default false): each cell is recomputed during backward
  (`torch.utils.checkpoint`), so only cell boundaries stay in memory; gradients are identical
  (tested to 1e-6) and batch-norm statistics are updated once. Costs one extra forward per backward.
- `partial_channels: K` (default 1; PC-DARTS, Xu et al. 2020): only C/K channels of each edge go
  through the ops, the rest bypass it (2×2 max-pooled on reduction edges), then a K-group channel
  shuffle. This changes the math (a cheaper proxy). It turns on **edge normalisation**
  (`edge_normalization`, default: on when K > 1): one extra α tensor `<cell>_beta` of shape
  (edges,) per cell key, softmax over each node's incoming edges, multiplied into the node sum;
  it is trained with the α of its cell (FairDARTS' zero-one loss, taken over every α tensor, then
  covers β too) and the darts parser ranks edges by β · w as PC-DARTS does
  (`decision_weights()` return β · w). The PC-DARTS code's CIFAR defaults differ from the DARTS
  ones dnas keeps: K = 4, batch 256, weight lr 0.1, α lr 6e-4, α frozen for 15 epochs
  (`--partial-channels 4 --set strategy.w_lr=0.1 --set strategy.a_lr=6e-4 --set strategy.warmup_epochs=15`).
- `compile` (default false): `torch.compile` of each mixed op (edge). Edges of the same shape
  share one graph; the pools, the shared relu(x), the node sums, α and the ablations stay eager;
  where compiling is unavailable the first forward fails with one line saying so. The lean
  modules above stay inside the compiled graphs (dynamo traces their autograd.Functions; a slow
  test checks that the compiled backward calls the lean depthwise gradient and that α and weight
  gradients equal eager's). Measured on 2026-12-02 (2-core VM, 2 threads), each step kind in a
  fresh process; "compile" is its first two compiled steps from an empty inductor cache, what a
  first run pays:
  - Quick config (3 cells, 4 nodes, C = 8, batch 16; `vm-cpu.json`, 8 interleaved rounds):
    order 1 **1.15×** the eager step after a 147 s compile (12 graphs, no graph break; 1.26×
    after 163 s in an earlier run of the same code that day); order 2 1.25× after 225 s
    (17 graphs).
  - DARTS CIFAR search config (8 cells, C = 16, batch 64, 32×32; `vm-cpu-full.json`, 3 rounds):
    order 1 **1.27×** (6.4 s against 7.9 s eager) after a 169 s compile (11 graphs); order 2
    1.04× after 258 s (16 graphs).
  - What made the difference: before the lean modules ran inside compiled graphs, a compiled
    step used oneDNN's own depthwise backward (5–40× slower than its forward, see above) and
    ran at 0.97× eager on the quick config and **0.58×** at the CIFAR config (17.7 s against
    10.6 s). In eager mode the same switch is worth 1.45× at the CIFAR config (one step 6.7 s
    with the lean modules, 9.8 s without) but under 8 % on the quick one, which is why the
    quick config alone did not show it.
  - So on 2 CPU cores compiling costs about three minutes and then saves 15–27 % of a first-order
    step: it pays for searches longer than about 15 minutes. dnas says so in a warning when
    `compile` is turned on for the CPU; `benchmarks/gpu.sh` measures it on a GPU.
  - The `shapley` α step (D-DARTS' pass tree, quick config, 18:58 UTC at commit 518d2d3): **1.35×**
    eager after a 146 s compile (11 graphs, no graph break). Its α gradient equals eager's to
    1e-10 in float64 (slow test); in float32 inductor's other summation order, amplified by the
    ablation loss's differences of losses, leaves about 3e-4 relative. Before the lean modules ran
    inside compiled graphs, inductor failed on this step on the CPU ("Cannot convert expression
    to float") and dnas refused the combination. Not measured at the CIFAR config.

  Compiling whole cells instead, the earlier implementation, did not pay. Every cell of another
  input shape (the first cell, a reduction cell, the cell after it) is its own graph, and
  `grad_only` flips `requires_grad` of the weights between the α step and the weight step, on
  which dynamo guards, so each cell shape compiled once per kind of pass. Each graph was a hundred
  ops, compiled in 2–3 min; the first step had not finished after 15 min. Per edge the graphs are
  small and few.

  With compile on, dynamo may keep 64 graphs for the edges (its default of 8 would send the
  later ones back to eager), and AOT autograd donates no buffers, so a compiled backward can run
  with `retain_graph`.
- Strategy option `amp: none | bf16 | fp16` (gradient strategies): the forward of the α step and
  of the weight step run under `torch.autocast`; fp16 adds a `GradScaler` per step kind (a step
  with an inf/NaN gradient is skipped; the scale is saved in the checkpoint and restored by
  `--resume`). With `order=2` only the validation pass of the unrolled step is autocast; the
  unrolled weight gradient and the two finite-difference passes of the Hessian-vector product stay
  in fp32, since the difference of two low-precision gradients would be mostly rounding. fp16 with
  `order=2` is refused (its finite differences take no loss scaling).

## The suite

`python -m benchmarks` (or `dnas bench`) runs every `benchmarks/bench_*.py` and prints one JSON
object per measurement, each with its config, repeats, median/min/max, peak memory, its ratio to a
baseline measured in the same run, the machine and the date. On the CPU it takes the small configs,
on a GPU (`--device cuda`) the papers' configs, timed with CUDA events, memory from the allocator's
peak; `--quick`/`--full` choose explicitly, `--dry-run` prints the plan only, `--save` writes
`benchmarks/results/<machine>-<device>[-full].json` (or `--out FILE`).

- `darts`: one DARTS search step (α step then weight step; first and second order) of the dnas
  supernet against a reference in the same file: the math written as the DARTS code does (every op
  of every edge summed, `none` as zeros, torch's pools, NCHW, each loss `backward()`-ed into every
  parameter, the unrolled model a deep copy), loaded with the same weights. `reference-channels-last`
  and `dnas-nchw` separate what the layout gives from what the implementation gives. Memory: each
  case runs two steps in a fresh process (peak RSS over the RSS before them; allocator peak on
  CUDA). Time: all cases in one process, one step of each per round; the speed-up is the median
  over rounds of t_reference / t_case. The α gradients of every case are compared with the
  reference's in float64.
- `shapley`: one D-DARTS α step (the pass tree), the same with n + 1 separate passes
  (`shapley-separate`), against one FairDARTS α step; `naive` is the formula on one graph holding
  all n + 1 passes (memory only). "Passes alone" is the tree's ratio if it cost only its cell
  passes, from each cell's forward and pull-back timed alone in the same run: the floor of this
  exact gradient.
- `compile` (on the CPU only when named: `python -m benchmarks compile`): the DARTS step (order 1
  and 2) and the `shapley` α step with `compile: true` against eager, same process, with the
  compile time and dynamo's graph-break count.
- `nasiam`: a training step of the heads built from a NASiam genotype against the same SimSiam
  written in plain torch (interleaved rounds, and a plain-vs-plain control ratio for the noise).
- `dario`: images/s of a ViT-B with 6 of 12 blocks pruned against the unpruned one, and one
  pruning iteration (synflow + variance proxy, double backward) against a forward pass.

## On a GPU

`benchmarks/gpu.sh` runs the whole GPU check (meant to take under 8 minutes on one GPU): the suite at
the papers' configs, a 2-epoch DARTS search on synthetic CIFAR-shaped images with `--amp bf16`
(channels-last on and off), and a `torchrun --nproc_per_node 1` smoke test that joins an nccl
process group; everything lands as JSON in `benchmarks/results/`. `benchmarks/gpu.sh --dry-run`
prints the commands. **It has not run on a GPU yet**: every figure on this page is from a CPU.

## Results
"""


#: dated context per results file, for records saved before the suite recorded machine and date
CONTEXT = {
    "vm-cpu.json": (
        "This project's 2-core CPU VM, idle, 2 threads, 2026-12-02 (`darts`, `shapley`, `dario`; `nasiam` "
        "from an earlier round). The small configs: overheads per op weigh more here than at the papers' sizes."
    ),
    "vm-cpu-full.json": (
        "The DARTS CIFAR search config (8 cells, C = 16, batch 64, 32×32) on the same VM, idle, 2 threads, "
        "2026-12-02 09:17–09:43 UTC at commit 81653aa: the reference and dnas, orders 1 and 2, 3 interleaved "
        "rounds after a warm-up round, memory from 2 steps in a fresh process per case (1565 s in all). "
        "The `compile` records: orders 1 and 2, 18:31–18:41 UTC at commit 2a9b558 (idle); the `shapley` records: "
        "15:27–15:38 UTC at commit 65213c1 (batch 32, 2 rounds); the VM ran tests at nice 5–10 during both."
    ),
}


def _cell(rec: dict, key: str) -> str:
    if key == "wall":
        return f"{rec['median_s']} ({rec['min_s']})"
    v = rec.get(key)
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return f"{v:g}" if isinstance(v, float) else str(v)


def tables(records: list[dict]) -> str:
    out = []
    for bench, cols in COLUMNS.items():
        rows = [r for r in records if r.get("benchmark") == bench]
        if not rows:
            continue
        cfg = rows[0].get("config")
        out.append(f"**{bench}**" + (f" ({', '.join(f'{k}={v}' for k, v in cfg.items())})" if cfg else "") + "\n")
        whens = sorted({r["when"] for r in rows if r.get("when")})
        machines = sorted({r["machine"] for r in rows if r.get("machine")})
        if whens or machines:
            out.append(f"Measured {', '.join(whens) or '(date not recorded)'} on {'; '.join(machines) or '(machine not recorded)'}.\n")
        out.append("| " + " | ".join(t for t, _ in cols) + " |")
        out.append("|" + " --- |" * len(cols))
        out += ["| " + " | ".join(_cell(r, k) for _, k in cols) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def page(files: list[Path]) -> str:
    """The performance page: the text above, then each results file's tables."""
    parts = [PAGE]
    for f in files:
        recs = json.loads(f.read_text())
        notes = [r for r in recs if r.get("benchmark") == "note"]
        parts.append(f"### `{f.name}`\n")
        if f.name in CONTEXT:
            parts.append(CONTEXT[f.name] + "\n")
        parts += [f"{n['text']}\n" for n in notes]
        parts.append(tables(recs))
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.table")
    p.add_argument("files", nargs="*", help="results files (default: benchmarks/results/*.json)")
    p.add_argument("--markdown", action="store_true", help="the whole performance page, not only the tables")
    p.add_argument("--out", help="write to this file instead of stdout")
    args = p.parse_args(argv)
    files = [Path(a) for a in args.files] or sorted(RESULTS.glob("*.json"))
    files = [f for f in files if not f.name.startswith("gpu-")]  # gpu.sh's run summaries are not tables
    text = page(files) if args.markdown else "".join(f"### {f.name}\n\n{tables(json.loads(f.read_text()))}\n" for f in files)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
