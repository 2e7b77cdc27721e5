/*
 * nng_spin.h - the busy-poll budget of a direct poller (nng_direct.c,
 * "Busy polling"), as pure functions so the policy is tested by itself
 * (tests/unit/test_nng_spin.c).
 *
 * The budget is how long a poller that has handled events keeps polling
 * before it sleeps. A spin that catches nothing halves it, and below
 * NNG_SPIN_FLOOR_US it is 0 (no spinning); a sleep that ended within the
 * configured bound would have been caught by a spin of twice its length,
 * which becomes the budget (at most the bound). A spin that catches an
 * event leaves it as it is.
 */
#ifndef TW_NNG_SPIN_H
#define TW_NNG_SPIN_H

#include <stdint.h>

#define NNG_SPIN_FLOOR_US 4

static inline int64_t nng_spin_after_miss(int64_t budget_us)
{
    budget_us /= 2;
    return budget_us < NNG_SPIN_FLOOR_US ? 0 : budget_us;
}

static inline int64_t nng_spin_after_sleep(int64_t budget_us, int64_t slept_us, int64_t max_us)
{
    if (max_us <= 0) return 0;
    if (slept_us < 0 || slept_us >= max_us) return budget_us;
    int64_t b = 2 * slept_us + NNG_SPIN_FLOOR_US;
    return b > max_us ? max_us : b;
}

#endif
