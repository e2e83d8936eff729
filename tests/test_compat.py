"""The NumPy shim that lets lvis 0.5.3 run on NumPy >= 1.24 (the COCO and LVIS evaluation protocols)."""

import numpy as np

from libra_cli.compat import import_lvis, patch_numpy_for_lvis


def test_patch_restores_np_float_as_the_builtin_float(monkeypatch):
    monkeypatch.delattr(np, "float", raising=False)  # the state on NumPy >= 1.24

    patch_numpy_for_lvis()

    assert np.float is float


def test_patching_twice_is_harmless(monkeypatch):
    monkeypatch.delattr(np, "float", raising=False)

    patch_numpy_for_lvis()
    patch_numpy_for_lvis()

    assert np.float is float
    assert np.cumsum([True, False, True]).astype(dtype=np.float).tolist() == [1.0, 1.0, 2.0]


def test_patch_leaves_an_existing_attribute_alone(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(np, "float", sentinel, raising=False)

    patch_numpy_for_lvis()

    assert np.float is sentinel


def test_import_lvis_returns_the_three_classes_with_the_shim_applied(monkeypatch):
    monkeypatch.delattr(np, "float", raising=False)

    lvis_class, results_class, eval_class = import_lvis()

    assert (lvis_class.__name__, results_class.__name__, eval_class.__name__) == (
        "LVIS",
        "LVISResults",
        "LVISEval",
    )
    assert issubclass(results_class, lvis_class)
    assert np.float is float
