"""Photo loading: every awkward file a user might upload, made in code, plus the real photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from storage.errors import PhotoError, StorageError
from storage.formats.images import Photo, load_image_rgb, load_photo, resize_to_width
from tests import helpers

PHOTOS = helpers.PHOTOS


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _gradient(width: int = 64, height: int = 48) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.concatenate([x + 0 * y, y + 0 * x, 255 - x + 0 * y], axis=2).astype(np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming the given size, and no pixel data (a "bomb" header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


# -- files that are not photos ---------------------------------------------------------------------


def test_errors_are_value_errors():
    assert issubclass(PhotoError, StorageError) and issubclass(StorageError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(PhotoError, match="not found"):
        load_photo(tmp_path / "nope.jpg")


def test_folder_is_not_a_photo(tmp_path):
    with pytest.raises(PhotoError, match="folder"):
        load_photo(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(PhotoError, match="empty"):
        load_photo(path)
    with pytest.raises(PhotoError, match="empty"):
        load_photo(b"")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a shopping list, not a photo\n" * 20)
    with pytest.raises(PhotoError, match="not an image we can read"):
        load_photo(path)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(PhotoError, match="not an image we can read"):
        load_photo(path)


def test_truncated_png(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(buffer, format="PNG")
    with pytest.raises(PhotoError, match="not an image we can read"):
        load_photo(buffer.getvalue()[:300])


def test_decompression_bomb_header_huge(tmp_path):
    # 100000 x 100000 claims 10 gigapixels in ~60 bytes: PIL's own hard limit fires.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(PhotoError, match="too large") as info:
        load_photo(path)
    assert "10000 megapixels" in str(info.value) and "50.0 megapixels" in str(info.value)


def test_decompression_bomb_header_over_our_cap(tmp_path):
    # 10000 x 10000 = 100 MP: above our 50 MP cap but below PIL's hard limit (only a warning there).
    with pytest.raises(PhotoError, match=r"10000 x 10000 pixels \(100.0 megapixels\)") as info:
        load_photo(_png_header_only(10_000, 10_000))
    assert "limit of 50.0 megapixels" in str(info.value)


def test_small_cap_is_checked_before_decoding(tmp_path):
    path = _save(Image.fromarray(_gradient(100, 80)), tmp_path / "ok.png")
    with pytest.raises(PhotoError, match="100 x 80 pixels"):
        load_photo(path, max_pixels=5_000)
    assert load_photo(path, max_pixels=8_000).rgb.shape == (80, 100, 3)


def test_tiny_image_refused(tmp_path):
    path = _save(Image.new("RGB", (10, 40), "red"), tmp_path / "tiny.png")
    with pytest.raises(PhotoError, match="10 x 40"):
        load_photo(path)
    # The plain reader used for frames has no minimum size.
    assert load_image_rgb(path).shape == (40, 10, 3)


# -- pixel formats -----------------------------------------------------------------------------------


def test_plain_rgb_jpeg_and_bytes(tmp_path):
    rgb = _gradient()
    path = _save(Image.fromarray(rgb), tmp_path / "a.png")
    photo = load_photo(path)
    assert isinstance(photo, Photo)
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(photo.rgb, rgb)
    assert photo.notes == [] and photo.source_mode == "RGB"
    np.testing.assert_array_equal(load_photo(path.read_bytes()).rgb, rgb)
    assert photo.width == 64 and photo.height == 48


def test_16bit_grey_png_scaled_by_range(tmp_path):
    grey = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (32, 1))  # 12-bit data
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), grey)
    photo = load_photo(path)
    assert photo.source_mode.startswith("I")
    assert photo.rgb.shape == (32, 64, 3)
    assert photo.rgb[:, -1].min() == 255 and photo.rgb[:, 0].max() == 0  # full range used
    assert any("8-bit" in note for note in photo.notes)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_keeps_low_bits(tmp_path, channels):
    rgb16 = (_gradient().astype(np.uint16) * 16).astype(np.uint16)  # 12-bit colour
    data = rgb16[:, :, ::-1]
    if channels == 4:
        data = np.dstack([data, np.full(data.shape[:2], 65535, np.uint16)])
    path = tmp_path / "c16.png"
    cv2.imwrite(str(path), data)
    photo = load_photo(path)
    assert photo.source_mode == ("RGB;16" if channels == 3 else "RGBA;16")
    expected = np.rint(rgb16 * (255.0 / rgb16.max())).astype(np.int16)
    assert np.abs(photo.rgb.astype(np.int16) - expected).max() <= 1


def test_float_tiff(tmp_path):
    values = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (20, 1))
    path = _save(Image.fromarray(values, mode="F"), tmp_path / "f.tif")
    photo = load_photo(path)
    assert photo.source_mode == "F"
    assert photo.rgb[0, 0, 0] == 0 and photo.rgb[0, -1, 0] == 255


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale(tmp_path, mode):
    image = Image.fromarray(_gradient()[:, :, 0]).convert(mode)
    photo = load_photo(_save(image, tmp_path / f"g_{mode}.png"))
    assert photo.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(photo.rgb[:, :, 0], photo.rgb[:, :, 2])
    assert photo.source_mode == mode


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red ink-wise
    photo = load_photo(_save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert photo.source_mode == "CMYK"
    r, g, b = photo.rgb.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in note for note in photo.notes)


def test_rgba_composited_over_white(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :16, 3] = 255  # left opaque, right fully transparent
    photo = load_photo(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(photo.rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(photo.rgb[0, -1], [255, 255, 255])
    assert any("white" in note for note in photo.notes)


def test_la_image(tmp_path):
    la = Image.merge("LA", [Image.new("L", (20, 20), 0), Image.new("L", (20, 20), 0)])
    photo = load_photo(_save(la, tmp_path / "la.png"))
    np.testing.assert_array_equal(photo.rgb[0, 0], [255, 255, 255])


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    photo = load_photo(_save(image, tmp_path / "p.png"))
    assert photo.source_mode == "P" and photo.rgb.shape == (48, 64, 3)
    assert np.abs(photo.rgb.astype(int) - _gradient().astype(int)).mean() < 20

    index = np.zeros((20, 20), np.uint8)
    index[:, 10:] = 1
    pal = Image.fromarray(index, "P")
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    path = _save(pal, tmp_path / "pt.png", transparency=1)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(photo.rgb[0, -1], [255, 255, 255])  # transparent -> white


def test_multiframe_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (24, 24), c) for c in ("red", "blue", "green")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    photo = load_photo(path)
    r, g, b = photo.rgb[5, 5]
    assert r > 200 and g < 50 and b < 50
    assert any("3 frames" in note for note in photo.notes)


def test_multiframe_tiff(tmp_path):
    frames = [Image.new("RGB", (24, 24), c) for c in ("green", "red")]
    path = tmp_path / "pages.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    photo = load_photo(path)
    assert photo.rgb[0, 0, 1] > 100 and photo.rgb[0, 0, 0] < 50
    assert any("first one" in note for note in photo.notes)


# -- EXIF ---------------------------------------------------------------------------------------------


def test_exif_orientation_6_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # landscape as stored: left red, right blue
    stored[:, :20] = [255, 0, 0]
    stored[:, 20:] = [0, 0, 255]
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo = load_photo(_save(image, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert photo.rgb.shape == (40, 20, 3)  # transposed
    assert photo.rgb[2, 10, 0] > 200 and photo.rgb[2, 10, 2] < 60  # left side went to the top
    assert photo.rgb[-3, 10, 2] > 200 and photo.rgb[-3, 10, 0] < 60
    assert any("upright" in note for note in photo.notes)


def test_exif_focal_lengths(tmp_path):
    image = Image.fromarray(_gradient())
    exif = image.getexif()
    ifd = exif.get_ifd(0x8769)
    ifd[0xA405] = 28
    ifd[0x920A] = 4.25
    photo = load_photo(_save(image, tmp_path / "f.jpg", exif=exif))
    assert photo.focal_35mm == pytest.approx(28.0)
    assert photo.focal_mm == pytest.approx(4.25)


def test_exif_zero_focal_means_unknown(tmp_path):
    image = Image.fromarray(_gradient())
    exif = image.getexif()
    exif.get_ifd(0x8769)[0xA405] = 0
    photo = load_photo(_save(image, tmp_path / "z.jpg", exif=exif))
    assert photo.focal_35mm is None and photo.focal_mm is None


# -- real photos and resizing -------------------------------------------------------------------------


def _real_photos() -> list[Path]:
    if not PHOTOS.is_dir():
        return []
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.mark.skipif(not _real_photos(), reason="shared real photos not available")
@pytest.mark.parametrize("path", _real_photos(), ids=lambda p: p.name)
def test_real_photos_load(path):
    photo = load_photo(path)
    assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    assert min(photo.rgb.shape[:2]) >= 256
    assert photo.rgb.std() > 10  # a real picture, not a blank


@pytest.mark.skipif(not (PHOTOS / "interior_office_03_dsine.png").exists(), reason="no photo")
def test_office_png_alpha_dropped():
    photo = load_photo(PHOTOS / "interior_office_03_dsine.png")
    assert photo.rgb.shape == (480, 640, 3)
    assert load_image_rgb(PHOTOS / "interior_office_03_dsine.png").shape == (480, 640, 3)


def test_resize_to_width():
    rgb = _gradient(640, 427)
    small = resize_to_width(rgb, 320)
    assert small.shape == (216, 320, 3) and small.dtype == np.uint8  # 213.5 -> 216 (multiple of 8)
    big = resize_to_width(rgb, 1280, multiple=16)
    assert big.shape[1] == 1280 and big.shape[0] % 16 == 0
    same = resize_to_width(_gradient(64, 48), 64)
    np.testing.assert_array_equal(same, _gradient(64, 48))
    assert resize_to_width(_gradient(640, 10), 64).shape == (8, 64, 3)  # never 0 rows
    with pytest.raises(ValueError):
        resize_to_width(rgb, 0)
