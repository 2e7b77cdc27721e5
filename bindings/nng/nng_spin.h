/*
 * nng_spin.h - the busy-poll budget of a direct poller (nng_direct.c,
 * "Busy polling"), as one pure function so the policy is tested by itself
 * (tests/unit/test_nng_spin.c), including over a run of waits.
 *
 * The budget is how long a poller that has handled events keeps polling
 * before it sleeps. After each wait, given whether it spun, whether the
 * spin caught the event, and the gap (from going idle, before any spin,
 * to the event):
 *   - a spin that caught the event leaves the budget as it is;
 *   - a spin that caught nothing halves it (below NNG_SPIN_FLOOR_US: 0);
 *   - then, if the gap was shorter than the bound, a spin of twice the gap
 *     would have caught it: that becomes the budget (at most the bound).
 * The gap must be measured from before the spin: measured from the end of
 * a missed spin, every gap between the bound and twice the bound re-armed
 * the budget at once and it never decayed (found in review: steady
 * traffic every 110-199 us spun half a core for nothing).
 */
#ifndef TW_NNG_SPIN_H
#define TW_NNG_SPIN_H

#include <stdbool.h>
#include <stdint.h>

#define NNG_SPIN_FLOOR_US 4

static inline int64_t nng_spin_update(int64_t budget_us, bool spun, bool caught, int64_t gap_us,
                                      int64_t max_us)
{
    if (max_us <= 0) return 0;
    if (spun && caught) return budget_us;
    if (spun) {
        budget_us /= 2;
        if (budget_us < NNG_SPIN_FLOOR_US) budget_us = 0;
    }
    if (gap_us >= 0 && gap_us < max_us) {
        int64_t b = 2 * gap_us + NNG_SPIN_FLOOR_US;
        budget_us = b > max_us ? max_us : b;
    }
    return budget_us;
}

#endif
