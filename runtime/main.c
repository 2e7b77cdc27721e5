/*
 * main.c - twind, the daemon. This is the one file that knows every module:
 * it reads the configuration, opens the runtime, TLS material, authn/authz
 * and the twin, adds the HTTP and nng bindings, starts everything and waits
 * for SIGINT/SIGTERM to stop gracefully (stop accepting, flush the store,
 * exit 0).
 *
 * Signals are blocked in every thread (they are created after the mask is
 * set) and taken synchronously here with sigwait(), so no handler ever runs
 * inside library code.
 */
#include "bindings/http/http.h"
#include "bindings/nng/nng_binding.h"
#include "runtime/authn.h"
#include "runtime/authz.h"
#include "runtime/config.h"
#include "runtime/log.h"
#include "runtime/router.h"
#include "runtime/runtime.h"
#include "runtime/tls.h"
#include "twin/twin.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: twind [options]\n"
               "\n"
               "  --config FILE       JSON configuration file (see README)\n"
               "  --data DIR          data directory (default ./twind-data)\n"
               "  --https ADDR:PORT   HTTPS listen address (default 0.0.0.0:8444; 'off' disables)\n"
               "  --http ADDR:PORT    plain HTTP listen address, loopback only (default off)\n"
               "  --nng URL           nng listen URL, repeatable (default tls+tcp://0.0.0.0:8445;\n"
               "                      'off' disables)\n"
               "  --log-level LEVEL   error, warn, info or debug (default info)\n"
               "  --issue-cert ID     issue a client certificate for mutual TLS (CN = ID,\n"
               "                      signed by the data directory's CA) into DIR/clients/\n"
               "                      and exit; the client must also exist in twind\n"
               "  --version           print the version and exit\n"
               "  --help              print this help and exit\n");
}

static json_t *section(tw_config *cfg, const char *name)
{
    json_t *s = json_object_get(cfg->root, name);
    if (!json_is_object(s)) {
        s = json_object();
        json_object_set_new(cfg->root, name, s);
    }
    return s;
}

typedef struct cli {
    const char *config, *data, *log_level, *https, *http, *issue_cert;
    json_t *nng; /* array of URLs or NULL */
} cli;

static int parse_cli(int argc, char **argv, cli *o)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},     {"data", required_argument, 0, 'd'},
        {"https", required_argument, 0, 's'},      {"http", required_argument, 0, 'p'},
        {"nng", required_argument, 0, 'n'},        {"log-level", required_argument, 0, 'l'},
        {"version", no_argument, 0, 'V'},          {"help", no_argument, 0, 'h'},
        {"issue-cert", required_argument, 0, 'i'}, {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'd':
            o->data = optarg;
            break;
        case 's':
            o->https = optarg;
            break;
        case 'p':
            o->http = optarg;
            break;
        case 'l':
            o->log_level = optarg;
            break;
        case 'i':
            o->issue_cert = optarg;
            break;
        case 'n':
            if (!o->nng) o->nng = json_array();
            if (strcmp(optarg, "off") != 0) json_array_append_new(o->nng, json_string(optarg));
            break;
        case 'V':
            printf("twind %s\n", TWIND_VERSION);
            return 1;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "twind: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Config file first, then the command line over it. */
static int configure(tw_config *cfg, cli *o)
{
    char err[1200];
    tw_config_defaults(cfg);
    if (o->config && tw_config_load(cfg, o->config, err, sizeof err)) {
        fprintf(stderr, "twind: %s\n", err);
        return 2;
    }
    if (o->data) snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", o->data);
    if (o->log_level) snprintf(cfg->log_level, sizeof cfg->log_level, "%s", o->log_level);
    tw_log_level lvl;
    if (tw_log_level_parse(cfg->log_level, &lvl)) {
        fprintf(stderr, "twind: unknown log level '%s'\n", cfg->log_level);
        return 2;
    }
    tw_log_set_level(lvl);
    json_t *http = section(cfg, "http");
    if (o->https)
        json_object_set_new(http, "https",
                            strcmp(o->https, "off") == 0 ? json_null() : json_string(o->https));
    if (o->http) json_object_set_new(http, "http", json_string(o->http));
    if (o->nng) json_object_set(section(cfg, "nng"), "listen", o->nng);
    return 0;
}

static void print_banner(const tw_config *cfg, const char *admin_password)
{
    json_t *http = json_object_get(cfg->root, "http");
    json_t *https = json_object_get(http, "https"), *plain = json_object_get(http, "http");
    printf("twind %s running; data directory %s\n", TWIND_VERSION, cfg->data_dir);
    if (!json_is_null(https)) {
        const char *addr = json_is_string(https) ? json_string_value(https) : "0.0.0.0:8444";
        const char *port = strrchr(addr, ':');
        printf("  dashboard:  https://localhost%s/   (CA certificate: %s/tls/ca.pem)\n",
               port ? port : ":8444", cfg->data_dir);
    }
    if (json_is_string(plain)) printf("  plain HTTP: http://%s/\n", json_string_value(plain));
    if (admin_password)
        printf("  admin login: admin / %s   (saved in %s/admin.password; shown only once)\n",
               admin_password, cfg->data_dir);
    else
        printf("  admin login: admin (password in %s/admin.password)\n", cfg->data_dir);
    fflush(stdout);
}

/* --issue-cert: a client certificate for mutual TLS, then exit. */
static int issue_cert(const tw_config *cfg, const char *client_id)
{
    if (!tw_client_id_valid(client_id)) {
        fprintf(stderr, "twind: '%s' is not a valid client id\n", client_id);
        return 2;
    }
    tw_tls_files tls;
    char dir[1200], cert[1400], key[1400];
    snprintf(dir, sizeof dir, "%s/clients", cfg->data_dir);
    snprintf(cert, sizeof cert, "%s/%s.pem", dir, client_id);
    snprintf(key, sizeof key, "%s/%s.key", dir, client_id);
    int rc;
    if ((mkdir(cfg->data_dir, 0700) && errno != EEXIST) || (mkdir(dir, 0700) && errno != EEXIST) ||
        (rc = tw_tls_ensure(cfg->data_dir, &tls)) ||
        (rc = tw_tls_issue_client(&tls, client_id, 0, cert, key))) {
        fprintf(stderr, "twind: cannot issue a certificate in %s: %s\n", dir, strerror(errno));
        return 1;
    }
    printf("client certificate: %s\nclient key:         %s\nCA to trust:        %s\n", cert, key,
           tls.ca_cert);
    return 0;
}

int main(int argc, char **argv)
{
    cli o = {0};
    int prc = parse_cli(argc, argv, &o);
    if (prc) {
        json_decref(o.nng);
        return prc == 1 ? 0 : 2;
    }
    tw_config cfg;
    if (configure(&cfg, &o)) {
        json_decref(o.nng);
        tw_config_free(&cfg);
        return 2;
    }
    json_decref(o.nng);
    if (o.issue_cert) {
        int irc = issue_cert(&cfg, o.issue_cert);
        tw_config_free(&cfg);
        return irc;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[1200];
    int rc, status = 1;
    tw_runtime *rt = NULL;
    tw_authn *an = NULL;
    tw_authz *az = NULL;
    tw_twin *twin = NULL;
    char *admin_pw = NULL;
    tw_tls_files tls;

    if ((rc = tw_runtime_new(&cfg, &rt, err, sizeof err))) {
        fprintf(stderr, "twind: %s\n", err);
        tw_config_free(&cfg);
        return rc == TW_EBUSY ? 3 : 1;
    }
    if ((rc = tw_tls_ensure(cfg.data_dir, &tls))) {
        fprintf(stderr, "twind: TLS certificates in %s/tls: %s\n", cfg.data_dir, tw_strerror(rc));
        goto out;
    }
    tw_authn_opts aopts = {0};
    if ((rc = tw_authn_opts_from_config(tw_config_section(&cfg, "authn"), &aopts, err,
                                        sizeof err))) {
        fprintf(stderr, "twind: configuration 'authn': %s\n", err);
        status = 2;
        goto out;
    }
    if ((rc = tw_authn_open(tw_runtime_store(rt), cfg.data_dir, &aopts, &an, &admin_pw)) ||
        (rc = tw_authz_open(tw_runtime_store(rt), &az))) {
        fprintf(stderr, "twind: authentication store: %s\n", tw_strerror(rc));
        goto out;
    }
    tw_runtime_set_authn(rt, an, az);
    tw_binding *b;
    if ((rc = tw_http_binding_new(rt, tw_config_section(&cfg, "http"), &b))) {
        fprintf(stderr, "twind: HTTP binding: %s\n", tw_strerror(rc));
        goto out;
    }
    if ((rc = tw_nng_binding_new(rt, tw_config_section(&cfg, "nng"), &b))) {
        fprintf(stderr, "twind: nng binding: %s\n", tw_strerror(rc));
        goto out;
    }
    /* The twin derives forms from the bindings, so it opens after them. */
    if ((rc = tw_twin_open(rt, &twin))) {
        fprintf(stderr, "twind: directory: %s\n", tw_strerror(rc));
        goto out;
    }
    tw_runtime_set_twin(rt, tw_twin_ops_table(), twin);
    if ((rc = tw_authn_register_service(an, rt))) {
        fprintf(stderr, "twind: authn service: %s\n", tw_strerror(rc));
        goto out;
    }
    if ((rc = tw_runtime_start(rt, err, sizeof err))) {
        fprintf(stderr, "twind: %s\n", err);
        goto out;
    }
    print_banner(&cfg, admin_pw);

    int sig = 0;
    sigwait(&sigs, &sig);
    tw_log_info("twind", "%s received; stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    if (rt) tw_runtime_stop(rt);
    if (twin) tw_twin_close(twin);
    /* Everything that writes to the store closes before the runtime frees
     * the bindings and closes the store. */
    if (az) tw_authz_close(az);
    if (an) tw_authn_close(an);
    tw_runtime_free(rt);
    free(admin_pw);
    tw_config_free(&cfg);
    if (status == 0) tw_log_info("twind", "stopped");
    return status;
}
