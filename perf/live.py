"""How live is "live": the fast inference path against the forward floor, measured in one run (issue 16).

    .venv/bin/python perf/live.py [--threads 2] [--limit 2000] [--repeats 5] [--json perf/live.json]
    .venv/bin/python perf/live.py --table perf/live.json   # the README/docs table from a stored run

Every number is a median of interleaved repeats on this machine, and the claims are ratios inside one
run (the machines are noisy). Sections:

1. ``peak``: torch.mm 2048x2048 fp32 GFLOP/s at ``--threads``; with each backbone's FLOPs per image
   (``torch.utils.flop_counter``) it gives the *forward floor* of N images: FLOPs x N / peak.
2. ``forward``: plain backbone / hook-gated / baked copy / :class:`wfexplain.inference.Predictor`, at
   batch 1 and 256, for every shipped checkpoint (a set never seen: ``forget=[0, 1, 2]``).
3. ``toggle``: a never-seen forget set on the dashboard's evaluation subset (``--limit`` images):
   the old hook path (chunks of 500), the fast path, a plain forward of the same images, the floor;
   and a precomputed single read back from :class:`wfexplain.answers.Answers`.
4. ``pages``: the whole Forget page of every checkpoint (Streamlit AppTest) rerun for a never-seen triple, over one
   plain forward of its evaluation images (AppTest's wall time, and the page's own "Update time"), right after opening
   (``after_opening_*``: while the background precompute runs) and once the precompute is done (``--baseline DIR``:
   also the checkout in DIR, e.g. a ``git worktree`` of an earlier commit, in the same run),
   a precomputed single; cold (a fresh process: imports, load, first evaluations, page) and warm (a
   second session in the same process) first renders; the first visits of Export and Explain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import median_time  # perf/timing.py (scripts run as perf/NAME.py)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ("fmnist-cnn", "mnist-cnn", "fmnist-resnet18", "fmnist-vit")



def peak_gflops(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_time(lambda: a @ b, repeats) / 1e9


def flops_per_image(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x[:1])
    return float(counter.get_total_flops())


def forward_ratios(model, plain, baked, fast, xb: torch.Tensor, repeats: int) -> dict:
    """Milliseconds and ratios over plain of one batch of new inputs: hooks, a baked copy, the fast path."""
    t = {"plain": median_time(lambda: plain(xb), repeats),
         "gated": median_time(lambda: model(xb, forget=[0, 1, 2]), repeats),
         "baked": median_time(lambda: baked(xb), repeats),
         "fast": median_time(lambda: fast.forward(xb, [0, 1, 2]), repeats)}
    return {**{f"{k}_ms": v * 1e3 for k, v in t.items()},
            **{f"{k}_over_plain": t[k] / t["plain"] for k in ("gated", "baked", "fast")}}


def checkpoint_section(name: str, limit: int, repeats: int, peak: float) -> dict:
    import wfexplain
    from wfexplain.answers import Answers
    from wfexplain.data import subset_tensors
    from wfexplain.gates import ungated_copy
    from wfexplain.inference import Predictor
    from wfexplain.splits import checkpoint_split

    model = wfexplain.load(ROOT / "checkpoints" / name)
    x, _, _ = subset_tensors(checkpoint_split(model.manifest, "test"), limit)
    plain = ungated_copy(model.backbone).eval()
    baked = wfexplain.bake(model, [0, 1, 2])
    start = time.perf_counter()
    fast = Predictor(model, x)
    build = time.perf_counter() - start
    flops = flops_per_image(plain, x)
    out: dict = {"images": len(x), "flops_per_image": flops, "predictor": fast.describe(),
                 "predictor_build_seconds": build}
    with torch.inference_mode():
        for batch in (1, 256):
            out[f"batch{batch}"] = forward_ratios(model, plain, baked, fast, x[:batch], repeats)
        n = model.num_classes
        sets = iter([[c % n, (c + 3) % n, (c + 5) % n] for c in range(100)])  # never the same set twice in a row
        hooks = median_time(lambda: torch.cat([model(b, forget=next(sets)) for b in x.split(500)]), repeats)
        new = median_time(lambda: fast.logits(next(sets)), repeats)
        plain_all = median_time(lambda: torch.cat([plain(b) for b in x.split(256)]), repeats)
    answers = Answers(fast, None)
    answers.get((3,))
    floor = flops * len(x) / (peak * 1e9)
    out["toggle"] = {"hooks_ms": hooks * 1e3, "fast_ms": new * 1e3, "plain_forward_ms": plain_all * 1e3,
                     "floor_ms": floor * 1e3, "fast_over_plain": new / plain_all, "fast_over_floor": new / floor,
                     "speedup_over_hooks": hooks / new,
                     "precomputed_single_ms": median_time(lambda: answers.get((3,)), repeats) * 1e3}
    return out


PAGE = """
import sys, time
t0 = time.perf_counter()
import wfexplain_dashboard  # first, as in a server: it sets what must be set before torch loads
import torch
torch.set_num_threads(int(sys.argv[3]))
from streamlit.testing.v1 import AppTest
CKPT = sys.argv[4]
at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.query_params["ckpt"] = CKPT
at.run()
cold = time.perf_counter() - t0
again = AppTest.from_file(sys.argv[1], default_timeout=600)
again.query_params["ckpt"] = CKPT
t = time.perf_counter(); again.run(); warm = time.perf_counter() - t
from wfexplain_dashboard import resources, settings
path = str(settings.SHIPPED_DIR / CKPT)
answers = resources._answers(path, resources._stamp(path), None)
names = list(at.session_state["_view"].model.class_names)[2:9]  # 7 classes: never-seen triples of them
def page_ms():  # the page's own "Update time" metric: what the user waited, from the change to the page drawn
    (m,) = [m for m in at.metric if m.label == "Update time"]
    if m.delta:  # "estimate shown after 310 ms": the first redraw (an estimate on part of the images)
        firsts.append(float(m.delta.split()[-2].replace(",", "")) / 1e3)
    return float(m.value.split()[0].replace(",", "")) / 1e3
firsts = []
early, early_pages, early_done = [], [], answers.done
for i in range(int(sys.argv[2])):  # right after opening: the background precompute is running
    at.multiselect(key="forget_classes").set_value([names[i % 7], names[(i + 1) % 7], names[(i + 3) % 7]])
    t = time.perf_counter(); at.run(); early.append(time.perf_counter() - t); early_pages.append(page_ms())
early_during = answers.done < answers.total  # still running when the last early toggle ended
early_firsts, firsts = firsts, []
while answers.done < answers.total:  # the steady state: singles and pairs precomputed
    time.sleep(0.1)
reruns, pages, singles = [], [], []
for i in range(int(sys.argv[2])):
    at.multiselect(key="forget_classes").set_value([names[i % 7], names[(i + 2) % 7], names[(i + 4) % 7]])
    t = time.perf_counter(); at.run(); reruns.append(time.perf_counter() - t); pages.append(page_ms())
    at.multiselect(key="forget_classes").set_value([names[i % 7]])  # precomputed
    t = time.perf_counter(); at.run(); singles.append(time.perf_counter() - t)
first = {}
for page in ("views/export.py", "views/explain.py"):  # first visits, singles precomputed
    t = time.perf_counter(); at.switch_page(page).run(); first[page] = time.perf_counter() - t
assert not at.exception, at.exception
median = lambda v: sorted(v)[len(v) // 2]
print(cold, warm, median(reruns), median(pages), median(singles), first["views/export.py"], first["views/explain.py"],
      median(early), median(early_pages), int(early_during), median(early_firsts or [float("nan")]),
      median(firsts or [float("nan")]))
"""


def page_section(repeats: int, limit: int, plain_ms: float, threads: int, checkpoint: str, root: Path = ROOT) -> dict:
    """The Forget page's timings on ``checkpoint`` in the checkout at ``root`` (this one, or ``--baseline``)."""
    env = {**os.environ, "WFEXPLAIN_EVAL_LIMIT": str(limit), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root),
           "WFEXPLAIN_CACHE_DIR": tempfile.mkdtemp(prefix="live-")}  # no answers from an earlier run: a real opening
    app = str(root / "wfexplain_dashboard" / "app.py")
    result = subprocess.run([sys.executable, "-c", PAGE, app, str(repeats), str(threads), checkpoint], cwd=root,
                            env=env, capture_output=True, text=True, check=True)
    values = map(float, result.stdout.split()[-12:])
    cold, warm, rerun, page, single, export, explain, early, early_page, during, early_first, first = values
    return {"cold_first_render_s": cold, "warm_first_render_s": warm, "never_seen_triple_rerun_ms": rerun * 1e3,
            "after_opening_triple_rerun_ms": early * 1e3, "after_opening_over_plain_forward": early * 1e3 / plain_ms,
            "after_opening_page_ms": early_page * 1e3, "precompute_still_running": bool(during),
            "after_opening_estimate_ms": early_first * 1e3, "estimate_ms": first * 1e3,
            "rerun_over_plain_forward": rerun * 1e3 / plain_ms, "never_seen_triple_page_ms": page * 1e3,
            "page_over_plain_forward": page * 1e3 / plain_ms, "precomputed_single_rerun_ms": single * 1e3,
            "export_first_visit_s": export, "explain_first_visit_s": explain}


def page_line(name: str, p: dict) -> str:
    plain = p["after_opening_triple_rerun_ms"] / p["after_opening_over_plain_forward"]
    first = {k: (f"{p[k]:.0f} ms = {p[k] / plain:.2f}×" if p.get(k, float("nan")) == p.get(k) else "—")
             for k in ("after_opening_estimate_ms", "estimate_ms")}  # NaN: no estimate (the set was fast)
    return (f"| `{name}` | {p['after_opening_triple_rerun_ms']:.0f} ms = {p['after_opening_over_plain_forward']:.2f}× "
            f"({'precompute running' if p['precompute_still_running'] else 'precompute done by then'}) | "
            f"{first['after_opening_estimate_ms']} | {first['estimate_ms']} | "
            f"{p['never_seen_triple_rerun_ms']:.0f} ms = {p['rerun_over_plain_forward']:.2f}× | "
            f"{p['precomputed_single_rerun_ms']:.0f} ms | {p['cold_first_render_s']:.1f} s / {p['warm_first_render_s']:.1f} s "
            f"| {p['export_first_visit_s']:.1f} s / {p['explain_first_visit_s']:.1f} s |")


def table(out: dict) -> str:
    rows = ["| checkpoint | what runs | toggle: hooks → fast | fast ÷ plain forward | fast ÷ floor | "
            "precomputed single (lookup) | batch 256: gated / fast ÷ plain |", "|---|---|---|---|---|---|---|"]
    for name, c in out["checkpoints"].items():
        t, b = c["toggle"], c["batch256"]
        rows.append(f"| `{name}` | {c['predictor'].split(';')[0]} | {t['hooks_ms']:.0f} → {t['fast_ms']:.0f} ms "
                    f"({t['speedup_over_hooks']:.1f}×) | {t['fast_over_plain']:.2f}× | {t['fast_over_floor']:.2f}× | "
                    f"{t['precomputed_single_ms']:.2f} ms | {b['gated_over_plain']:.2f}× / {b['fast_over_plain']:.2f}× |")
    if out.get("pages"):
        rows += ["", "Forget page (Streamlit AppTest), a never-seen triple per rerun, ÷ one plain forward of its images:",
                 "", "| checkpoint | right after opening | its estimate (first redraw) | estimate after the precompute | "
                 "after the precompute | precomputed single | first render: cold / new session | first visit: Export / "
                 "Explain |", "|---|---|---|---|---|---|---|---|"]
        rows += [page_line(name, p) for name, p in out["pages"].items()]
        rows += [page_line(f"{name} (baseline)", p) for name, p in out.get("baseline_pages", {}).items()]
    return "\n".join(rows) + f"\n\n{out['threads']} threads, matmul peak {out['peak_gflops']:.0f} GFLOP/s, " \
                             f"{out['limit']:,} images."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoints", nargs="*", default=list(CHECKPOINTS))
    ap.add_argument("--no-page", action="store_true", help="skip the Streamlit page section")
    ap.add_argument("--baseline", type=Path, help="also time the page of the checkout in this directory (e.g. a "
                    "`git worktree` of an earlier commit), in the same run, after this one")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--table", help="print the Markdown table of a stored --json run and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    torch.set_num_threads(args.threads)
    out: dict = {"threads": args.threads, "limit": args.limit, "repeats": args.repeats,
                 "peak_gflops": peak_gflops(args.repeats), "checkpoints": {}}
    for name in args.checkpoints:
        out["checkpoints"][name] = checkpoint_section(name, args.limit, args.repeats, out["peak_gflops"])
        print(name, json.dumps(out["checkpoints"][name]["toggle"]), flush=True)
    for name in [] if args.no_page else args.checkpoints:
        plain_ms = out["checkpoints"][name]["toggle"]["plain_forward_ms"]
        out.setdefault("pages", {})[name] = page_section(args.repeats, args.limit, plain_ms, args.threads, name)
        print(name, json.dumps(out["pages"][name]), flush=True)
        if args.baseline:
            out.setdefault("baseline_pages", {})[name] = page_section(args.repeats, args.limit, plain_ms, args.threads,
                                                                      name, args.baseline.resolve())
            out["baseline"] = str(args.baseline)
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
