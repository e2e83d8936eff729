"""Reading image files: the one place where pixels enter libra.

Training, evaluation, the analyses, the report's figures, ``libra predict`` and ``libra data show`` all read
images through :func:`open_rgb`, so that every path sees the same pixels:

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as detectron2's and mmcv's readers do: a
  phone photo stored sideways with orientation 6 is returned upright, in the coordinates an annotation
  tool shows and a user annotates;
- every mode PIL reads becomes 8-bit RGB (:func:`to_rgb8`): grayscale, palette, alpha and CMYK convert,
  16-bit grayscale is scaled to 0..255.

:func:`image_tensor` turns the picture into the tensor the detectors take, for training, evaluation and
prediction alike. A missing or undecodable file raises :class:`ImageReadError`, whose message is a short
phrase the caller puts after the file's name. This module imports nothing from libra but the error type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from libra_cli.errors import LibraError

# The file suffixes libra treats as images when it lists a folder (predict, VOC's JPEGImages, …).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(LibraError):
    """An image file that cannot be used; ``reason`` is a short phrase ("image file not found", …)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def to_rgb8(pil: Image.Image) -> Image.Image:
    """An RGB image with 8 bits per channel, from any mode PIL reads.

    Grayscale ("L", "1"), palette ("P"), "LA", "RGBA" and "CMYK" convert with PIL (alpha is dropped).
    16-bit grayscale (modes "I;16*", and "I", which is how some PIL versions read 16-bit PNGs) is scaled
    v ↦ round(v · 255 / 65535), so that the full 0..65535 range maps onto 0..255 instead of every value
    above 255 saturating to white.
    """
    if pil.mode.startswith("I;16") or pil.mode == "I":
        values = np.asarray(pil, dtype=np.float64)
        pil = Image.fromarray(np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def open_rgb(path: Path | str) -> Image.Image:
    """The image at ``path`` upright (EXIF orientation applied) as 8-bit RGB, fully loaded.

    Raises ImageReadError("image file not found" / "cannot decode image (…)") for a missing or damaged file.
    """
    path = Path(path)
    try:
        with Image.open(path) as pil:
            pil.load()
            upright = ImageOps.exif_transpose(pil)
            return to_rgb8(upright if upright is not None else pil)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "image file not found") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(path, "is a folder, not an image file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(path, f"cannot decode image ({detail})") from exc


def image_tensor(pil: Image.Image) -> torch.Tensor:
    """float32 [3, H, W] in [0, 1] of an RGB image: what every detector in libra is given (the detector's own
    transform then resizes and normalises it)."""
    return pil_to_tensor(to_rgb8(pil)).float().div_(255.0)


def upright_size(pil: Image.Image) -> tuple[int, int]:
    """(width, height) of ``pil`` once its EXIF orientation is applied (5–8 swap the two), without decoding."""
    width, height = pil.size
    return (height, width) if _orientation(pil) in (5, 6, 7, 8) else (width, height)


def image_file_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used (a short phrase), or None if it looks sound."""
    return check_image_file(path).problem


@dataclass(frozen=True)
class ImageCheck:
    """What :func:`check_image_file` found: a problem (a short phrase) or the upright size and orientation."""

    problem: str | None
    size: tuple[int, int] | None = None  # (width, height) once the EXIF orientation is applied
    orientation: int = 1  # the EXIF orientation tag (1: stored upright; 5–8 swap width and height)


def check_image_file(path: Path) -> ImageCheck:
    """Open ``path``, read its upright size from the header and verify its data stream, decoding no pixels.

    PIL's ``verify`` checks the header of every format and PNG's chunk checksums, so missing, truncated
    and foreign files show here rather than mid-training.
    """
    try:
        with Image.open(path) as pil:
            pil.verify()  # must come first after opening; the file is opened again for its size
        with Image.open(path) as pil:
            size, orientation = upright_size(pil), _orientation(pil)
    except FileNotFoundError:
        return ImageCheck("image file not found")
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, … for damaged files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ImageCheck(f"cannot decode image ({detail})")
    return ImageCheck(None, size, orientation)


def size_mismatch(check: ImageCheck, declared: tuple[int, int]) -> str | None:
    """A short phrase when a sound image's upright size differs from the (width, height) its annotation
    declares, e.g. "declared 160 × 200 (width × height), the image is 200 × 160 upright (EXIF
    orientation 6)"; None when they agree."""
    if check.size is None or check.size == tuple(declared):
        return None
    upright = f" upright (EXIF orientation {check.orientation})" if check.orientation != 1 else ""
    return (
        f"declared {declared[0]} × {declared[1]} (width × height), the image is "
        f"{check.size[0]} × {check.size[1]}{upright}"
    )


def _orientation(pil: Image.Image) -> int:
    """The EXIF orientation tag of ``pil`` (1 when absent or damaged)."""
    try:
        orientation = pil.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: PIL's exif_transpose then leaves the image as stored
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
