/*
 * test_nng_spin.c - the direct pollers' busy-poll budget (nng_spin.h): it
 * arms after a short sleep, never exceeds the bound, halves on a miss and
 * reaches 0, and stays off when spinning is off.
 */
#include "bindings/nng/nng_spin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void arms_after_a_short_sleep(void **state)
{
    (void)state;
    /* off: a 30 us sleep would have been caught by a 64 us spin */
    assert_int_equal(nng_spin_after_sleep(0, 30, 100), 2 * 30 + NNG_SPIN_FLOOR_US);
    /* a budget that is already larger is replaced too: it follows the traffic */
    assert_int_equal(nng_spin_after_sleep(90, 10, 100), 2 * 10 + NNG_SPIN_FLOOR_US);
    /* never above the bound */
    assert_int_equal(nng_spin_after_sleep(0, 70, 100), 100);
    assert_int_equal(nng_spin_after_sleep(0, 99, 100), 100);
}

static void long_sleeps_do_not_arm(void **state)
{
    (void)state;
    assert_int_equal(nng_spin_after_sleep(0, 100, 100), 0);
    assert_int_equal(nng_spin_after_sleep(0, 5000000, 100), 0);
    assert_int_equal(nng_spin_after_sleep(12, 250, 100), 12); /* left as it is */
    /* a clock that went backwards arms nothing */
    assert_int_equal(nng_spin_after_sleep(0, -5, 100), 0);
}

static void off_stays_off(void **state)
{
    (void)state;
    assert_int_equal(nng_spin_after_sleep(0, 1, 0), 0);
    assert_int_equal(nng_spin_after_sleep(50, 1, 0), 0);
}

static void misses_halve_to_zero(void **state)
{
    (void)state;
    int64_t b = 100;
    int misses = 0;
    while (b > 0) {
        int64_t nb = nng_spin_after_miss(b);
        assert_true(nb < b);
        assert_true(nb == 0 || nb >= NNG_SPIN_FLOOR_US);
        b = nb;
        misses++;
    }
    /* 100 -> 50 -> 25 -> 12 -> 6 -> 0: what sparse traffic costs after a burst */
    assert_int_equal(misses, 5);
    assert_int_equal(nng_spin_after_miss(0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arms_after_a_short_sleep),
        cmocka_unit_test(long_sleeps_do_not_arm),
        cmocka_unit_test(off_stays_off),
        cmocka_unit_test(misses_halve_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
