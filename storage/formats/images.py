"""Reading photos robustly: whatever a user uploads becomes an (H, W, 3) uint8 RGB array or a
``PhotoError`` with a message they can act on.

The size cap and the shape (at most 6:1) are checked from the file header *before* any pixels
are decoded, so a tiny file that claims to be 100000 x 100000 pixels (a "decompression bomb")
costs nothing. A PNG must hold all the rows its header promises (Pillow fills missing rows with
black without a word). HEIC/HEIF photos (what phones send) are read through ``pillow-heif``.
Everything that was normalised on the way (orientation, bit depth, transparency, colour model,
extra frames) is listed in ``Photo.notes`` so the studio can tell the user what happened to their
picture.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error  # PIL raises it on some broken headers

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import PhotoError

__all__ = [
    "MAX_ASPECT",
    "MIN_SIDE",
    "Photo",
    "image_mime",
    "load_image_rgb",
    "load_photo",
    "resize_to_width",
]

# Smaller than this and depth estimation / synthesis has nothing to work with.
MIN_SIDE = 16
# Longer side over shorter side: a panorama strip beyond this makes a world of slivers.
MAX_ASPECT = 6.0

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm
_TAG_FOCAL_MM = 0x920A  # FocalLength
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


@dataclass
class Photo:
    """A decoded photo.

    rgb: (H, W, 3) uint8, upright (EXIF orientation applied), RGB order.
    focal_35mm: EXIF FocalLengthIn35mmFilm in mm, or None when absent/zero.
    focal_mm: EXIF FocalLength (physical lens focal length) in mm, or None.
    source_mode: the pixel format of the file as decoded (PIL mode, e.g. "RGB", "I;16", "CMYK",
        or "RGB;16"/"RGBA;16" for 16-bit colour PNGs).
    notes: human-readable list of what was normalised.
    """

    rgb: np.ndarray
    focal_35mm: float | None = None
    focal_mm: float | None = None
    source_mode: str = "RGB"
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _read_source(source: str | Path | bytes) -> tuple[bytes, str]:
    """Return (file bytes, a name for messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the uploaded photo"
    else:
        path = Path(source)
        name = f"'{path.name}'"
        if not path.exists():
            raise PhotoError(f"photo not found: {path}")
        if path.is_dir():
            raise PhotoError(f"{path} is a folder, not a photo")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PhotoError(f"could not read the photo {path}: {exc.strerror or exc}") from exc
    if not data:
        raise PhotoError(f"{name} is empty (0 bytes); please choose another photo")
    return data, name


_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def _is_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _register_heif(name: str) -> None:
    """Teach Pillow HEIC/HEIF (once); a clear error when the plugin is not installed."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise PhotoError(
            f"{name} is a HEIC/HEIF photo; reading it needs the pillow-heif package "
            "(pip install pillow-heif), or save it as JPEG first"
        ) from exc
    if not getattr(_register_heif, "done", False):
        pillow_heif.register_heif_opener()
        _register_heif.done = True  # type: ignore[attr-defined]


def _png_rows_missing(data: bytes) -> tuple[int, int] | None:
    """``(rows present, rows promised)`` when a PNG's image data stops short of its header's
    size, else None. Inflates the IDAT stream in 1 MiB pieces, counting bytes (bounded memory)."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or not width or not height:
        return None
    bits = channels * depth
    if interlace:  # Adam7: seven sub-images, each row with its filter byte
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                  (1, 0, 2, 2), (0, 1, 1, 2))  # fmt: skip
        sizes = [(-(-(height - y0) // dy), -(-(width - x0) // dx)) for x0, y0, dx, dy in passes]
        expected = sum(r * (1 + -(-c * bits // 8)) for r, c in sizes if r > 0 and c > 0)
    else:
        expected = height * (1 + -(-width * bits // 8))
    inflate, got, pos = zlib.decompressobj(), 0, 8
    try:
        while pos + 8 <= len(data) and got < expected:
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"IDAT":
                piece = data[pos + 8 : pos + 8 + length]
                while piece and got < expected:
                    got += len(inflate.decompress(piece, 1 << 20))
                    piece = inflate.unconsumed_tail
            elif kind == b"IEND":
                break
            pos += 12 + length
    except zlib.error:
        pass  # damaged stream: count what inflated
    if got >= expected:
        return None
    row = expected / height
    return int(got // row), height


def image_mime(data: bytes) -> str:
    """The media type of image bytes by their signature (``application/octet-stream`` if none)."""
    if data[:8] == _PNG_SIGNATURE:
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if _is_heif(data):
        return "image/avif" if data[8:12] == b"avif" else "image/heic"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"


def _too_big(name: str, width: int, height: int, max_pixels: int) -> PhotoError:
    return PhotoError(
        f"{name} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), more than "
        f"the limit of {max_pixels / 1e6:.1f} megapixels; please use a smaller version of it"
    )


def _exif_focals(image: Image.Image) -> tuple[float | None, float | None, int]:
    """(focal_35mm, focal_mm, orientation) from EXIF; missing or nonsense values become None/1."""

    def positive(value: object) -> float | None:
        try:
            number = float(value)  # type: ignore[arg-type]  # IFDRational, int, tuple-less
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        return number if math.isfinite(number) and number > 0 else None

    try:
        exif = image.getexif()
        ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # malformed EXIF must never make a good photo unreadable
        return None, None, 1
    # Some writers put the tags in IFD0 instead of the Exif sub-IFD.
    f35 = positive(ifd.get(_TAG_FOCAL_35MM, exif.get(_TAG_FOCAL_35MM)))
    fmm = positive(ifd.get(_TAG_FOCAL_MM, exif.get(_TAG_FOCAL_MM)))
    orientation = exif.get(_TAG_ORIENTATION, 1)
    return f35, fmm, orientation if orientation in range(1, 9) else 1


def _to_uint8_by_range(values: np.ndarray) -> np.ndarray:
    """Scale high-bit-depth data to uint8 by its actual range.

    Unsigned data keeps black at 0 and maps the brightest value to 255 (so 12-bit data stored in
    16 bits is not nearly black); float data already in [0, 1] is taken as-is; anything else is
    stretched min..max.
    """
    data = values.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if np.issubdtype(values.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif lo >= 0.0:
        lo = 0.0
    if hi <= lo:
        hi = lo + 1.0
    scaled = (np.nan_to_num(data, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_over_white(rgba: np.ndarray, notes: list[str]) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8 composited over white."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    if float(alpha.min()) < 1.0:
        notes.append("transparent areas were filled with white")
    else:
        notes.append("an unused (fully opaque) transparency channel was dropped")
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation for a numpy image, matching PIL.ImageOps.exif_transpose."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _is_16bit_colour_png(data: bytes) -> bool:
    # IHDR is always the first chunk: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
    # PIL silently drops the low byte of these, so they go through OpenCV instead.
    return data[:8] == _PNG_SIGNATURE and len(data) >= 26 and data[24] == 16 and data[25] in (2, 6)


def _decode_16bit_png(data: bytes, orientation: int, notes: list[str]) -> tuple[np.ndarray, str]:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise PhotoError("not an image we can read: the 16-bit PNG data is damaged")
    channels = decoded.shape[2]
    colour = _to_uint8_by_range(decoded[:, :, :3][:, :, ::-1])
    notes.append("16-bit colour was converted to 8-bit")
    if channels == 4:
        alpha = (decoded[:, :, 3].astype(np.float64) * (255.0 / 65535.0)).round().astype(np.uint8)
        rgb = _composite_over_white(np.dstack([colour, alpha]), notes)
    else:
        rgb = colour
    if orientation != 1:
        notes.append("rotated upright using the camera's orientation tag")
    return _apply_orientation(rgb, orientation), "RGBA;16" if channels == 4 else "RGB;16"


def _pil_to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Any decoded PIL image -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in _HIGH_BIT_MODES:
        grey = _to_uint8_by_range(np.asarray(image))
        notes.append(
            f"{'floating-point' if mode == 'F' else 'high bit depth'} greyscale was converted to 8-bit colour"
        )
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("L", "1"):
        notes.append("black-and-white photo was converted to colour channels")
        return np.asarray(image.convert("L").convert("RGB"), dtype=np.uint8).copy()
    if mode == "P" and "transparency" not in image.info:
        notes.append("palette colours were expanded to full colour")
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):
        return _composite_over_white(np.asarray(image.convert("RGBA"), dtype=np.uint8), notes)
    if mode == "CMYK":
        return _cmyk_to_rgb(image, notes)
    try:
        converted = image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise PhotoError(f"not an image we can read: unsupported colour format {mode}") from exc
    notes.append(f"colour format {mode} was converted to RGB")
    return np.asarray(converted, dtype=np.uint8).copy()


def _cmyk_to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    icc = image.info.get("icc_profile")
    if icc:
        try:  # a print profile gives far truer colours than PIL's naive formula
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, src, dst, outputMode="RGB")
            if converted is not None:
                notes.append(
                    "print (CMYK) colours were converted to RGB using the embedded profile"
                )
                return np.asarray(converted, dtype=np.uint8).copy()
        except Exception:  # broken profile or no littlecms: fall back below
            pass
    notes.append("print (CMYK) colours were converted to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _decode(
    data: bytes, name: str, max_pixels: int, min_side: int, max_aspect: float | None = None
) -> Photo:
    notes: list[str] = []
    if _is_heif(data):
        _register_heif(name)
    try:
        # Our own cap (below) is the one that matters: silence PIL's softer warning, which would
        # otherwise fire between its limit and 2x its limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(match.group(1)) / 1e6:.0f} megapixels" if match else "enormous"
        raise PhotoError(
            f"{name} is too large to open safely ({size}; the limit is "
            f"{max_pixels / 1e6:.1f} megapixels); please use a smaller version of it"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(
            f"not an image we can read: {name} is not a JPEG, PNG or other supported photo "
            "(or the file is damaged)"
        ) from exc

    with image:
        width, height = image.size
        if width * height > max_pixels:  # header only: nothing decoded yet
            raise _too_big(name, width, height, max_pixels)
        if min(width, height) < min_side:
            raise PhotoError(
                f"{name} is only {width} x {height} pixels; a photo needs at least "
                f"{min_side} pixels on each side"
            )
        if max_aspect and max(width, height) > max_aspect * min(width, height):
            raise PhotoError(
                f"{name} is {width} x {height} pixels, a strip of "
                f"{max(width, height) / min(width, height):.0f}:1; a photo can be at most "
                f"{max_aspect:.0f}:1: crop it and try again"
            )
        missing = _png_rows_missing(data)
        if missing is not None:
            raise PhotoError(
                f"not an image we can read: {name} is damaged or incomplete (its image data "
                f"covers {missing[0]} of the {missing[1]} rows it promises)"
            )
        focal_35mm, focal_mm, orientation = _exif_focals(image)
        source_mode = image.mode
        try:
            if getattr(image, "n_frames", 1) > 1:
                notes.append(f"the file holds {image.n_frames} frames; the first one was used")
                image.seek(0)
            if _is_16bit_colour_png(data):
                rgb, source_mode = _decode_16bit_png(data, orientation, notes)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    upright = ImageOps.exif_transpose(image) or image
                    upright.load()  # decoding happens here: truncated data fails here
                if orientation != 1:
                    notes.append("rotated upright using the camera's orientation tag")
                rgb = _pil_to_rgb(upright, notes)
        except PhotoError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct_error, MemoryError) as exc:
            raise PhotoError(
                f"not an image we can read: {name} is damaged or incomplete ({exc})"
            ) from exc
    return Photo(
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        focal_35mm=focal_35mm,
        focal_mm=focal_mm,
        source_mode=source_mode,
        notes=notes,
    )


def load_photo(source: str | Path | bytes, *, max_pixels: int = 50_000_000) -> Photo:
    """Load a user photo (path or raw file bytes) as an upright (H, W, 3) uint8 RGB ``Photo``.

    Raises ``PhotoError`` for a missing/empty/corrupt/truncated file, a file that is not an image,
    an image above ``max_pixels`` (checked from the header before decoding), one with a side
    shorter than 16 pixels, or one longer than ``MAX_ASPECT``:1. HEIC/HEIF is read with
    ``pillow-heif``.
    """
    data, name = _read_source(source)
    return _decode(data, name, max_pixels, MIN_SIDE, MAX_ASPECT)


def load_image_rgb(path: str | Path, *, max_pixels: int = 200_000_000) -> np.ndarray:
    """Plain reader for frames and test images: (H, W, 3) uint8 RGB, any size >= 1 pixel.

    Same normalisation as ``load_photo`` (so 16-bit, greyscale, alpha all work) without the
    minimum-size rule; raises ``PhotoError`` when the file cannot be read.
    """
    data, name = _read_source(path)
    return _decode(data, name, max_pixels, 1).rgb


def resize_to_width(rgb: np.ndarray, width: int, multiple: int = 8) -> np.ndarray:
    """Resize (H, W, C) to ``width`` columns keeping aspect ratio; the new height is rounded to a
    multiple of ``multiple`` (video/latent models want sizes divisible by 8), at least ``multiple``.

    INTER_AREA when shrinking (no aliasing), bicubic when enlarging.
    """
    if rgb.ndim < 2 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"cannot resize an empty image of shape {rgb.shape}")
    if width <= 0 or multiple <= 0:
        raise ValueError(f"width and multiple must be positive, got {width} and {multiple}")
    src_h, src_w = rgb.shape[:2]
    height = max(multiple, int(round(src_h * width / src_w / multiple)) * multiple)
    if (height, width) == (src_h, src_w):
        return rgb.copy()
    shrinking = width * height < src_w * src_h
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interpolation)
