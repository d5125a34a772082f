"""Names and defaults of the epoch-selection rules (:mod:`stainshift.select`), importable without torch (the CLI
builds ``--help`` from them).

The SSIM gate is calibrated on the SIMULATOR (ground truth), not on any real site that results are reported for
(``benchmarks/calibrate_selection.py`` -> ``benchmarks/results/calibrate_selection.md``): source cells against
the same cell rendered by the target hospital (a perfect translation) and against a different cell of the same
class (broken morphology), at the scale the benchmarks use (cells at 64 px, 96 px crops). A 1 px blur separates
the two best (worst source's p10 of perfect minus p90 of swapped: +0.218, against +0.213 unblurred and +0.197 at
2 px); the threshold is the midpoint between the worst source's mean perfect-translation SSIM and the mean
swapped-cell SSIM: 0.694, rounded to 0.70. It passes every perfect translation and rejects 96-99.7% of swapped
cells; it does not catch half a nucleus erased (SSIM 0.84-0.90): the gate stops gross damage only.
"""

RULES = ("labelled", "label-free")
DEFAULT_SSIM_MIN = 0.70
SSIM_BLUR = 1.0          # px: Gaussian blur before SSIM (morphology, not pixel noise or GAN texture)
DEFAULT_TIE_TOL = 0.01
