"""What a forget set switches off per layer (wfexplain.explain.sets), on hand-made memories."""

import numpy as np
import pytest
import torch

from wfexplain.explain import sets

# 4 classes x 6 components. Threshold 0.5.
# k0: off for class 0 only                    -> set {0}: unique; set {0, 1}: unique
# k1: off for class 0 and class 2             -> set {0}: shared (class 2); set {0, 1}: shared
# k2: 0.6 for classes 0 and 1, kept alone     -> set {0}: kept; set {0, 1}: 0.36 < 0.5, unique (no retained row < 0.5)
# k3: off for class 3 only                    -> set {0}: kept (shared needs the set to switch it off first)
# k4: 0.7 for class 0, 0.4 for class 1        -> set {0}: kept; set {0, 1}: 0.28, off; class 1 is in the set: unique
# k5: all ones                                -> kept
LAYER = torch.tensor([
    [0.0, 0.1, 0.6, 1.0, 0.7, 1.0],
    [1.0, 1.0, 0.6, 1.0, 0.4, 1.0],
    [1.0, 0.2, 1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
])
FLAT = torch.ones(4, 3)  # every filter leaves this layer alone: spread 0
MEMORY = {"conv": LAYER, "norm": FLAT}


def row(rows, layer):
    (r,) = [r for r in rows if r["layer"] == layer]
    return r


def test_combined_gate_is_the_product_of_the_sets_rows():
    g = sets.combined_gate(MEMORY, [1, 0])
    torch.testing.assert_close(g["conv"], torch.tensor([0.0, 0.1, 0.36, 1.0, 0.28, 1.0], dtype=torch.float64))
    torch.testing.assert_close(g["norm"], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(sets.combined_gate(MEMORY, (2,))["conv"], LAYER[2].double())
    assert sets.combined_gate({"a": np.array([[0.5, 1.0], [0.5, 0.0]])}, [0, 1])["a"].tolist() == [0.25, 0.0]


def test_combined_gate_matches_the_models_gates(make_model):
    model = make_model("cnn", num_classes=5)
    ours = sets.combined_gate(model, [1, 3])
    for layer, gate in model.combined_gates([1, 3]).items():
        torch.testing.assert_close(ours[layer], gate.double(), rtol=1e-6, atol=1e-7)


def test_unique_and_shared_counts_by_hand():
    one = sets.set_components(MEMORY, [0])
    assert row(one, "conv") == {"layer": "conv", "components": 6, "off": 2, "unique": 1, "shared": 1, "kept": 4,
                                "off_fraction": 2 / 6, "unique_fraction": 1 / 6, "shared_fraction": 1 / 6,
                                "kept_fraction": 4 / 6}
    pair = row(sets.set_components(MEMORY, [0, 1]), "conv")
    assert (pair["off"], pair["unique"], pair["shared"], pair["kept"]) == (4, 3, 1, 2)
    assert row(sets.set_components(MEMORY, [3]), "conv")["unique"] == 1  # k3 is class 3's alone
    flat = row(one, "norm")
    assert (flat["off"], flat["kept"], flat["kept_fraction"]) == (0, 3, 1.0)
    for r in one + sets.set_components(MEMORY, [0, 1], threshold=0.3):
        assert r["unique"] + r["shared"] + r["kept"] == r["components"]
        assert r["unique_fraction"] + r["shared_fraction"] + r["kept_fraction"] == pytest.approx(1.0)
    assert [r["layer"] for r in one] == ["conv", "norm"]  # network order


def test_threshold_moves_the_counts():
    strict = row(sets.set_components(MEMORY, [0, 1], threshold=0.2), "conv")
    # off: k0 (0.0) and k1 (0.1); class 2's 0.2 at k1 is not below 0.2, so k1 is now unique too
    assert (strict["off"], strict["unique"], strict["shared"]) == (2, 2, 0)
    assert row(sets.set_components(MEMORY, [0], threshold=0.0), "conv")["off"] == 0
    with pytest.raises(ValueError, match="threshold"):
        sets.set_components(MEMORY, [0], threshold=1.5)


def test_totals_count_every_component_once():
    total = sets.set_totals(sets.set_components(MEMORY, [0, 1]))
    assert total == {"components": 9, "off": 4, "unique": 3, "shared": 1, "kept": 5, "layers": 2, "off_fraction": 4 / 9}
    assert sets.set_totals([])["off_fraction"] == 0.0


def test_bad_sets_are_refused():
    with pytest.raises(ValueError, match="empty"):
        sets.set_components(MEMORY, [])
    with pytest.raises(ValueError, match="0 to 3"):
        sets.combined_gate(MEMORY, [4])
    assert sets.members(MEMORY, (2, 0, 2)) == [0, 2]


def test_set_first_orders_rows():
    assert sets.set_first(5, (3, 1)) == [1, 3, 0, 2, 4]
    assert sets.set_first(3, ()) == [0, 1, 2]


def test_layer_spread_by_hand():
    spread = sets.layer_spread(MEMORY)
    expected = float(np.mean([np.std(LAYER[:, k].numpy()) for k in range(6)]))
    assert spread["conv"] == pytest.approx(expected) and spread["norm"] == 0.0
    assert sets.layer_spread({"one": torch.zeros(1, 4)}) == {"one": 0.0}
    assert sets.layer_spread({"max": torch.tensor([[0.0], [1.0]])})["max"] == pytest.approx(0.5)


def test_default_layer_is_the_most_informative_not_the_last():
    assert sets.default_layer(MEMORY) == "conv"  # "norm" is last but flat
    assert sets.default_layer({"a": torch.ones(3, 2), "b": torch.ones(3, 5)}) == "b"  # no structure: the last
    # all off for every class is as uninformative as all on: it is the spread between classes that counts
    assert sets.default_layer({"off": torch.zeros(4, 8), "mixed": LAYER, "on": FLAT}) == "mixed"
    equal = {"x": LAYER, "y": LAYER.clone(), "z": FLAT}
    assert sets.default_layer(equal) == "y"  # a tie goes to the deeper layer
