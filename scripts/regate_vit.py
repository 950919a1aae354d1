"""A copy of a base model whose memory covers today's gate discovery (issue 14: the ViT's residual gates).

`unlearn` keeps the sites a checkpoint recorded when it was trained; runs/base-vit was trained before the
residual kinds existed and records heads and fc1 only. This writes runs/base-vit-residual: the same
weights (same SHA-256), a fresh memory over every site discovered now (26 layers, 2,514 components).
Usage: .venv/bin/python scripts/regate_vit.py
"""
import wfexplain
from wfexplain.checkpoint import save_checkpoint
from wfexplain.filtering import FilteredModel

base = wfexplain.load("runs/base-vit")
m = base.manifest
model = FilteredModel(m.backbone, base.info, wfexplain.ungated_copy(base.backbone), arch_kwargs=m.arch_kwargs)
print(len(model.sites), "layers,", sum(s.size for s in model.sites), "components")
fields = {k: getattr(m, k) for k in ("train_config", "seed", "backbone_description", "train_images", "dataset_fingerprint",
                                     "metrics", "timings", "validation", "data_dir")}
save_checkpoint(model, "runs/base-vit-residual", fields)
print("saved")
