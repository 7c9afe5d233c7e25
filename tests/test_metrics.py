import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from models.metrics import psnr, ssim
from storage.formats.images import load_image_rgb
from tests.helpers import PHOTOS


@pytest.fixture(scope="module")
def pair():
    a = load_image_rgb(PHOTOS / "interior_office_03_dsine.png")
    rng = np.random.default_rng(0)
    b = np.clip(a.astype(int) + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_matches_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert psnr(a, a) == float("inf")
    mask = np.zeros(a.shape[:2], bool)
    assert np.isnan(psnr(a, b, mask))
    mask[100:200, 100:300] = True
    assert psnr(a, b, mask) == pytest.approx(
        peak_signal_noise_ratio(a[100:200, 100:300], b[100:200, 100:300], data_range=255)
    )


def test_ssim_matches_skimage(pair):
    a, b = pair
    ref = structural_similarity(
        a,
        b,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    # skimage averages over the whole image incl. its padded border; we average the interior.
    ours = ssim(a, b)
    assert ours == pytest.approx(ref, abs=5e-3)
    assert ssim(a, a) == pytest.approx(1.0)


def test_masked_ssim_ignores_outside(pair):
    a, b = pair
    c = a.copy()
    c[:, 320:] = 0  # destroy the right half
    mask = np.zeros(a.shape[:2], bool)
    mask[:, :300] = True
    assert ssim(a, c, mask) == pytest.approx(1.0)
    assert ssim(a, c) < 0.9
