"""A fuzz corpus of bad (and merely unusual) photos, generated here, through the whole studio.

Each kind is made in code from one base image. Every one must get a clear, one-line message (a
``PhotoError``; nothing is stored) or be accepted with notes and give a usable world (a done
photo step with frame 0 at the working width). Kinds that must be refused (truncated data,
header lies, bombs, extreme shapes, non-images) and kinds that must be accepted (every Pillow
mode, EXIF orientations, animations, HEIC, polyglots whose image is sound) say so.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from storage.errors import PhotoError
from storage.formats.images import load_photo
from studio.context import StudioContext
from studio.service import Studio, user_facing

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"


def _base(width: int = 160, height: int = 120) -> np.ndarray:
    """A non-symmetric textured RGB image (orientation mistakes show), deterministic."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + y) % 64 * 4], -1).astype(np.uint8)
    img[: height // 3, : width // 4] = (220, 40, 40)  # a red block in the top-left corner
    noise = rng.integers(-12, 12, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_lying(width: int, height: int, rows: int) -> bytes:
    """An RGB PNG whose header promises ``height`` rows but whose data holds ``rows``."""
    raw = b"".join(b"\x00" + bytes([90, 140, 200]) * width for _ in range(rows))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))  # fmt: skip


def _jpeg_header(width: int, height: int) -> bytes:
    """A JPEG that claims ``width`` x ``height`` in its SOF0 and holds nothing else."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _with_exif(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(rgb), "PNG", exif=exif)


def _heif(rgb: np.ndarray, alpha: bool = False) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    img = Image.fromarray(rgb)
    if alpha:
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(np.full(rgb.shape[:2], 180, np.uint8)))
    return _save(img, "HEIF", quality=90)


def corpus() -> list[tuple[str, str, bytes, str]]:
    """(kind, file name, bytes, expectation) for every kind of photo the test throws."""
    rgb = _base()
    im = Image.fromarray(rgb)
    png, jpeg = _save(im, "PNG"), _save(im, "JPEG", quality=90)
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))))
    frames = [Image.fromarray(np.roll(rgb, 10 * i, 1)) for i in range(3)]
    grey16 = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    import cv2

    rgb16 = cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)[1].tobytes()
    rgba16 = cv2.imencode(".png", np.dstack([rgb[..., ::-1], rgb[..., :1]]).astype(np.uint16)
                          * 257)[1].tobytes()  # fmt: skip
    items: list[tuple[str, str, bytes, str]] = [
        ("empty file", "empty.jpg", b"", REFUSE),
        ("one byte", "one.jpg", b"\xff", REFUSE),
        ("random bytes", "noise.jpg", np.random.default_rng(1).bytes(5000), REFUSE),
        ("text named .jpg", "notes.jpg", b"just some text, not a picture\n" * 20, REFUSE),
        ("HTML named .jpg", "page.jpg", b"<html><script>alert(1)</script></html>", REFUSE),
        ("SVG", "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="99"/>', REFUSE),
        ("PDF", "doc.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", REFUSE),
        ("truncated JPEG", "half.jpg", jpeg[: len(jpeg) // 2], REFUSE),
        ("truncated PNG file", "cut.png", png[: len(png) * 2 // 3], REFUSE),
        ("PNG header lies (7000x7000, one row)", "liar.png", _png_lying(7000, 7000, 1), REFUSE),
        ("PNG with rows missing (300 of 600)", "short.png", _png_lying(800, 600, 300), REFUSE),
        ("PNG zero size header", "zero.png", _png_lying(0, 0, 0), REFUSE),
        ("PNG bomb header (100k x 100k)", "bomb.png", _png_lying(100_000, 100_000, 1), REFUSE),
        ("JPEG bomb header (65k x 65k)", "bomb.jpg", _jpeg_header(65_000, 65_000), REFUSE),
        ("extreme aspect 16x10000", "tall.png", _png_lying(16, 10_000, 10_000), REFUSE),
        ("extreme aspect 10000x16", "wide.png", _png_lying(10_000, 16, 16), REFUSE),
        ("aspect 7:1", "strip.jpg", _save(im.resize((700, 100)), "JPEG"), REFUSE),
        ("tiny 8x8", "tiny.png", _save(im.resize((8, 8)), "PNG"), REFUSE),
        ("GIF/JavaScript polyglot", "poly.gif", b"GIF89a/*\x00\x00*/=1;alert(1);//", REFUSE),
        ("aspect 6:1 (the limit)", "pano.jpg", _save(im.resize((600, 100)), "JPEG"), ACCEPT),
        ("JPEG + appended zip", "jpegzip.jpg", jpeg + b"PK\x03\x04" + b"\x00" * 64, ACCEPT),
        ("PNG + trailing HTML", "pnghtml.png", png + b"<html><script>x</script></html>", ACCEPT),
        ("mode 1", "bw.png", _save(im.convert("1"), "PNG"), ACCEPT),
        ("mode L", "grey.png", _save(im.convert("L"), "PNG"), ACCEPT),
        ("mode LA", "greya.png", _save(im.convert("LA"), "PNG"), ACCEPT),
        ("mode P", "pal.png", _save(im.convert("P"), "PNG"), ACCEPT),
        ("mode P, 2-bit", "pal2.png", _save(im.convert("P", colors=4), "PNG", bits=2), ACCEPT),
        (
            "mode P + transparency",
            "palt.png",
            _save(im.convert("P"), "PNG", transparency=0),
            ACCEPT,
        ),  # fmt: skip
        ("mode RGBA", "alpha.png", _save(rgba, "PNG"), ACCEPT),
        ("mode CMYK", "print.jpg", _save(im.convert("CMYK"), "JPEG"), ACCEPT),
        ("mode YCbCr", "ycc.jpg", _save(im.convert("YCbCr"), "JPEG"), ACCEPT),
        ("mode LAB", "lab.tif", _save(im.convert("LAB"), "TIFF"), ACCEPT),
        ("mode I;16", "grey16.png", _save(grey16, "PNG"), ACCEPT),
        (
            "mode I",
            "int32.tif",
            _save(Image.fromarray(rgb[..., 1].astype(np.int32) * 1000), "TIFF"),
            ACCEPT,
        ),  # fmt: skip
        (
            "mode F with NaN",
            "float.tif",
            _save(
                Image.fromarray(
                    np.where(rgb[..., 2] > 200, np.nan, rgb[..., 2] / 255.0).astype(np.float32)
                ),
                "TIFF",
            ),
            ACCEPT,
        ),  # fmt: skip
        ("16-bit RGB PNG", "rgb16.png", rgb16, ACCEPT),
        ("16-bit RGBA PNG", "rgba16.png", rgba16, ACCEPT),
        ("progressive JPEG", "prog.jpg", _save(im, "JPEG", progressive=True), ACCEPT),
        *[
            (f"EXIF orientation {o}", f"orient{o}.png", _with_exif(rgb, o), ACCEPT)
            for o in range(2, 9)
        ],  # fmt: skip
        ("EXIF garbage (orientation 99)", "garbage.png", _with_exif(rgb, 99), ACCEPT),
        (
            "animated GIF",
            "anim.gif",
            _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            ACCEPT,
        ),  # fmt: skip
        (
            "animated PNG",
            "anim.png",
            _save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
            ACCEPT,
        ),  # fmt: skip
        (
            "multi-page TIFF",
            "pages.tif",
            _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
            ACCEPT,
        ),  # fmt: skip
        ("HEIC", "phone.heic", _heif(rgb), ACCEPT),
        ("HEIF with alpha", "alpha.heif", _heif(rgb, alpha=True), ACCEPT),
        ("WebP", "web.webp", _save(im, "WEBP"), ACCEPT),
        ("BMP", "old.bmp", _save(im, "BMP"), ACCEPT),
    ]
    # Interlaced (Adam7) PNGs, whole and cut short: neither Pillow nor OpenCV writes them.
    items.append(("interlaced PNG, rows missing", "adam7cut.png", _adam7(rgb, cut=True), REFUSE))
    items.append(("interlaced PNG, complete (by hand)", "adam7ok.png", _adam7(rgb), ACCEPT))
    return items


def _adam7(rgb: np.ndarray, cut: bool = False) -> bytes:
    """An Adam7-interlaced RGB PNG of ``rgb`` (filter 0), optionally missing its last passes."""
    h, w = rgb.shape[:2]
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2))  # fmt: skip
    raw = b""
    for x0, y0, dx, dy in passes[: 5 if cut else 7]:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))  # fmt: skip


CORPUS = corpus()


def test_the_corpus_has_thirty_kinds_or_more():
    assert len({k for k, *_ in CORPUS}) >= 30


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    s = Studio(StudioContext(data_dir=tmp_path_factory.mktemp("fuzz") / "data", width=64))
    yield s
    s.close()


def _counts(studio: Studio, pid: str, key: str) -> tuple[int, int]:
    from sqlalchemy import func, select

    from storage.db import Artifact

    with studio.db.read_session() as session:
        n_art = session.scalar(select(func.count()).select_from(Artifact))
    return len(studio.repo.list_cells(pid, key)), int(n_art or 0)


@pytest.mark.parametrize("kind,name,data,expect", CORPUS, ids=[k for k, *_ in CORPUS])
def test_each_bad_photo_gets_a_clear_answer(studio, tmp_path, kind, name, data, expect):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        photo = load_photo(path)
    except PhotoError as e:
        message = str(e)
        assert expect in (REFUSE, EITHER), f"{kind} was refused: {message}"
        assert "\n" not in message and 20 < len(message) < 300 and "Traceback" not in message
        assert name in message or "photo" in message or "image" in message, message
        photo = None
    else:
        assert expect in (ACCEPT, EITHER), f"{kind} was accepted: {photo.rgb.shape}"
        assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
        assert max(photo.rgb.shape[:2]) <= 6 * min(photo.rgb.shape[:2])
    # Through the studio: a refusal leaves nothing behind; an accepted photo gives a world.
    pid, _view, key = studio.create_project(kind[:60])
    before = _counts(studio, pid, key)
    if photo is None:
        with pytest.raises(user_facing()):
            studio.set_photo(pid, key, str(path))
        assert _counts(studio, pid, key) == before
        return
    cell = studio.set_photo(pid, key, str(path))
    assert cell.status == "done"
    ws = studio.world(pid, key)
    assert len(ws.frames) == 1 and ws.width == 64
    if kind.startswith("EXIF orientation"):
        # Upright: the red block of the base image lands where the orientation tag says.
        o = int(kind.split()[-1])
        expected = _upright(_base(), o)
        assert np.array_equal(photo.rgb, expected)


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """The image a viewer shows for pixels stored with EXIF ``orientation`` (TIFF/EXIF spec
    table, written out here rather than taken from the code under test)."""
    return {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise to view
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # mirrored along the anti-diagonal
        8: lambda a: np.rot90(a, 1),  # turned 90 degrees anticlockwise to view
    }[orientation](rgb)


def test_the_cli_refuses_a_lying_png_with_one_line(tmp_path, capsys):
    from studio.cli import main

    bad = tmp_path / "liar.png"
    bad.write_bytes(_png_lying(7000, 7000, 1))
    code = main(["generate", str(bad), "--out", str(tmp_path / "w"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "rows it promises" in err[0], err
    assert not (tmp_path / "w").exists()


def test_the_cli_takes_a_heic_photo(tmp_path, capsys):
    from studio.cli import main

    photo = tmp_path / "phone.heic"
    photo.write_bytes(_heif(_base()))
    code = main(["generate", str(photo), "--out", str(tmp_path / "w"), "--frames", "2",
                 "--width", "64", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "w" / "frames" / "000001.png").is_file()
