"""Compatibility shims for third-party packages that lag behind their dependencies.

lvis 0.5.3 (the latest release of the LVIS API, and the one LVIS results are reported with) calls
``np.float`` in ``LVISEval.accumulate`` (lvis/eval.py, the ``tp_sum``/``fp_sum`` casts). NumPy deprecated
that alias of the builtin ``float`` in 1.20 and removed it in 1.24, so evaluation crashes with
``AttributeError: module 'numpy' has no attribute 'float'`` on any current NumPy. ``np.float`` is the only
removed alias lvis 0.5.3 uses (no ``np.int``, ``np.bool`` or ``np.object``), so it is the only one restored.

Remove this module once an lvis release stops using ``np.float``.
"""

import numpy as np


def patch_numpy_for_lvis() -> None:
    """Restore ``np.float`` as the builtin ``float``, which is exactly what the removed alias was.

    Does nothing when NumPy still provides the attribute (NumPy < 1.24, or an earlier call), so calling it
    any number of times is harmless and never replaces an attribute NumPy itself defines.
    """
    # ``hasattr`` is False on NumPy >= 1.24: its module ``__getattr__`` raises AttributeError for the
    # removed aliases.
    if not hasattr(np, "float"):
        np.float = float


def import_lvis() -> tuple[type, type, type]:
    """Import the LVIS API with the NumPy shim applied; returns ``(LVIS, LVISResults, LVISEval)``.

    Import lvis through this function (not directly) so the shim is in place before ``LVISEval`` runs.
    """
    patch_numpy_for_lvis()
    from lvis import LVIS, LVISEval, LVISResults

    return LVIS, LVISResults, LVISEval
