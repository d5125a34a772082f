"""Names and defaults of the epoch-selection rules (:mod:`stainshift.select`), importable without torch (the CLI
builds ``--help`` from them)."""

RULES = ("labelled", "label-free")
DEFAULT_SSIM_MIN = 0.75
SSIM_BLUR = 1.0          # px: Gaussian blur before SSIM (morphology, not pixel noise or GAN texture)
DEFAULT_TIE_TOL = 0.01
