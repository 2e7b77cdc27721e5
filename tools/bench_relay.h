/*
 * bench_relay.h - the plain-socket floor of a four-hop round trip (see
 * bench_relay.c), reported by nng_rtt beside its own figures.
 */
#ifndef TW_BENCH_RELAY_H
#define TW_BENCH_RELAY_H

#include <stddef.h>

/* n timed round trips (after n/10 untimed ones) of a msg_len-byte line
 * consumer -> middle -> agent -> middle -> consumer over loopback TCP;
 * p50/p99 in microseconds. 0, or -1 (nothing measured, both 0). */
int tw_ref_relay_rtt(long n, size_t msg_len, double *p50, double *p99);

#endif
