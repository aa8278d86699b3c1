"""Where each random decision of one view sits in its vector of uniform draws.

Shared by the TF host path (`augment_tf`) and the JAX device path (`augment_jax`) so that the
same draws give the same view in both; TF-free, so the device path imports it without TF.
"""
CROP_ATTEMPTS = 10
AREA = slice(0, CROP_ATTEMPTS)                              # crop area, one per attempt
ASPECT = slice(CROP_ATTEMPTS, 2 * CROP_ATTEMPTS)            # crop log-aspect, one per attempt
OFFSET = slice(2 * CROP_ATTEMPTS, 2 * CROP_ATTEMPTS + 2)    # crop (y, x) offset
(FLIP, JITTER_APPLY, BRIGHT, CONTRAST, SAT, HUE, GRAY, BLUR_APPLY, BLUR_SIGMA,
 SOLARIZE) = range(2 * CROP_ATTEMPTS + 2, 2 * CROP_ATTEMPTS + 12)
ORDER = slice(2 * CROP_ATTEMPTS + 12, 2 * CROP_ATTEMPTS + 16)  # jitter order
NUM_DRAWS = 2 * CROP_ATTEMPTS + 16
