/*
 * bench_ref.h - message-bus references for the nng scenarios of twin-bench:
 * the same envelopes through a NATS server (libnats, the official C client)
 * and a Mosquitto MQTT broker (libmosquitto), measured in the same run, on
 * the same machine, over loopback, so each nng figure can be printed beside
 * what an established broker does with the same traffic.
 *
 * Each function starts its own server (nats-server or mosquitto) on a free
 * loopback port with its files in workdir, and stops it before returning.
 * A reference that cannot run (twin-bench built without libnats-dev and
 * libmosquitto-dev, a server binary missing, a server or client failure)
 * returns a negative value and says why on stderr, once: never a number
 * that was not measured. Nothing here is thread-safe; call from one thread.
 */
#ifndef TW_BENCH_REF_H
#define TW_BENCH_REF_H

/* Request/reply through NATS, one at a time: a requester (natsConnection_Request)
 * -> nats-server -> a responder on its own connection that publishes the
 * request back to its reply subject -> nats-server -> the requester. n timed
 * round trips after n/10 untimed ones; p50/p99 in microseconds. 0 or < 0. */
int tw_ref_nats_rtt(const char *workdir, long n, double *p50, double *p99);

/* n events from one publisher to one subscriber (each on its own connection)
 * through nats-server, the publisher at most window events ahead of the
 * subscriber as in nng_events. Events per second from the first to the last
 * one received; *lost: events the subscriber never got. < 0: not measured. */
double tw_ref_nats_events(const char *workdir, long n, long window, long *lost);

/* The same through mosquitto, MQTT QoS 0 (the broker's per-client queue is
 * unbounded, so a figure is throughput, not drops; *lost says if any were). */
double tw_ref_mqtt_events(const char *workdir, long n, long window, long *lost);

/* Run the references above and print them as figures of scenario, with
 * tw_bench_report: reference_nats_p50/_p99 (us), and
 * reference_nats_per_s, reference_nats_lost, reference_mosquitto_per_s,
 * reference_mosquitto_lost. A reference that cannot run prints no figure. */
void tw_ref_report_rtt(const char *scenario, const char *workdir, long n);
void tw_ref_report_events(const char *scenario, const char *workdir, long n, long window);

#endif
