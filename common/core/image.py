"""Request images: base64 (as CVAT sends them), bytes, Pillow images or arrays, decoded into RGB uint8 arrays.

Rules, applied to every request image:

- base64: standard or URL-safe alphabet; whitespace, missing ``=`` padding and a ``data:...;base64,``
  prefix are tolerated. Anything else is a 400.
- Format: whatever Pillow can read (CVAT sends the original upload for image tasks, PNG for video frames);
  plain JPEGs are decoded by OpenCV, whose libjpeg-turbo gives Pillow's pixels twice as fast.
- Size: the pixel count (width × height, read from the header before any pixel is decoded) must not exceed
  ``IMAGE_MAX_PIXELS`` (default 100 megapixels), which refuses decompression bombs.
- EXIF orientation: applied, so coordinates refer to the upright image, as CVAT shows and stores it
  (CVAT rotates image frames by their EXIF orientation when it reads them).
- Modes: everything becomes 3-channel RGB uint8. Alpha is dropped (the colour under it is kept), palette and
  grayscale are expanded, CMYK/YCbCr/LAB are converted by Pillow, 16/32-bit integer images are scaled from
  the 16-bit range (value / 257), float images are clipped to 0..255.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from functools import cached_property

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps

from common.core.errors import RequestError
from common.core.settings import env_float, env_int

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_MEMORY_MB = 512
DECODE_BYTES_PER_PIXEL = 7  # decoding: Pillow's 4-byte RGB pixels, then our 3-byte array
_DATA_URI = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

# We enforce our own limit (with a clear message) before decoding; Pillow's warning/error is disabled.
PIL.Image.MAX_IMAGE_PIXELS = None


def max_pixels() -> int:
    """The pixel limit in force: ``IMAGE_MAX_PIXELS`` or 100 megapixels."""
    return env_int("IMAGE_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def max_memory() -> int:
    """Bytes a request image may cost a worker, decoded and as the model works on it: ``IMAGE_MAX_MEMORY_MB``
    megabytes (default 512)."""
    return int(env_float("IMAGE_MAX_MEMORY_MB", DEFAULT_MAX_MEMORY_MB) * 2**20)


def decode_base64(text: object, field: str = "image") -> bytes:
    """Decode a base64 string leniently (see the module rules); raise RequestError otherwise."""
    if not isinstance(text, str):
        raise RequestError(f"{field} must be a base64 string, got {type(text).__name__}")
    if text:
        try:  # fast path: what CVAT sends (standard alphabet, padded, no prefix, no whitespace)
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
    text = _WHITESPACE.sub("", _DATA_URI.sub("", text.strip(), count=1))
    if not text:
        raise RequestError(f"{field} is empty")
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise RequestError(f"{field} is not valid base64 (bad length)")
    text += "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{field} is not valid base64 ({exc})") from None


class Image:
    """An image a model works on: cheap header facts first, pixels decoded once and only when asked for.

    Built from what a door receives: base64 text or encoded bytes (CVAT, V7), a Pillow image or an array (the
    SDK's agents, local folders). Every form gets the same checks (the pixel limit before any pixel is
    decoded, :meth:`require_memory`) and a ``digest`` that keys embedding caches: the SHA-256 of the bytes as
    sent, so a cache is consulted before decoding; of the pixels for a decoded image.
    ``size`` comes from the header (after EXIF orientation); ``rgb`` is the upright H×W×3 RGB uint8 array.
    """

    def __init__(self, pil: PIL.Image.Image | None, field: str = "image", data: bytes | None = None,
                 rgb: np.ndarray | None = None):
        """Use the ``from_*`` constructors."""
        self.field = field
        self.data = data
        self._pil = pil
        self._orientation = 1 if pil is None else _exif_orientation(pil)
        if rgb is not None:
            self.__dict__["rgb"] = rgb
        width, height = self.size
        if width <= 0 or height <= 0:
            raise RequestError(f"{field} has no pixels ({width}x{height})")
        limit = max_pixels()
        if width * height > limit:
            raise RequestError(
                f"{field} is {width}x{height} = {width * height} pixels, over the limit of {limit} "
                "(IMAGE_MAX_PIXELS)"
            )

    @classmethod
    def from_bytes(cls, data: bytes, field: str = "image") -> "Image":
        """An encoded image (any format Pillow reads); only its header is read here."""
        try:
            pil = PIL.Image.open(io.BytesIO(data))
        except PIL.UnidentifiedImageError:
            raise RequestError(f"{field} is not an image in a format that can be read") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise RequestError(f"{field} cannot be read: {exc}") from None
        return cls(pil, field, data=data)

    @classmethod
    def from_base64(cls, text: object, field: str = "image") -> "Image":
        return cls.from_bytes(decode_base64(text, field), field)

    @classmethod
    def from_pil(cls, image: PIL.Image.Image, field: str = "image") -> "Image":
        """A Pillow image (any mode; its EXIF orientation is applied as for encoded images)."""
        return cls(image, field)

    @classmethod
    def from_array(cls, array: np.ndarray, field: str = "image") -> "Image":
        """An H×W×3 RGB (or H×W gray, H×W×4 RGBA) uint8 array, used as it is."""
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise RequestError(f"{field} must be an H×W×3 uint8 RGB array, got {array.dtype} {array.shape}")
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        return cls(None, field, rgb=np.ascontiguousarray(array[:, :, :3]))

    def require_memory(self, work_bytes_per_pixel: float, max_aspect: float | None = None) -> None:
        """Refuse the image (400) when decoding it plus ``work_bytes_per_pixel`` per pixel of the model's own
        work (on the image padded to ``max_aspect``, for models that pad) would take more than
        :func:`max_memory`; checked from the header, before any pixel is decoded."""
        width, height = self.size
        work_w, work_h = (width, height) if max_aspect is None else padded_size(width, height, max_aspect)
        need = width * height * DECODE_BYTES_PER_PIXEL + work_w * work_h * work_bytes_per_pixel
        limit = max_memory()
        if need > limit:
            padding = f" (padded to {work_w}x{work_h})" if (work_w, work_h) != (width, height) else ""
            raise RequestError(
                f"{self.field} is {width}x{height}: this function would need about {need / 2**20:.0f} MB for "
                f"it{padding}, over the limit of {limit / 2**20:.0f} MB (IMAGE_MAX_MEMORY_MB); send a smaller image"
            )

    @cached_property
    def digest(self) -> str:
        """SHA-256 (hex) of the bytes as sent; of the shape and pixels for an image handed over decoded."""
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        digest = hashlib.sha256(repr(self.rgb.shape).encode())
        digest.update(np.ascontiguousarray(self.rgb).data)
        return digest.hexdigest()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        if self._pil is None:
            height, width = self.rgb.shape[:2]
            return width, height
        width, height = self._pil.size
        return (height, width) if self._orientation in (5, 6, 7, 8) else (width, height)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @cached_property
    def rgb(self) -> np.ndarray:
        """The upright image as an H×W×3 RGB uint8 array."""
        bgr = self.__dict__.get("bgr")
        if bgr is None:
            bgr = self._opencv_jpeg()
        if bgr is not None:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        try:
            self._pil.load()
            image = PIL.ImageOps.exif_transpose(self._pil) if self._orientation > 1 else self._pil
            array = to_rgb_array(image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise RequestError(f"{self.field} is truncated or corrupt: {exc}") from None
        finally:
            if self.data is not None:  # ours to close; a caller's Pillow image stays open
                self._pil.close()
        return array

    @cached_property
    def bgr(self) -> np.ndarray:
        """The upright image as an H×W×3 BGR uint8 array, the channel order of models trained on frames that
        OpenCV read."""
        if "rgb" not in self.__dict__:
            bgr = self._opencv_jpeg()
            if bgr is not None:
                return bgr
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2BGR)

    def _opencv_jpeg(self) -> np.ndarray | None:
        """The BGR pixels of a plain JPEG (YCbCr, no EXIF rotation) through OpenCV's decoder: the same
        libjpeg-turbo as Pillow's, without Pillow's copy out of its own 4-byte layout (twice as fast; the tests
        check the pixels are Pillow's). None for anything else, for Pillow to decode: another format or mode,
        a rotation, or no end-of-image marker after the last scan (a truncated file, which Pillow refuses)."""
        pil, data = self._pil, self.data
        if data is None or pil is None or pil.format != "JPEG" or pil.mode != "RGB" or self._orientation != 1:
            return None
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            return None
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None or bgr.shape[:2] != (self.height, self.width):
            return None
        pil.close()
        return bgr

    @cached_property
    def mean_color(self) -> np.ndarray:
        """The per-channel mean of :attr:`rgb` (float32 R, G, B), computed once per image."""
        return self.rgb.reshape(-1, 3).mean(axis=0, dtype=np.float64).astype(np.float32)


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) scaled by ``scale`` and rounded, each side at least one pixel: an image of extreme aspect
    ratio (1×4000) must not lose its short side when a model scales it down."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def padded_size(width: int, height: int, max_aspect: float) -> tuple[int, int]:
    """The size :func:`pad_to_aspect` gives a width × height image."""
    return max(width, math.ceil(height / max_aspect)), max(height, math.ceil(width / max_aspect))


def pad_to_aspect(image: np.ndarray, max_aspect: float) -> np.ndarray:
    """``image`` (H×W×C) padded with its mean colour at the bottom or the right, so that neither side is more
    than ``max_aspect`` times the other; coordinates in the image stay what they were. For models whose own
    resizing would leave a long thin image (1×4000) with no rows, or scale it up without bound."""
    height, width = image.shape[:2]
    new_w, new_h = padded_size(width, height, max_aspect)
    pad_h, pad_w = new_h - height, new_w - width
    if not pad_h and not pad_w:
        return image
    fill = [float(v) for v in image.reshape(-1, image.shape[2]).mean(axis=0)]
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=fill)


def _exif_orientation(image: PIL.Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to an H×W×3 RGB uint8 array (rules in the module doc)."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode == "F":
            gray = np.clip(values, 0, 255)
        else:
            gray = np.clip(values.astype(np.float64) / 257.0, 0, 255)
        gray = np.rint(gray).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
