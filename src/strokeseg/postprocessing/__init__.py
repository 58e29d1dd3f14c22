"""Post-processing of predicted probability maps, composable in a bundle's ``postprocessing`` (import
from the submodules).

- :mod:`~strokeseg.postprocessing.morphology` — ``BinaryClosing(d)`` with a ball (FH, Pérez Malla et al. 2019).
- :mod:`~strokeseg.postprocessing.lesion_size` — ``RemoveSmallLesions(d)`` (Clèrigues et al. 2020).
- :mod:`~strokeseg.postprocessing.smoothing` — ``SliceMedianSmooth(d)``, the per-slice 2-D median of the
  soft map (Liu et al. 2018, MS-DCNN).
- :mod:`~strokeseg.postprocessing.fusion` — Bayes fusion of instance and pixel probabilities (Chen et al. 2017).
- :mod:`~strokeseg.postprocessing.argmax` — ``ChannelArgmax(d)``, ``AsDiscrete(argmax=True)`` without the slow
  ``torch.argmax`` over a leading channel axis (same indices).

Two steps need no code of ours:

- fixed or fitted threshold: MONAI ``AsDiscreted(keys="pred", threshold=t)`` (lesion where
  ``prob >= t``, the convention the threshold fits use);
- fold ensemble (Clèrigues et al. 2020): MONAI ``MeanEnsembled(keys=["pred0", …, "predK"], output_key="pred")``
  averages the k fold models' probability maps voxel by voxel (the maps must share a grid; tested).

Every tuned value (threshold, closing iterations, S_min) is fitted on validation folds only by
:mod:`strokeseg.fitting` (THT0 / THT1 thresholds, closing iterations, the (T_h, S_min) grid search),
returned to the caller and stored in the bundle config. This package imports nothing of
:mod:`strokeseg.metrics` (and ``metrics`` nothing of it); ``postprocessing.thresholds`` is only a
re-export of :mod:`strokeseg.metrics.curves` for old imports.
"""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
