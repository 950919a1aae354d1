"""Scale in classes: one unlearning step, the precomputed answers and the Forget page's charts at 10 to 1,000 classes.

    .venv/bin/python perf/classes.py [--classes 10 100 1000] [--backbone cnn] [--batch 128] [--repeats 5]

A synthetic head of N classes on the built-in backbone (random weights and memories, 28x28 inputs; nothing is
trained or read), in one run on this machine, medians of interleaved repeats:

1. ``step``: one unlearning step (per-sample forget sets of 1..3 classes, forward + backward + Adam, as
   :func:`wfexplain.engine.train_memory`) with the gate product gathered from each sample's set members (what runs)
   and with the dense ``[B, N, K]`` product it replaced; the ratio to the same step at the smallest N.
2. ``answers``: the bytes one precomputed set takes in :class:`wfexplain.answers.Answers` (memory and file), and all
   the sets it precomputes.
3. ``page``: the JSON bytes of the Forget page's three charts for a triple (accuracy bars, confusion shift,
   prediction flow) on ``--images`` evaluation images.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import median_time  # perf/timing.py (scripts run as perf/NAME.py)

from wfexplain.configs import UnlearnConfig
from wfexplain.data.base import DatasetInfo
from wfexplain.filtering import FilteredModel
from wfexplain.objectives import sample_forget_sets, wf_objective


def _model(backbone: str, n: int) -> FilteredModel:
    info = DatasetInfo("synthetic", tuple(f"c{i}" for i in range(n)), 1, 28, (0.5,), (0.25,))
    model = FilteredModel(backbone, info)
    with torch.no_grad():
        for a in model.alphas.values():
            a.uniform_(0.5, 1.0)
    return model


def _dense(model: FilteredModel, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {s.path: (1 - mask[:, :, None] * (1 - model.alphas[s.path.replace(".", "__")][None])).prod(dim=1)
            for s in model.sites}


def step_seconds(model: FilteredModel, batch: int, repeats: int, dense: bool) -> float:
    cfg, g, n = UnlearnConfig(), torch.Generator().manual_seed(0), model.num_classes
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(n, (batch,), generator=g)
    alphas = list(model.alphas.values())
    opt = torch.optim.Adam(alphas, lr=cfg.lr)
    model.train()

    def step() -> None:
        half = batch // 2
        mask = torch.cat([sample_forget_sets(y[:half], n, 3, True, g), sample_forget_sets(y[half:], n, 3, False, g)])
        gates = _dense(model, mask.float()) if dense else model.gates(mask.float())
        logits = model.run_gated(x, gates)
        out = wf_objective(logits[:half], y[:half], logits[half:], y[half:], alphas, cfg.lambda_r, cfg.lambda_f,
                           cfg.lambda_s, cfg.eps, cfg.ce_cap or None)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        model.clamp_()

    return median_time(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs="*", default=[10, 100, 1000])
    ap.add_argument("--backbone", default="cnn")
    ap.add_argument("--batch", type=int, default=UnlearnConfig().batch_size)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    from wfexplain import figures
    from wfexplain.answers import set_bytes, singles_and_pairs

    out: dict = {"backbone": args.backbone, "batch": args.batch, "threads": torch.get_num_threads(), "rows": []}
    for n in args.classes:
        model = _model(args.backbone, n)
        gathered = step_seconds(model, args.batch, args.repeats, dense=False)
        dense = step_seconds(model, args.batch, args.repeats, dense=True) if n <= 1000 else float("nan")
        g = torch.Generator().manual_seed(1)
        y = torch.randint(n, (args.images,), generator=g)
        p0 = torch.where(torch.rand(args.images, generator=g) < 0.9, y, torch.randint(n, (args.images,), generator=g))
        p1 = torch.where(torch.isin(y, torch.tensor([0, 1, 2])), (y + 5) % n, p0)
        acc0 = [float((p0[y == c] == c).float().mean()) if (y == c).any() else float("nan") for c in range(n)]
        acc1 = [float((p1[y == c] == c).float().mean()) if (y == c).any() else float("nan") for c in range(n)]
        names, forget = [f"c{i}" for i in range(n)], (0, 1, 2)
        import numpy as np

        cm0, cm1 = np.zeros((n, n)), np.zeros((n, n))
        np.add.at(cm0, (y.numpy(), p0.numpy()), 1)
        np.add.at(cm1, (y.numpy(), p1.numpy()), 1)
        page = sum(len(f.to_json()) for f in (figures.accuracy_bars(acc0, acc1, names, forget),
                                             figures.confusion_shift(cm0, cm1, names),
                                             figures.prediction_flow(y.numpy(), p1.numpy(), names, forget)))
        per_set = set_bytes(args.images, n)
        row = {"classes": n, "step_gathered_s": gathered, "step_dense_s": dense, "answers_bytes_per_set": per_set,
               "answers_sets": len(singles_and_pairs(n)), "answers_bytes": per_set * len(singles_and_pairs(n)),
               "page_chart_json_bytes": page}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    base = out["rows"][0]["step_gathered_s"]
    for r in out["rows"]:
        print(f"N={r['classes']}: step {r['step_gathered_s'] * 1e3:.0f} ms ({r['step_gathered_s'] / base:.2f}x of "
              f"N={out['rows'][0]['classes']}; dense {r['step_dense_s'] * 1e3:.0f} ms), answers "
              f"{r['answers_bytes'] / 2**20:.1f} MiB for {r['answers_sets']} sets, page charts "
              f"{r['page_chart_json_bytes'] / 2**10:.0f} KiB")


if __name__ == "__main__":
    main()
