/*
 * test_nng_spin.c - the direct pollers' busy-poll budget (nng_spin.h): one
 * step at a time (arms after a short gap, never above the bound, halves on
 * a miss down to 0, off stays off), and over runs of waits with a steady
 * gap, where it must keep catching short gaps and stop spinning for gaps
 * beyond the bound, including those between the bound and twice the bound.
 */
#include "bindings/nng/nng_spin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#define MAX 100

static void arms_after_a_short_gap(void **state)
{
    (void)state;
    /* not spinning: a 30 us gap would have been caught by a 64 us spin */
    assert_int_equal(nng_spin_update(0, false, false, 30, MAX), 2 * 30 + NNG_SPIN_FLOOR_US);
    /* never above the bound */
    assert_int_equal(nng_spin_update(0, false, false, 70, MAX), MAX);
    assert_int_equal(nng_spin_update(0, false, false, 99, MAX), MAX);
    /* a missed spin whose event still came within the bound re-arms */
    assert_int_equal(nng_spin_update(20, true, false, 60, MAX), MAX);
}

static void long_gaps_do_not_arm(void **state)
{
    (void)state;
    assert_int_equal(nng_spin_update(0, false, false, MAX, MAX), 0);
    assert_int_equal(nng_spin_update(0, false, false, 5000000, MAX), 0);
    assert_int_equal(nng_spin_update(12, false, false, 250, MAX), 12); /* no spin, no change */
    assert_int_equal(nng_spin_update(0, false, false, -5, MAX), 0);    /* clock went back */
}

static void hits_keep_and_misses_halve(void **state)
{
    (void)state;
    assert_int_equal(nng_spin_update(80, true, true, 0, MAX), 80);
    int64_t b = MAX;
    int misses = 0;
    while (b > 0) {
        int64_t nb = nng_spin_update(b, true, false, 10 * MAX, MAX);
        assert_true(nb < b);
        assert_true(nb == 0 || nb >= NNG_SPIN_FLOOR_US);
        b = nb;
        misses++;
    }
    /* 100 -> 50 -> 25 -> 12 -> 6 -> 0: what sparse traffic costs after a burst */
    assert_int_equal(misses, 5);
}

static void off_stays_off(void **state)
{
    (void)state;
    assert_int_equal(nng_spin_update(0, false, false, 1, 0), 0);
    assert_int_equal(nng_spin_update(50, true, true, 1, 0), 0);
}

/* A poller whose events come `gap` us after it goes idle, `waits` times,
 * starting with a full budget (right after a burst), as nng_direct.c's
 * next_events drives it: the spin catches the event when the budget
 * reaches the gap. Returns the spin time, counts the hits. */
static int64_t run(int64_t gap, int waits, int *hits)
{
    int64_t b = MAX, spun_us = 0;
    *hits = 0;
    for (int i = 0; i < waits; i++) {
        bool spun = b > 0, caught = spun && b >= gap;
        spun_us += caught ? gap : b;
        *hits += caught;
        b = nng_spin_update(b, spun, caught, caught ? 0 : gap, MAX);
    }
    return spun_us;
}

static void steady_gaps(void **state)
{
    (void)state;
    int hits;
    /* round trips that come back within the bound are all caught */
    for (int64_t gap = 5; gap < MAX; gap += 7) {
        run(gap, 1000, &hits);
        assert_int_equal(hits, 1000);
    }
    /* gaps beyond the bound: a few halving spins after the burst, then
     * none; in particular between the bound and twice the bound */
    for (int64_t gap = MAX + 1; gap <= 3 * MAX; gap += 9) {
        int64_t spun = run(gap, 1000, &hits);
        assert_int_equal(hits, 0);
        assert_true(spun <= 2 * MAX);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arms_after_a_short_gap),
        cmocka_unit_test(long_gaps_do_not_arm),
        cmocka_unit_test(hits_keep_and_misses_halve),
        cmocka_unit_test(off_stays_off),
        cmocka_unit_test(steady_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
