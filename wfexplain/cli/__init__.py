"""The ``wfexplain`` command: train, import, unlearn, evaluate, retrain, benchmark, export, remove, upgrade, list.

Logs and progress bars go to stderr through :mod:`logging` (``-q``: warnings and errors only, no progress
bars; ``-v``: also debug lines, such as each command's duration); ``--json`` results go to stdout as strict
JSON (null, never NaN). Every option is validated before any work; nothing is overwritten without
``--force``. Ctrl-C stops a training loop cleanly and writes nothing. ``train``, ``unlearn`` and
``evaluate`` run unchanged under ``torchrun`` (docs/scaling.md): rank 0 logs, prints and writes.
The parser is here, the subcommands in :mod:`wfexplain.cli.commands`.

Exit status, one rule: **2 when the command line itself is refused** by the CLI's own checks, before
anything is attempted: argparse's errors and :class:`~wfexplain.cli.options.UsageError` (an option's
value that is out of range, or does not fit the checkpoint or the other options); the message names
the option (``argument --x: ...``). **1 when a well-formed command fails** on the world it meets:
a missing or corrupt checkpoint (CheckpointError), missing data (DatasetError), any OSError (a full
disk, :class:`wfexplain.atomic.NoSpace`; a lock held too long, ``filelock.Timeout``), a ValueError
from the library, distributed errors, and an existing target (FileExistsError: it is the files, not
the command, that conflict; ``--force`` is suggested, but the same command succeeds once the target is
gone). **130** after Ctrl-C. Expected failures print one ``error:`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from filelock import Timeout

from .. import distributed as dist
from .._version import __version__
from ..backbones import list_backbones
from ..benchmark.catalogue import method_keys
from ..checkpoint import CheckpointError
from ..configs import RemovalConfig, TrainConfig, UnlearnConfig
from ..data import INTERPOLATIONS, DatasetError, list_datasets
from ..manifest import IMG_SIZE_RANGE
from ..splits import VAL_FRACTION
from . import commands as C
from . import explanations as E
from . import manage as M
from .console import debug, error, log, logging_to_stderr
from .options import COUNT, FRACTION, INDEX, UsageError, add_config_args, device, json_object, ranged

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


def _add_verbosity(p: argparse.ArgumentParser, default) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=logging.WARNING, default=default,
                   help="log only warnings and errors to stderr; no progress bars")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=logging.DEBUG, default=default,
                   help="also log debug lines to stderr (such as the command's duration)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset directory (default: $WFEXPLAIN_DATA or the dataset's system path)")
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR-10 (explicit opt-in)")


def _add_tensorboard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", metavar="DIR", help="also send every logged metric to TensorBoard logs in DIR "
                                                        "(needs the tensorboard package); history.csv keeps them anyway")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu (default), cuda or cuda:N; under torchrun cuda = the rank's local GPU")
    p.add_argument("--workers", type=INDEX, default=0, help="data-loading processes that stream images (default 0)")
    p.add_argument("--backend", choices=["gloo", "nccl"],
                   help="torch.distributed backend under torchrun (default: nccl on cuda, gloo on cpu)")


def crop_pct(text: str) -> float | str:
    """``--crop-pct``: a fraction in (0, 1], or ``none`` (resize the whole image)."""
    return "none" if text.strip().lower() == "none" else ranged(float, 0, 1, open_lo=True)(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfexplain",
        description="Multi-class unlearning by weight filtering (Poppi et al., arXiv 2304.02049).",
        epilog="exit status: 0 success; 1 the command failed (missing or corrupt checkpoint or data, an existing "
               "target without --force, a full disk, ...); 2 usage error (the command line is refused, the option "
               "named); 130 interrupted. wfexplain COMMAND --help lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser, logging.INFO)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the original classifier and write a checkpoint directory")
    p.add_argument("--dataset", required=True, choices=list_datasets())
    p.add_argument("--backbone", default="cnn", choices=list_backbones())
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out, whole (what it held is dropped)")
    p.add_argument("--half", action="store_true", help="store weights as float16 (halves the size)")
    p.add_argument("--img-size", type=ranged(int, *IMG_SIZE_RANGE), help="input side for imagefolder (default 64)")
    p.add_argument("--in-chans", type=int, choices=[1, 3],
                   help="imagefolder colour mode: 1 grayscale, 3 RGB (default: the majority of train/, warned if mixed)")
    p.add_argument("--limit-train", type=COUNT, help="train on a stratified subset of this many images")
    p.add_argument("--val-fraction", type=ranged(float, 0, 1, open_hi=True), default=VAL_FRACTION,
                   help=f"hold out this share of the training split for validation, stratified and seeded; every "
                        f"later choice is made on it (default {VAL_FRACTION}; 0 trains on everything)")
    _add_data_args(p)
    add_config_args(p, TrainConfig)
    _add_runtime_args(p)
    _add_tensorboard_arg(p)
    p.set_defaults(func=C.cmd_train)

    p = sub.add_parser("unlearn", help="train the memory matrices of all classes in one round")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", help="write the result to another directory (default: update --checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="replace trained memory matrices in place, or an existing --out (whole)")
    p.add_argument("--limit-train", type=COUNT, help="train on a stratified subset of this many images")
    p.add_argument("--eval-limit", type=COUNT, help="test images for the evaluation stored in the manifest")
    _add_data_args(p)
    add_config_args(p, UnlearnConfig)
    _add_runtime_args(p)
    _add_tensorboard_arg(p)
    p.set_defaults(func=C.cmd_unlearn)

    p = sub.add_parser("evaluate", help="forget matrix and forget/retain accuracy of every class (pair, larger sets)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=COUNT, help="seeded class-stratified subset of N test images")
    p.add_argument("--pairs", action="store_true", help="also evaluate every pair of classes (as --sets 1 2)")
    p.add_argument("--sets", type=COUNT, nargs="+", metavar="SIZE",
                   help="forget-set sizes, each below the number of classes (1 always; 2: every pair; 3 and up: "
                        "--samples seeded sets each)")
    p.add_argument("--samples", type=COUNT, default=20,
                   help="sets drawn per size of 3 or more, all of them if there are no more (default 20)")
    p.add_argument("--seed", type=INDEX, default=0, help="seed of the --limit subset and of the drawn sets")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="score the test split, or the validation images held out of training (where settings are "
                        "chosen; --record stores it as metrics.validation_evaluation)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--record", action="store_true", help="store the summary in the checkpoint's manifest")
    p.add_argument("--hard-threshold", type=FRACTION,
                   help="evaluate hard-baked models: components whose gate is below this (0..1) are zeroed")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=C.cmd_evaluate)

    p = sub.add_parser("explanations", help="do the memories explain? deletion curves of each class's components by "
                                            "memory, activation, gradient x activation and random rankings")
    E.add_arguments(p)
    _add_data_args(p)
    p.set_defaults(func=E.cmd_explanations)

    p = sub.add_parser("retrain", help="train the Retrain oracle: same recipe, from scratch, without the forget class(es)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--forget", type=INDEX, nargs="+", required=True, help="class index(es) left out")
    p.add_argument("--seed", type=INDEX, default=0, help="training seed (stored as <checkpoint>/retrain/forget-C-seedS)")
    p.add_argument("--force", action="store_true", help="replace an existing oracle")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=C.cmd_retrain)

    p = sub.add_parser("benchmark", help="Retrain vs WF vs every baseline, tuned on validation, on every metric, over "
                                         "seeds, single classes and combinations")
    p.add_argument("--checkpoint", help="the checkpoint directory (required but with --list)")
    p.add_argument("--list", action="store_true", help="print the methods (grids, papers) and metrics, then exit")
    p.add_argument("--forget", type=INDEX, nargs="*", help="classes forgotten one at a time (default: all)")
    p.add_argument("--pairs", type=INDEX, default=0, help="also forget this many seeded pairs of classes (default 0)")
    p.add_argument("--triples", type=INDEX, default=0, help="also forget this many seeded triples (default 0)")
    p.add_argument("--seeds", type=COUNT, default=3, help="seeds per method and forget set (default 3)")
    p.add_argument("--combination-seeds", type=COUNT,
                   help="seeds for the pairs and triples (default: --seeds; each seed needs its own Retrain oracles)")
    methods = [m for m in method_keys() if m != "original"]
    p.add_argument("--methods", nargs="*", choices=methods, metavar="METHOD", help=f"subset of: {' '.join(methods)}")
    p.add_argument("--no-tune", action="store_true",
                   help="skip the tuning on the validation split (every method's grid, same budget) and run defaults")
    p.add_argument("--no-explanations", action="store_true",
                   help="skip WF's deletion curves on the forget sets (the benchmark.json's explanations section)")
    p.add_argument("--tune-only", action="store_true",
                   help="stop after the tuning (its points are kept in the run store; the test split is not read)")
    p.add_argument("--limit", type=COUNT, help="test images (seeded, class-stratified; default all)")
    p.add_argument("--train-limit", type=COUNT, default=10_000,
                   help="training images behind train metrics, MIA, attack, probe")
    p.add_argument("--val-limit", type=COUNT, help="validation images the tuning scores on (default all)")
    p.add_argument("--wf-round", choices=["run", "checkpoint"], default="run",
                   help="rerun and time WF's all-class round per seed (default) or reuse the checkpoint's memory "
                        "for its own configuration")
    p.add_argument("--byo", nargs="*", metavar="NAME=PATH",
                   help="score your own safetensors state dict(s) of the same backbone (one forget class)")
    p.add_argument("--out", help="directory for benchmark.json/.md/.tex (default: the checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="replace a benchmark.json that covers forget sets or seeds this run does not")
    p.add_argument("--no-store", action="store_true",
                   help="neither reuse nor keep results in <checkpoint>/benchmark-runs/ (default: an interrupted or "
                        "partial run resumes from there)")
    p.add_argument("--json", action="store_true", help="print the benchmark JSON to stdout")
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu (default), cuda or cuda:N: where every network trains and is scored")
    _add_data_args(p)
    p.set_defaults(func=C.cmd_benchmark)

    p = sub.add_parser("export", help="paper figures, memory CSV/NPZ, metric tables (CSV/LaTeX), baked model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--forget", type=INDEX, nargs="*", default=[], help="classes to bake into an exported model")
    p.add_argument("--hard-threshold", type=FRACTION,
                   help="zero components whose gate is below this (0..1) in the baked model")
    p.add_argument("--layers", nargs="*", help="layers in the heatmap figure (default: all)")
    p.add_argument("--order", default="original", choices=["original", "specificity", "clustered"],
                   help="component order in the heatmaps")
    p.add_argument("--formats", nargs="*", default=["png", "svg", "pdf"], choices=["png", "svg", "pdf"])
    p.add_argument("--limit", type=COUNT, default=2000, help="test images behind the metric tables")
    p.add_argument("--no-metrics", action="store_true", help="skip the evaluation and the metric tables")
    p.add_argument("--onnx", action="store_true", help="also the baked model as ONNX (needs --forget and the onnx "
                                                       "extra: pip install 'wfexplain[onnx]')")
    p.add_argument("--force", action="store_true", help="replace files that already exist in --out")
    _add_data_args(p)
    p.set_defaults(func=C.cmd_export)

    p = sub.add_parser("remove", help="remove a forget set from the weights (hard bake, prune, repair on retain data "
                                      "only) and write the model; measures forget/retain accuracy on test")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--forget", type=INDEX, nargs="+", required=True, help="classes to remove")
    p.add_argument("--out", required=True, help="the .safetensors file to write (loads like export's baked model)")
    add_config_args(p, RemovalConfig)
    p.add_argument("--limit", type=COUNT, default=2000, help="test images behind the printed accuracies")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON to stdout")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=C.cmd_remove)

    p = sub.add_parser("import", help="make a checkpoint of a classifier trained elsewhere (timm, torchvision, your own)")
    p.add_argument("--arch", help="timm:NAME, timm:local-dir:PATH, timm:hf-hub:ORG/NAME (local cache only), "
                                  "torchvision:NAME or package.module:factory (importing runs its code: only for modules "
                                  "in WFEXPLAIN_TRUSTED_MODULES, here and in every later command); default: the "
                                  "config.json of a --weights folder")
    p.add_argument("--arch-kwargs", type=json_object, default={},
                   help="JSON keyword arguments of the architecture (not num_classes, in_chans, pretrained, "
                        "checkpoint_path, weights...: wfexplain sets those)")
    p.add_argument("--weights", help="state dict: .safetensors, or .pt/.pth (torch.load weights_only), or a Hugging "
                                     "Face-style folder (config.json + model.safetensors); default: the --arch folder's")
    p.add_argument("--dataset", required=True, choices=list_datasets(), help="the classes and images it was trained on")
    recorded = "(default: config.json beside the weights, the network's timm pretrained_cfg, or the dataset's, not " \
               "imagefolder's; never guessed: import fails naming what is missing)"
    p.add_argument("--img-size", type=ranged(int, *IMG_SIZE_RANGE), nargs="+", metavar="H [W]",
                   help=f"input size it was trained at: one side, or height and width {recorded}")
    p.add_argument("--crop-pct", type=crop_pct,
                   help="resize the shorter side to size/crop_pct, then crop the centre (timm's eval transform); "
                        f"'none': resize the whole image {recorded}")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, help=f"resize filter {recorded}")
    p.add_argument("--torchvision-weights", metavar="NAME",
                   help="take the preprocessing from a torchvision weights enum's transforms() (e.g. IMAGENET1K_V1 or "
                        "ResNet18_Weights.IMAGENET1K_V1; read only, nothing downloads)")
    p.add_argument("--in-chans", type=int, choices=[1, 3], help="input channels (default: the dataset's)")
    p.add_argument("--mean", type=ranged(float), nargs="+", help=f"per-channel normalisation mean {recorded}")
    p.add_argument("--std", type=ranged(float, 0, open_lo=True), nargs="+", help=f"per-channel std {recorded}")
    p.add_argument("--head", nargs="+", help="classifier head module path(s) (default: every layer whose output reaches "
                                             "the logits with no layer with weights between, traced)")
    p.add_argument("--sites", nargs="+", metavar="PATH",
                   help="gate only the gate sites found under these module paths (default: every site found)")
    p.add_argument("--exclude", nargs="+", metavar="PATH", default=[],
                   help="gate none of the sites under these module paths, e.g. the auxiliary classifiers a GoogLeNet or "
                        "Inception runs only in training: --exclude aux1 aux2 (the coverage report lists what is left "
                        "ungated and why)")
    p.add_argument("--retrain-config", type=json_object, default={},
                   help="JSON TrainConfig fields of the recipe the benchmark's Retrain oracle uses (default: TrainConfig)")
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out, whole")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=M.cmd_import)

    p = sub.add_parser("upgrade", help="rewrite an older checkpoint's manifest in the current format, recording "
                                       "the SHA-256 of the files present (you vouch for them)")
    p.add_argument("--checkpoint", required=True)
    p.set_defaults(func=M.cmd_upgrade)

    p = sub.add_parser("fetch-demo", help="copy the shipped checkpoints (installed with wfexplain, or a checkout's) "
                                          "into a directory, for the commands that take --checkpoint")
    p.add_argument("names", nargs="*", help="which ones (default: all of them; `wfexplain list` names them)")
    p.add_argument("--out", default="checkpoints", help="where to put them, one directory each (default: checkpoints)")
    p.add_argument("--force", action="store_true", help="replace existing copies")
    p.set_defaults(func=M.cmd_fetch_demo)

    sub.add_parser("dashboard", add_help=False,
                   help="start the dashboard (Streamlit; needs wfexplain[dashboard]): `wfexplain dashboard --help` "
                        "for its options (--checkpoint-dir DIR, --port N, ...)")

    p = sub.add_parser("list", help="list backbones, datasets and checkpoints, or one checkpoint's gate coverage")
    p.add_argument("--checkpoints", default="checkpoints", help="directory to scan")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="instead, the coverage of this checkpoint: gated components per stage and kind, the layers left "
                        "ungated and why, and (where one batched pass is cheap) the gates that change nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=M.cmd_list)
    for p in sub.choices.values():  # also after the command: wfexplain train ... -q
        _add_verbosity(p, argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (module docstring). argparse's own errors raise SystemExit(2)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dashboard"]:  # every option after it belongs to the dashboard's own launcher
        return M.cmd_dashboard(argv[1:])
    args = build_parser().parse_args(argv)
    with logging_to_stderr(args.verbosity):
        return _run(args)


def _debug_traceback() -> None:
    logging.getLogger("wfexplain.cli").debug("traceback of the internal error:", exc_info=True)


def _run(args) -> int:
    start = time.perf_counter()
    debug(f"wfexplain {__version__}: {args.command}")
    try:
        if hasattr(args, "device"):
            args.device = dist.resolve_device(args.device)
            with dist.session(args.device, getattr(args, "backend", None)):  # benchmark: one process, no backend
                rc = args.func(args)
        else:
            rc = args.func(args)
    except UsageError as e:  # before the ValueErrors: it is one
        error(str(e))
        return USAGE
    except FileExistsError as e:
        hint = "already" in str(e) and "--force" not in str(e)  # not for "a file where a directory goes"
        error(f"{e} (pass --force to overwrite)" if hint else str(e))
        return FAILURE
    except (CheckpointError, DatasetError, dist.DistributedError, ValueError, Timeout, OSError) as e:
        error(str(e))
        return FAILURE
    except KeyboardInterrupt:
        log("interrupted")
        return INTERRUPTED
    except Exception as e:  # a bug, or a peer lost under torchrun: one line, never a traceback (-v shows it)
        if isinstance(e, RuntimeError) and dist.launched() and dist.lost_peer(e):
            error(f"lost contact with another rank, which failed (its error is above): {e}")
            return FAILURE
        _debug_traceback()
        error(f"internal error ({type(e).__name__}: {e}); this is a bug in wfexplain: please report it with the "
              "command line (-v shows where it happened)")
        return FAILURE
    debug(f"done in {time.perf_counter() - start:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
