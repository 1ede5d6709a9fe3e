"""The study's statistics: what is chosen (on validation), the design the runs came from, and the verdicts.

- `choice`: per-setting summaries and every best, chosen on the validation split.
- `design`: seeds as blocks, the test images as one sample, each setting's and contrast's own variance.
- `verdicts`: the study's planned contrasts, Holm-adjusted together with the families' comparison, and power.
- `factorial`: a full factorial's main effects and interactions.
- `original`: the original study's single runs beside ours.
"""

from beanlib.stats.choice import (best_run, by_factor, choose, family_choice, ran_in_full, setting_stats,  # noqa: F401
                                  winners)
from beanlib.stats.design import accuracy, contrast  # noqa: F401
from beanlib.stats.original import against_original, comparisons, half_width, original_p  # noqa: F401
from beanlib.stats.verdicts import ALPHA, Contrast, Verdict, holm, study_verdicts  # noqa: F401
