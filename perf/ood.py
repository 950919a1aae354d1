"""The out-of-domain detector's rates: the share of the test split and of the foolbox sample photos it flags, per score.

``python perf/ood.py CHECKPOINT...`` (the photos: ``make photos``); docs/dashboard.md quotes its output.
"""

import sys
from collections.abc import Sequence

from wfexplain.explain.ood import PHOTO_KINDS, Images, _loader, checkpoint_detector, photo_inputs, rates, score


def main(argv: Sequence[str] | None = None) -> None:
    """The share of the test split and photos flagged, per score, for each checkpoint."""
    from wfexplain.checkpoint import load
    from wfexplain.splits import checkpoint_split

    for path in argv if argv is not None else sys.argv[1:]:
        det = checkpoint_detector(model := load(path))
        print(f"{path}: {det.summary} (level {det.level:.2%} a score, calibration rate {det.calibration_rate:.2%})")
        print("  thresholds: " + ", ".join(f"{k} {v:.4g}" for k, v in det.thresholds.items()))
        sets: dict[str, Images] = {"test split": _loader(checkpoint_split(model.checkpoint_manifest(), "test"))}
        sets |= {f"{k} photos": x for k in PHOTO_KINDS if len(x := photo_inputs(model, k))}
        for name, images in sets.items():
            s = score(model, det, images)
            print(f"  {name} ({len(s['msp'])}): " + ", ".join(f"{k} {v:.1%}" for k, v in rates(det, s).items()))


if __name__ == "__main__":
    main()
