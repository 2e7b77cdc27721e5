/*
 * example_consumer.c - twin-example-consumer: the example consumer of
 * libtwin. It lists the directory, reads a Thing's properties, subscribes to
 * its events and observes its properties, invokes an action synchronously
 * and another asynchronously, then prints what arrives until it has seen
 * --events notifications (or forever).
 *
 *   twin-example-consumer --data ./twind-data                 (as admin)
 *   twin-example-consumer --url tls+tcp://host:8445 --ca ca.pem \
 *       --id alice --password secret --thing dtw:demo-agent:demo
 *
 * Exit status 0 when everything asked for worked; the tests run it against
 * the demo agent.
 */
#include "agents/sdk/libtwin.h"

#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int events_seen = 0, props_seen = 0, async_done = 0;

static int read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(out, (int)n, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return out[0] ? 0 : -1;
}

static void print_json(const char *label, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    printf("%s %s\n", label, s ? s : "null");
    free(s);
    fflush(stdout);
}

static void on_event(void *arg, tw_client *c, const char *thing, const char *name, json_t *value,
                     json_t *env)
{
    (void)arg;
    (void)c;
    (void)env;
    char label[512];
    snprintf(label, sizeof label, "event %s/%s:", thing, name);
    print_json(label, value);
    atomic_fetch_add(&events_seen, 1);
}

/* Properties use the view callback (for high-rate streams): the header is
 * read without a JSON tree and the value is decoded only when asked for. */
static void on_property(void *arg, tw_client *c, const tw_notification *n)
{
    (void)arg;
    (void)c;
    char label[512];
    snprintf(label, sizeof label, "property %s/%s:", tw_notification_thing(n),
             tw_notification_name(n));
    print_json(label, tw_notification_value(n));
    atomic_fetch_add(&props_seen, 1);
}

static void on_async(void *arg, tw_client *c, const tw_action_result *r)
{
    (void)arg;
    (void)c;
    printf("countdown %s: %s ", r->action_id, tw_status_name(r->status));
    print_json("", r->output ? r->output : r->error);
    if (tw_status_final(r->status))
        atomic_store(&async_done, r->status == TW_STATUS_COMPLETED ? 1 : -1);
}

int main(int argc, char **argv)
{
    const char *data = NULL, *url = NULL, *ca = NULL, *id = NULL, *password = NULL,
               *token_file = NULL, *thing = "dtw:demo-agent:demo";
    int want_events = 3;
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                         {"url", required_argument, 0, 'u'},
                                         {"ca", required_argument, 0, 'c'},
                                         {"id", required_argument, 0, 'i'},
                                         {"password", required_argument, 0, 'p'},
                                         {"token-file", required_argument, 0, 't'},
                                         {"thing", required_argument, 0, 'T'},
                                         {"events", required_argument, 0, 'e'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            data = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'c':
            ca = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'T':
            thing = optarg;
            break;
        case 'e':
            want_events = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: twin-example-consumer [--data DIR] [--url URL] [--ca FILE]\n"
                            "  [--id ID --password PW | --token-file FILE] [--thing TWIN-ID]\n"
                            "  [--events N]\n");
            return 2;
        }
    }
    char urlbuf[300], cabuf[1100], pwbuf[256];
    if (data && !url) {
        char p[1100];
        snprintf(p, sizeof p, "%s/nng.url", data);
        if (read_line(p, urlbuf, sizeof urlbuf) == 0) {
            char *z = strstr(urlbuf, "0.0.0.0");
            if (z) memcpy(z, "127.0.0.1", 9), memmove(z + 9, z + 7, strlen(z + 7) + 1);
            url = urlbuf;
        }
    }
    if (data && !ca) {
        snprintf(cabuf, sizeof cabuf, "%s/tls/ca.pem", data);
        ca = cabuf;
    }
    if (data && !password && !token_file) {
        char p[1100];
        snprintf(p, sizeof p, "%s/admin.password", data);
        if (read_line(p, pwbuf, sizeof pwbuf) == 0) {
            id = "admin";
            password = pwbuf;
        }
    }
    if (!url || (!password && !token_file)) {
        fprintf(stderr, "example-consumer: give --url and credentials, or --data\n");
        return 2;
    }
    tw_client_opts o = {
        .url = url, .ca_file = ca, .client_id = id, .password = password, .token_file = token_file};
    tw_client *c;
    int rc = tw_client_new(&o, &c);
    if (!rc) rc = tw_client_wait_connected(c, 15000);
    if (rc) {
        fprintf(stderr, "example-consumer: connect %s: %s\n", url, tw_strerror(rc));
        return 1;
    }
    int failures = 0;
    json_t *v = NULL;
    if ((rc = tw_consumer_list_things(c, 0, 100, &v)) == 0) {
        json_t *list = json_is_array(v) ? v : json_object_get(v, "things");
        printf("directory: %zu things\n", json_array_size(list));
        size_t i;
        json_t *td;
        json_array_foreach(list, i, td)
            printf("  %s  %s\n", json_string_value(json_object_get(td, "id")),
                   json_string_value(json_object_get(td, "title")));
    } else {
        fprintf(stderr, "listThings: %s\n", tw_strerror(rc));
        failures++;
    }
    json_decref(v);
    if ((rc = tw_consumer_get_thing(c, thing, &v)) == 0)
        printf("getThing %s: %s\n", thing, json_string_value(json_object_get(v, "title")));
    else
        fprintf(stderr, "getThing %s: %s\n", thing, tw_strerror(rc)), failures++;
    json_decref(v);
    if ((rc = tw_consumer_read_all_properties(c, thing, &v)) == 0)
        print_json("properties:", v);
    else
        fprintf(stderr, "readallproperties: %s\n", tw_strerror(rc)), failures++;
    json_decref(v);

    if ((rc = tw_consumer_subscribe_event(c, thing, NULL, on_event, NULL, NULL)) ||
        (rc = tw_consumer_observe_property_view(c, thing, "counter", on_property, NULL, NULL))) {
        fprintf(stderr, "subscribe: %s\n", tw_strerror(rc));
        failures++;
    }

    tw_action_result res;
    json_t *in = json_pack("{s:s, s:i}", "hello", "twin", "n", 42);
    rc = tw_consumer_invoke(c, thing, "echo", in, 10000, &res);
    if (rc == 0 && json_equal(in, res.output)) {
        print_json("echo:", res.output);
    } else {
        fprintf(stderr, "echo: %s (status %s)\n", tw_strerror(rc), tw_status_name(res.status));
        failures++;
    }
    json_decref(in);
    tw_action_result_clear(&res);

    in = json_integer(3);
    rc = tw_consumer_invoke_async(c, thing, "countdown", in, 20000, on_async, NULL);
    json_decref(in);
    if (rc) fprintf(stderr, "countdown: %s\n", tw_strerror(rc)), failures++;

    /* wait for the events asked for and the countdown */
    for (int i = 0; i < 600; i++) {
        if ((want_events == 0 || atomic_load(&events_seen) >= want_events) &&
            (rc || atomic_load(&async_done) != 0))
            break;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (want_events > 0 && atomic_load(&events_seen) < want_events) {
        fprintf(stderr, "only %d of %d events arrived\n", atomic_load(&events_seen), want_events);
        failures++;
    }
    if (!rc && atomic_load(&async_done) != 1) failures++;
    tw_client_close(c);
    printf("done: %d events, %d property updates, %d failures\n", atomic_load(&events_seen),
           atomic_load(&props_seen), failures);
    return failures ? 1 : 0;
}
