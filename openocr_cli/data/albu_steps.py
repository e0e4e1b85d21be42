"""albumentations' flip and affine transforms that can record their pixel work instead of doing it.

With `recorder` set to a list, `apply` appends an AlbuStep (the parent class's own image function and
the parameters drawn for this call) and returns the image untouched; parameters and keypoints go
through albumentations unchanged, so the random streams are the same. IaaAugment runs the steps
later (data.planned). Kept apart from augment.py because importing albumentations loads torch.
"""

from __future__ import annotations

from typing import Any, Optional

import albumentations as A
import numpy as np

from openocr_cli.data.planned import AlbuStep


class RecordingHorizontalFlip(A.HorizontalFlip):
    recorder: Optional[list] = None

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if self.recorder is None:
            return super().apply(img, **params)
        self.recorder.append(AlbuStep(A.HorizontalFlip.apply, self, dict(params), flip=True))
        return img


class RecordingAffine(A.Affine):
    recorder: Optional[list] = None

    def apply(self, img: np.ndarray, matrix: np.ndarray, output_shape: tuple[int, int], **params: Any) -> np.ndarray:
        if self.recorder is None:
            return super().apply(img, matrix=matrix, output_shape=output_shape, **params)
        self.recorder.append(AlbuStep(A.Affine.apply, self, dict(params, matrix=matrix, output_shape=output_shape),
                                      flip=False))
        return img
