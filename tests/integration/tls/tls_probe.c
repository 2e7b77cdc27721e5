/*
 * tls_probe.c - a small GnuTLS HTTPS server for the TLS integration test.
 *
 * It serves with exactly what twind's bindings load: the data directory's
 * server.pem/server.key made by tw_tls_ensure(), and asks for (but does not
 * require) a client certificate, which it checks with tw_tls_verify_session()
 * as the HTTP binding does for mutual TLS. Every request is answered with
 * "client=<CN>" (a verified client certificate), "client=-" (none) or
 * "client=invalid" (one that does not chain to the CA). GET /quit stops it.
 *
 *   tls_probe init DATA_DIR                 tw_tls_ensure, print the changes
 *   tls_probe client DATA_DIR ID CERT KEY   issue a client certificate
 *   tls_probe serve DATA_DIR PORT_FILE      serve on 127.0.0.1 and ::1
 *   tls_probe nng DATA_DIR CA_PEM           an nng tls+tcp round trip (mbedTLS):
 *                                           listener with server.pem/key, dialer
 *                                           trusting CA_PEM and checking the
 *                                           name "localhost"; exit 0 if a message
 *                                           went through, 3 if the dial failed
 */
#include "runtime/tls.h"

#include <arpa/inet.h>
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int listen_on(int family, int port, int *bound_port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    if (bound_port) {
        len = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &len);
        *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

/* One connection: handshake, read the request head, answer, close. */
static bool serve_one(int fd, gnutls_certificate_credentials_t cred, const tw_tls_verifier *v)
{
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    gnutls_session_t s;
    gnutls_init(&s, GNUTLS_SERVER);
    gnutls_set_default_priority(s);
    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUEST);
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, 10000);
    int ret;
    do
        ret = gnutls_handshake(s);
    while (ret < 0 && !gnutls_error_is_fatal(ret));
    bool quit = false;
    if (ret < 0) {
        fprintf(stderr, "tls_probe: handshake failed: %s\n", gnutls_strerror(ret));
    } else {
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1 && !memmem(req, got, "\r\n\r\n", 4)) {
            ssize_t n = gnutls_record_recv(s, req + got, sizeof req - 1 - got);
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        req[got] = 0;
        quit = strncmp(req, "GET /quit ", 10) == 0;
        char id[TW_ID_MAX], body[128], resp[512];
        int rc = tw_tls_verify_session(v, s, id);
        unsigned n = 0;
        bool sent = gnutls_certificate_get_peers(s, &n) && n > 0;
        snprintf(body, sizeof body, "client=%s\n", rc == 0 ? id : sent ? "invalid" : "-");
        int len = snprintf(resp, sizeof resp,
                           "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                           "Connection: close\r\n\r\n%s",
                           strlen(body), body);
        gnutls_record_send(s, resp, (size_t)len);
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    gnutls_deinit(s);
    close(fd);
    return quit;
}

static int serve(const char *data_dir, const char *port_file)
{
    tw_tls_files f;
    if (tw_tls_ensure(data_dir, &f) != 0) return 1;
    gnutls_certificate_credentials_t cred;
    gnutls_certificate_allocate_credentials(&cred);
    int ret = gnutls_certificate_set_x509_key_file(cred, f.server_cert, f.server_key,
                                                   GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        fprintf(stderr, "tls_probe: server key: %s\n", gnutls_strerror(ret));
        return 1;
    }
    gnutls_certificate_set_x509_trust_file(cred, f.ca_cert, GNUTLS_X509_FMT_PEM);
    tw_tls_verifier *v;
    if (tw_tls_verifier_new(f.ca_cert, &v) != 0) return 1;

    int port = 0, fds[2] = {-1, -1};
    for (int attempt = 0; attempt < 20 && fds[1] < 0; attempt++) {
        if (fds[0] >= 0) close(fds[0]);
        fds[0] = listen_on(AF_INET, 0, &port);
        if (fds[0] < 0) return 1;
        fds[1] = listen_on(AF_INET6, port, NULL); /* same port on ::1, if IPv6 is there */
        if (fds[1] < 0 && errno != EADDRINUSE) break;
    }
    FILE *pf = fopen(port_file, "w");
    if (!pf) return 1;
    fprintf(pf, "%d %d\n", port, fds[1] >= 0);
    fclose(pf);

    bool quit = false;
    while (!quit) {
        struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int n = poll(p, fds[1] >= 0 ? 2 : 1, 60000);
        if (n == 0) {
            fprintf(stderr, "tls_probe: idle for a minute, stopping\n");
            break;
        }
        for (int i = 0; i < 2 && n > 0; i++) {
            if (fds[i] < 0 || !(p[i].revents & POLLIN)) continue;
            int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0 && serve_one(c, cred, v)) quit = true;
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) close(fds[i]);
    tw_tls_verifier_free(v);
    gnutls_certificate_free_credentials(cred);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 65536);
    if (buf) fread(buf, 1, 65535, f);
    fclose(f);
    return buf;
}

/* The same files through nng's mbedTLS engine, as libtwin loads them. */
static int nng_round_trip(const char *data_dir, const char *ca_path)
{
    tw_tls_files f;
    if (tw_tls_ensure(data_dir, &f) != 0) return 1;
    char *cert = slurp(f.server_cert), *key = slurp(f.server_key), *ca = slurp(ca_path);
    nng_socket srv, cli;
    nng_listener l;
    nng_dialer d;
    nng_tls_config *scfg = NULL, *ccfg = NULL;
    int rv, result = 1;
    if (!cert || !key || !ca) goto out;
    if ((rv = nng_pair0_open(&srv)) || (rv = nng_pair0_open(&cli))) goto fail;
    nng_socket_set_ms(srv, NNG_OPT_RECVTIMEO, 10000);
    nng_socket_set_ms(cli, NNG_OPT_SENDTIMEO, 10000);
    if ((rv = nng_tls_config_alloc(&scfg, NNG_TLS_MODE_SERVER)) ||
        (rv = nng_tls_config_own_cert(scfg, cert, key, NULL)) ||
        (rv = nng_listener_create(&l, srv, "tls+tcp://127.0.0.1:0")) ||
        (rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, scfg)) || (rv = nng_listener_start(l, 0)))
        goto fail;
    nng_sockaddr sa;
    if ((rv = nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa))) goto fail;
    char url[64];
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", ntohs(sa.s_in.sa_port));
    if ((rv = nng_tls_config_alloc(&ccfg, NNG_TLS_MODE_CLIENT)) ||
        (rv = nng_tls_config_ca_chain(ccfg, ca, NULL)) ||
        (rv = nng_tls_config_server_name(ccfg, "localhost")) ||
        (rv = nng_tls_config_auth_mode(ccfg, NNG_TLS_AUTH_MODE_REQUIRED)) ||
        (rv = nng_dialer_create(&d, cli, url)) ||
        (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, ccfg)))
        goto fail;
    if ((rv = nng_dialer_start(d, 0)) != 0) {
        fprintf(stderr, "tls_probe: nng dial: %s\n", nng_strerror(rv));
        result = 3;
        goto out;
    }
    if ((rv = nng_send(cli, "hello", 6, 0))) goto fail;
    char *msg = NULL;
    size_t len = 0;
    if ((rv = nng_recv(srv, &msg, &len, NNG_FLAG_ALLOC))) goto fail;
    result = len == 6 && strcmp(msg, "hello") == 0 ? 0 : 1;
    nng_free(msg, len);
    goto out;
fail:
    fprintf(stderr, "tls_probe: nng: %s\n", nng_strerror(rv));
out:
    nng_close(cli);
    nng_close(srv);
    if (scfg) nng_tls_config_free(scfg);
    if (ccfg) nng_tls_config_free(ccfg);
    free(cert);
    free(key);
    free(ca);
    return result;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "nng") == 0) return nng_round_trip(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "init") == 0) {
        tw_tls_files f;
        unsigned changes = 0;
        int rc = tw_tls_ensure_opts(argv[2], NULL, &f, &changes);
        if (rc) return 1;
        printf("%s%s\n", changes & TW_TLS_NEW_CA ? "new-ca " : "",
               changes & TW_TLS_NEW_SERVER ? "new-server" : "kept");
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        tw_tls_files f;
        if (tw_tls_ensure(argv[2], &f) != 0) return 1;
        return tw_tls_issue_client(&f, argv[3], 30, argv[4], argv[5]) == 0 ? 0 : 1;
    }
    if (argc == 4 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3]);
    fprintf(stderr, "usage: tls_probe init DIR | client DIR ID CERT KEY | serve DIR PORTFILE\n");
    return 2;
}
