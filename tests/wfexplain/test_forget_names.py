"""A forget set becomes text in one place (:func:`wfexplain.forget.key`), and the names on disk stay as they were:
answers entries, Retrain oracle directories and exported file names written by earlier versions are still found."""

import numpy as np
import pytest
import torch

from wfexplain import export, pipeline
from wfexplain import forget as forget_sets
from wfexplain.answers import singles_and_pairs


@pytest.mark.parametrize(("forget", "dashed", "commas"), [
    (None, "", ""),
    ((), "", ""),
    (3, "3", "3"),
    ((3, 1, 1), "1-3", "1,3"),
    ([6, 0], "0-6", "0,6"),
    (torch.tensor([5, 0, 12]), "0-5-12", "0,5,12"),
    (np.array([2, 1]), "1-2", "1,2"),
])
def test_the_two_forms_of_a_set(forget, dashed, commas):
    assert forget_sets.key(forget) == dashed and forget_sets.to_text(forget) == commas
    assert forget_sets.key(forget, sep=",") == commas
    assert forget_sets.parse(commas, 20)[0] == forget_sets.classes(forget)  # the URL form reads back


def test_a_mask_is_not_a_set():
    with pytest.raises(ValueError, match="per-sample mask"):
        forget_sets.key(torch.zeros(1, 3, dtype=torch.bool))


def test_answers_entry_names_are_unchanged():
    assert [forget_sets.key(s) for s in singles_and_pairs(3)] == ["", "0", "1", "2", "0-1", "0-2", "1-2"]


def test_oracle_directories_are_unchanged(tmp_path):
    assert pipeline.oracle_path(tmp_path, [1, 0], 0) == tmp_path / "retrain" / "forget-0-1-seed0"
    assert pipeline.oracle_path(tmp_path, (7,), 2) == tmp_path / "retrain" / "forget-7-seed2"


def test_exported_file_names_are_unchanged():
    assert export.baked_name([1, 0], None) == "baked_forget_0-1.safetensors"
    assert export.baked_name(2, 0.5) == "baked_forget_2_hard0.5.safetensors"
    assert export.removed_name([6, 0, 6]) == "removed_forget_0-6.safetensors"
    assert export.attribution_name("runs/fmnist", "Integrated Gradients", 3, [2, 1], "png") == \
        "runs_fmnist-attribution-Integrated_Gradients-target3-forget1-2.png"
    assert export.attribution_name("m", "saliency", 0, None, "svg") == "m-attribution-saliency-target0-forgetnone.svg"
