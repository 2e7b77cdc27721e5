/*
 * tls.h - the runtime's own certificate authority and server certificate
 * (DESIGN.md section 7), made with GnuTLS.
 *
 * On first start tw_tls_ensure() creates, in <data_dir>/tls (mode 0700):
 *   ca.pem / ca.key         a CA, 10 years (ECDSA P-256, SHA-256)
 *   server.pem / server.key a server certificate signed by the CA, 1 year,
 *                           SANs localhost, 127.0.0.1, ::1 and the host name
 * Keys are PKCS#8 PEM, mode 0600; certificates 0644. On restart the files
 * are reused; the server certificate is re-issued (new key) when it has
 * under 30 days left, was not signed by the current CA, does not match its
 * key or lacks one of the SANs (host renamed). A missing or broken CA is
 * re-created, which re-issues the server certificate too. Files are
 * replaced atomically (write, fsync, rename).
 *
 * The HTTP binding (GnuTLS via libmicrohttpd) and the nng binding (GnuTLS
 * too, through the TLS engine it registers with nng: bindings/nng/nng_tls.c)
 * load server.pem/server.key; clients are given ca.pem to trust.
 *
 * Optional mutual TLS: tw_tls_issue_client() signs a client certificate
 * whose CN is a client id; a tw_tls_verifier checks a peer's certificate
 * chain against the CA (time, signature, client-auth purpose, not a CA) and
 * returns the client id from the CN.
 *
 * tw_tls_ensure*() and tw_tls_issue_client() write files: call them from one
 * thread at a time (start-up, twinctl). A tw_tls_verifier is read-only after
 * creation and may be used from any number of threads.
 */
#ifndef TW_TLS_H
#define TW_TLS_H

#include "tw.h"

#include <gnutls/gnutls.h>

#define TW_TLS_PATH_MAX 1100

typedef struct tw_tls_files {
    char dir[TW_TLS_PATH_MAX];         /* <data_dir>/tls */
    char ca_cert[TW_TLS_PATH_MAX];     /* ca.pem: give this to clients */
    char ca_key[TW_TLS_PATH_MAX];      /* ca.key */
    char server_cert[TW_TLS_PATH_MAX]; /* server.pem */
    char server_key[TW_TLS_PATH_MAX];  /* server.key */
} tw_tls_files;

typedef struct tw_tls_opts {
    int ca_days;          /* CA validity; default 3650 */
    int server_days;      /* server certificate validity; default 365 */
    int renew_days;       /* re-issue the server certificate under this; default 30 */
    const char *hostname; /* the host name SAN; NULL: gethostname() */
} tw_tls_opts;

/* What tw_tls_ensure_opts() did (bit set in *changes). */
enum {
    TW_TLS_NEW_CA = 1,     /* a CA was created (first start, or it was broken) */
    TW_TLS_NEW_SERVER = 2, /* the server certificate was (re-)issued */
};

/* Creates or reuses the CA and server certificate with the defaults. */
int tw_tls_ensure(const char *data_dir, tw_tls_files *out);
/* Same with explicit validity/renewal settings (opts may be NULL); changes
 * may be NULL. */
int tw_tls_ensure_opts(const char *data_dir, const tw_tls_opts *opts, tw_tls_files *out,
                       unsigned *changes);

/* notAfter of the first certificate of a PEM file, seconds since the epoch. */
int tw_tls_cert_not_after(const char *pem_path, int64_t *not_after_s);

/*
 * Issues a client certificate (CN = client_id, client-auth purpose, days of
 * validity, 0 = 365) signed by the CA of f, writing cert_path (0644) and
 * key_path (0600).
 */
int tw_tls_issue_client(const tw_tls_files *f, const char *client_id, int days,
                        const char *cert_path, const char *key_path);

typedef struct tw_tls_verifier tw_tls_verifier;

/* Loads the CA certificate (PEM) that client certificates must chain to. */
int tw_tls_verifier_new(const char *ca_pem_path, tw_tls_verifier **out);
void tw_tls_verifier_free(tw_tls_verifier *v);
/*
 * Verifies a peer chain (DER, leaf first, as gnutls_certificate_get_peers()
 * returns it) and copies the leaf's CN into client_id. TW_EAUTH when the
 * chain is not valid now for client authentication by this CA or the CN is
 * not a valid client id.
 */
int tw_tls_verify_client(const tw_tls_verifier *v, const gnutls_datum_t *chain, unsigned n,
                         char client_id[TW_ID_MAX]);
/* The same for one PEM certificate (tests, tools). */
int tw_tls_verify_client_pem(const tw_tls_verifier *v, const char *pem, size_t len,
                             char client_id[TW_ID_MAX]);
/* The same for the peer of a GnuTLS session after its handshake (for
 * libmicrohttpd's MHD_CONNECTION_INFO_GNUTLS_SESSION). TW_EAUTH when the
 * peer sent no certificate. */
int tw_tls_verify_session(const tw_tls_verifier *v, gnutls_session_t session,
                          char client_id[TW_ID_MAX]);

#endif
