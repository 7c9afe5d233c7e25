"""The registry of trainable painters: name -> factory of a :class:`PainterDenoiser`.

The name is the synthesis backend the LoRA loads into. Heavy imports (diffusers) happen inside
the factories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.train.denoiser import PainterDenoiser, TrainError

_REGISTRY: dict[str, Callable[..., PainterDenoiser]] = {}


def register_painter_denoiser(name: str):
    def deco(factory: Callable[..., PainterDenoiser]) -> Callable[..., PainterDenoiser]:
        _REGISTRY[name] = factory
        return factory

    return deco


def painter_names() -> list[str]:
    return sorted(_REGISTRY)


def create_painter_denoiser(name: str, **options: Any) -> PainterDenoiser:
    """The trainable painter ``name`` (model=, device=, mixed_precision=, ...)."""
    if name not in _REGISTRY:
        raise TrainError(
            f"the {name!r} painter cannot be fine-tuned; trainable painters: "
            f"{', '.join(painter_names())}"
        )
    return _REGISTRY[name](**options)


@register_painter_denoiser("sd-inpaint")
def _sd_inpaint(**options: Any) -> PainterDenoiser:
    from models.train.sd_painter import SDInpaintDenoiser

    return SDInpaintDenoiser(**options)


@register_painter_denoiser("vace")
def _vace(**options: Any) -> PainterDenoiser:
    from models.train.vace_painter import VaceDenoiser

    return VaceDenoiser(**options)
