"""Fine-tuning the generative painters (``loci train``).

Stages, one module each:

- ``footage``: posed frames (camera + lazy loaders) and pose conventions of footage formats;
- ``samples``: training samples built through the spatial memory, as inference routes them;
- ``denoiser``: the painter-denoiser protocol; ``painters``: its registry (``sd_painter``:
  ``sd-inpaint``);
- ``config``: the run settings (TOML/JSON + overrides); ``recipe``: the per-step mathematics
  (self-augmented conditioning, masked loss, evaluation, seeds); ``trainer``: the loop (LoRA,
  precision, checkpoints, resume, metrics);
- ``drift``: the drift probe's colour and texture measures.

Importing this package is light: heavy libraries (diffusers, peft) load inside the modules
that train.
"""
