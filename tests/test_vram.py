"""The VRAM planner: parameter counts (safetensors headers, published configs on the meta
device), plans for the published Wan models on a 24 GB card, refusals with numbers, and the
activation constants re-traced from the real diffusers modules on fake tensors."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.manager import ModelError
from models.synthesis import vram
from tests.helpers import tiny_wan

VACE13 = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
VACE14 = "Wan-AI/Wan2.1-VACE-14B-diffusers"
TI2V5 = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
I2V14 = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
GIB = 2**30


def test_published_parameter_counts():
    p = {m: vram.published_spec(m).params for m in vram.PUBLISHED}
    assert set(p) == set(vram.PUBLISHED_PARAMS)
    assert abs(p[VACE13]["transformer"] / 1e9 - 2.15) < 0.01  # 1.4B DiT + 15 VACE blocks
    assert abs(p[VACE14]["transformer"] / 1e9 - 17.34) < 0.01
    assert abs(p[TI2V5]["transformer"] / 1e9 - 5.00) < 0.01
    assert abs(p[I2V14]["transformer"] / 1e9 - 16.40) < 0.01
    assert abs(p[VACE13]["text_encoder"] / 1e9 - 5.68) < 0.01  # UMT5-XXL encoder
    assert abs(p[I2V14]["image_encoder"] / 1e9 - 0.63) < 0.01  # CLIP ViT-H
    assert p[TI2V5]["vae"] > 5 * p[VACE13]["vae"]  # the Wan 2.2 VAE is the bigger one
    spec = vram.published_spec(TI2V5)
    assert spec.vae_spatial == 16 and spec.multiple == 32 and spec.per_token_timesteps


@pytest.mark.slow
def test_published_counts_are_the_configs_counts():
    """The stored counts are what the published configs build (on the meta device)."""
    for model_id in vram.PUBLISHED:
        assert vram.published_params(model_id) == vram.published_spec(model_id).params


def test_folder_counts_are_exact(tmp_path):
    from diffusers import WanVACETransformer3DModel

    folder = tiny_wan(tmp_path / "vace", "vace")
    spec = vram.spec_from_folder(folder)
    model = WanVACETransformer3DModel.from_pretrained(folder / "transformer")
    assert spec.params["transformer"] == sum(p.numel() for p in model.parameters())
    cfg = dict(model.config)
    assert vram.meta_params("WanVACETransformer3DModel", cfg) == spec.params["transformer"]
    assert spec.vace_layers == 2 and spec.dim == 32 and spec.vae_base_dim == 3


def _work(model: str) -> vram.Workload:
    """The default chunk: 1 context + 16 targets at the model's trained area (4:3 frames)."""
    if model == TI2V5:
        return vram.Workload(1024, 768, 17, 0, 30, True, encodes=1)
    vace = "VACE" in model
    return vram.Workload(720, 544, 17, int(vace), 30, True, encodes=2 if vace else 1)


def test_published_models_on_a_24_gb_card():
    plans = {m: vram.plan(vram.published_spec(m), _work(m), device="cuda", budget_gb=24.0)
             for m in vram.PUBLISHED}  # fmt: skip
    # 1.3B fits with margin, the transformer resident; 14B streams its blocks.
    assert plans[VACE13].mode == "text-offload" and not plans[VACE13].vae_tiling
    assert plans[VACE13].peak_gb <= 0.9 * 24
    assert plans[VACE14].mode == "group-offload" and plans[I2V14].mode == "group-offload"
    assert plans[TI2V5].mode in ("model-offload", "text-offload")
    for p in plans.values():
        assert p.peak_gb <= 0.9 * 24 and p.as_dict()["estimate"] is True
    # The 1.3B estimate per frame (16 targets per chunk) is under the 7 s target.
    assert plans[VACE13].seconds_per_chunk / 16 < 7
    # Everything resident needs an 80 GB card for the 14B model.
    big = vram.plan(vram.published_spec(VACE14), _work(VACE14), device="cuda", budget_gb=80)
    assert big.mode == "gpu" and 40 < big.peak_gb < 72


def test_refusals_come_with_numbers():
    spec = vram.published_spec(VACE14)
    with pytest.raises(ModelError, match=r"needs about \d+\.\d GiB.*--synthesis reproject"):
        vram.plan(spec, _work(VACE14), device="cuda", budget_gb=2.0)
    with pytest.raises(ModelError, match="does not fit"):
        vram.plan(spec, _work(VACE14), device="cuda", budget_gb=24.0, offload="gpu")
    with pytest.raises(ModelError, match="host RAM"):
        vram.plan(spec, _work(VACE14), device="cuda", budget_gb=24.0, host_gb=16.0)
    with pytest.raises(ModelError, match="offload must be"):
        vram.plan(spec, _work(VACE14), device="cuda", offload="sometimes")
    cpu = vram.plan(vram.published_spec(VACE13), _work(VACE13), device="cpu")
    assert cpu.mode == "cpu" and cpu.seconds_per_chunk > 3600 and cpu.host_gb > 25


# ---------------------------------------------------------------------------------------------
# The activation constants, re-traced: the real modules run on fake tensors (no memory, no
# weights) while a dispatch mode counts the bytes of every live tensor they create.


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensors created inside the mode and still alive (views share storage;
    tensors made outside, such as parameters, are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def _drop(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.now -= entry[0]
                del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat_in = tree_flatten((args, kwargs))[0]
        inputs = {a.untyped_storage()._cdata for a in flat_in if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            if key in self.live:
                self.live[key][1] += 1
            elif key in inputs:
                continue  # a view of something made outside
            else:
                n = t.untyped_storage().nbytes()
                self.live[key] = [n, 1]
                self.now += n
                self.peak = max(self.peak, self.now)
            weakref.finalize(t, self._drop, key)
        return out


def _traced_dit(model_id: str, frames: int, width: int, height: int) -> tuple[float, float]:
    """(traced, planned) activation bytes of one transformer forward of a published model."""
    import diffusers
    from torch._subclasses.fake_tensor import FakeTensorMode

    cls, cfg = vram.PUBLISHED[model_id]["transformer"]
    spec = vram.published_spec(model_id)
    work = vram.Workload(width, height, frames, 1 if "vace" in cls.lower() else 0)
    T = (frames - 1) // 4 + 1 + work.references
    h, w = height // spec.vae_spatial, width // spec.vae_spatial
    default = torch.get_default_dtype()
    try:
        with FakeTensorMode():
            torch.set_default_dtype(torch.bfloat16)
            model = getattr(diffusers, cls)(**cfg)
            kw = dict(hidden_states=torch.randn(1, cfg["in_channels"], T, h, w),
                      encoder_hidden_states=torch.randn(1, 512, 4096), return_dict=False)  # fmt: skip
            if spec.vace_layers:
                kw.update(control_hidden_states=torch.randn(1, 96, T, h, w),
                          control_hidden_states_scale=torch.ones(spec.vace_layers),
                          timestep=torch.tensor([500.0]))  # fmt: skip
            else:
                kw["timestep"] = torch.full((1, T * (h // 2) * (w // 2)), 500.0)
            tracker = LiveBytes()
            with torch.no_grad(), tracker:
                model(**kw)
    finally:
        torch.set_default_dtype(default)
    return tracker.peak, vram.dit_activation_bytes(spec, work)


def _traced_vae(model_id: str, tiled: bool, frames: int = 17, width: int = 832, height: int = 480):
    """((traced decode, planned decode), (traced encode, planned encode)) bytes."""
    from diffusers import AutoencoderKLWan
    from torch._subclasses.fake_tensor import FakeTensorMode

    spec = vram.published_spec(model_id)
    cfg = vram.PUBLISHED[model_id]["vae"][1]
    work = vram.Workload(width, height, frames)
    with FakeTensorMode():
        vae = AutoencoderKLWan(**cfg)
        if tiled:
            vae.enable_tiling()
        s = spec.vae_spatial
        z = torch.randn(1, spec.z_dim, (frames - 1) // 4 + 1, height // s, width // s)
        x = torch.randn(1, 3, frames, height, width)
        dec, enc = LiveBytes(), LiveBytes()
        with torch.no_grad():
            with dec:
                vae.decode(z)
            with enc:
                vae.encode(x)
    planned_dec, planned_enc = vram.vae_activation_bytes(spec, work, tiled)
    return (dec.peak, planned_dec), (enc.peak, planned_enc)


def _close(traced: float, planned: float, rel: float = 0.1) -> bool:
    return abs(planned - traced) <= rel * traced


def test_planned_activations_match_a_trace_of_the_1_3b_model():
    traced, planned = _traced_dit(VACE13, 17, 832, 480)
    assert _close(traced, planned), (traced / GIB, planned / GIB)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", [VACE14, TI2V5])
def test_planned_activations_match_traces_of_the_larger_models(model_id):
    """The 14B model shares the Wan 2.1 VAE with the 1.3B one; TI2V has the Wan 2.2 VAE."""
    width, height = (1280, 704) if model_id == TI2V5 else (832, 480)
    for frames in (17, 33) if model_id == TI2V5 else (17,):  # TI2V: per-token timesteps
        traced, planned = _traced_dit(model_id, frames, width, height)
        assert _close(traced, planned), (model_id, frames, traced / GIB, planned / GIB)
    # With tiling (256 px tiles), 5 frames show the peak as well as 17 would, 4x faster.
    for tiled, frames in ((False, 17), (True, 5)):
        (dec, p_dec), (enc, p_enc) = _traced_vae(model_id, tiled, frames=frames)
        assert _close(dec, p_dec, 0.15) and _close(enc, p_enc, 0.15), (tiled, dec, p_dec, enc)


@pytest.mark.slow
def test_time_estimate_counts_the_transformer_flops():
    """The linear-layer term of the time estimate against torch's FLOP counter on the real
    1.3B modules (attention is added on top: the counter does not see the CPU SDPA kernel)."""
    import diffusers
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    cls, cfg = vram.PUBLISHED[VACE13]["transformer"]
    spec = vram.published_spec(VACE13)
    work = vram.Workload(832, 480, 17, 1, steps=1, cfg=False)
    L = work.tokens(spec)
    default = torch.get_default_dtype()
    try:
        with FakeTensorMode():
            torch.set_default_dtype(torch.bfloat16)
            model = getattr(diffusers, cls)(**cfg)
            T, h, w = 6, 60, 104
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(hidden_states=torch.randn(1, 16, T, h, w), timestep=torch.tensor([500.0]),
                      encoder_hidden_states=torch.randn(1, 512, 4096),
                      control_hidden_states=torch.randn(1, 96, T, h, w),
                      control_hidden_states_scale=torch.ones(15), return_dict=False)  # fmt: skip
    finally:
        torch.set_default_dtype(default)
    dit, _ = vram.chunk_flops(spec, work)
    attention = 4 * L * L * spec.dim * (spec.layers + spec.vace_layers)
    assert _close(counter.get_total_flops(), dit - attention, 0.05)
