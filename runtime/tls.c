/*
 * tls.c - the runtime's CA, server certificate and client certificates
 * (GnuTLS x509 API).
 *
 * tw_tls_ensure_opts() loads what is on disk and decides, piece by piece,
 * whether it can be kept: a CA is kept when its certificate and key parse,
 * match and are valid now; a server certificate when it parses, matches its
 * key, verifies against the CA, has every SAN and more than renew_days left.
 * Whatever cannot be kept is made anew and written atomically. All keys are
 * ECDSA P-256 (understood by GnuTLS, mbedTLS, OpenSSL and browsers) and all
 * signatures SHA-256.
 */
#include "tls.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAY_S 86400
#define SKEW_S 3600 /* certificates start an hour in the past: clock skew */

typedef struct keypair {
    gnutls_x509_crt_t crt;
    gnutls_x509_privkey_t key;
} keypair;

static void keypair_free(keypair *kp)
{
    if (kp->crt) gnutls_x509_crt_deinit(kp->crt);
    if (kp->key) gnutls_x509_privkey_deinit(kp->key);
    kp->crt = NULL;
    kp->key = NULL;
}

static int gt_err(const char *what, int gret)
{
    tw_log_error("tls", "%s: %s", what, gnutls_strerror(gret));
    return TW_ECRYPTO;
}

/* ---- files ---- */

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[TW_TLS_PATH_MAX + 8];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return TW_ETOOBIG;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        tw_log_error("tls", "cannot create %s: %s", tmp, strerror(errno));
        return TW_EIO;
    }
    int rc = 0;
    const uint8_t *p = data;
    size_t put = 0;
    while (put < len) {
        ssize_t n = write(fd, p + put, len - put);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = TW_EIO;
            break;
        }
        put += (size_t)n;
    }
    /* the umask may have cleared bits of mode; set it exactly */
    if (rc == 0 && (fchmod(fd, mode) != 0 || fsync(fd) != 0)) rc = TW_EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) rc = TW_EIO;
    if (rc) {
        tw_log_error("tls", "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return rc;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int load_crt(const char *path, gnutls_x509_crt_t *out)
{
    gnutls_datum_t d = {NULL, 0};
    if (gnutls_load_file(path, &d) < 0) return TW_ENOTFOUND;
    gnutls_x509_crt_t crt;
    int rc = gnutls_x509_crt_init(&crt);
    if (rc < 0) {
        gnutls_free(d.data);
        return TW_ENOMEM;
    }
    rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
    gnutls_free(d.data);
    if (rc < 0) {
        gnutls_x509_crt_deinit(crt);
        tw_log_warn("tls", "%s: %s", path, gnutls_strerror(rc));
        return TW_ECRYPTO;
    }
    *out = crt;
    return 0;
}

static int load_key(const char *path, gnutls_x509_privkey_t *out)
{
    gnutls_datum_t d = {NULL, 0};
    if (gnutls_load_file(path, &d) < 0) return TW_ENOTFOUND;
    gnutls_x509_privkey_t key;
    int rc = gnutls_x509_privkey_init(&key);
    if (rc < 0) {
        gnutls_free(d.data);
        return TW_ENOMEM;
    }
    rc = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_memset(d.data, 0, d.size);
    gnutls_free(d.data);
    if (rc < 0) {
        gnutls_x509_privkey_deinit(key);
        tw_log_warn("tls", "%s: %s", path, gnutls_strerror(rc));
        return TW_ECRYPTO;
    }
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077)) {
        tw_log_warn("tls", "%s was readable by others: made owner-only", path);
        if (chmod(path, 0600) != 0) {
            gnutls_x509_privkey_deinit(key);
            return TW_EIO;
        }
    }
    *out = key;
    return 0;
}

/* Loads a certificate and its key; TW_ECRYPTO if they do not belong together. */
static int load_pair(const char *crt_path, const char *key_path, keypair *kp)
{
    int rc = load_crt(crt_path, &kp->crt);
    if (rc) return rc;
    if ((rc = load_key(key_path, &kp->key)) != 0) {
        keypair_free(kp);
        return rc;
    }
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    if (gnutls_x509_crt_get_key_id(kp->crt, GNUTLS_KEYID_USE_SHA256, a, &alen) < 0 ||
        gnutls_x509_privkey_get_key_id(kp->key, GNUTLS_KEYID_USE_SHA256, b, &blen) < 0 ||
        alen != blen || memcmp(a, b, alen) != 0) {
        tw_log_warn("tls", "%s does not match %s", crt_path, key_path);
        keypair_free(kp);
        return TW_ECRYPTO;
    }
    return 0;
}

static int save_pair(const keypair *kp, const char *crt_path, const char *key_path)
{
    gnutls_datum_t c = {NULL, 0}, k = {NULL, 0};
    int g = gnutls_x509_crt_export2(kp->crt, GNUTLS_X509_FMT_PEM, &c);
    if (g < 0) return gt_err("export certificate", g);
    g = gnutls_x509_privkey_export2_pkcs8(kp->key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                          &k);
    if (g < 0) {
        gnutls_free(c.data);
        return gt_err("export key", g);
    }
    /* the key first: a certificate on disk always has its key beside it */
    int rc = write_file(key_path, k.data, k.size, 0600);
    if (rc == 0) rc = write_file(crt_path, c.data, c.size, 0644);
    gnutls_memset(k.data, 0, k.size);
    gnutls_free(k.data);
    gnutls_free(c.data);
    return rc;
}

/* ---- making certificates ---- */

typedef struct cert_spec {
    const char *cn;
    bool ca;
    const char *purpose; /* key purpose OID, NULL for the CA */
    int days;
    const char *const *dns; /* NULL-terminated SANs */
    const char *const *ips;
} cert_spec;

/*
 * A new key and a certificate for it, signed by issuer (NULL: self-signed).
 */
static int make_cert(const cert_spec *spec, const keypair *issuer, keypair *out)
{
    keypair kp = {NULL, NULL};
    gnutls_privkey_t signer = NULL;
    int g, rc = TW_ECRYPTO;
    const char *what = "key";

    if ((g = gnutls_x509_privkey_init(&kp.key)) < 0) goto fail;
    g = gnutls_x509_privkey_generate(kp.key, GNUTLS_PK_ECDSA,
                                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    if (g < 0) goto fail;
    what = "certificate";
    if ((g = gnutls_x509_crt_init(&kp.crt)) < 0) goto fail;
    if ((g = gnutls_x509_crt_set_version(kp.crt, 3)) < 0) goto fail;
    if ((g = gnutls_x509_crt_set_key(kp.crt, kp.key)) < 0) goto fail;

    unsigned char serial[16];
    randombytes_buf(serial, sizeof serial);
    serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x01); /* positive, 16 bytes long */
    if ((g = gnutls_x509_crt_set_serial(kp.crt, serial, sizeof serial)) < 0) goto fail;

    time_t now = time(NULL);
    if ((g = gnutls_x509_crt_set_activation_time(kp.crt, now - SKEW_S)) < 0) goto fail;
    g = gnutls_x509_crt_set_expiration_time(kp.crt, now + (time_t)spec->days * DAY_S);
    if (g < 0) goto fail;

    g = gnutls_x509_crt_set_dn_by_oid(kp.crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "twind", 5);
    if (g < 0) goto fail;
    g = gnutls_x509_crt_set_dn_by_oid(kp.crt, GNUTLS_OID_X520_COMMON_NAME, 0, spec->cn,
                                      (unsigned)strlen(spec->cn));
    if (g < 0) goto fail;

    if ((g = gnutls_x509_crt_set_basic_constraints(kp.crt, spec->ca ? 1 : 0, -1)) < 0) goto fail;
    unsigned usage = GNUTLS_KEY_DIGITAL_SIGNATURE;
    if (spec->ca) usage |= GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN;
    if ((g = gnutls_x509_crt_set_key_usage(kp.crt, usage)) < 0) goto fail;
    if (spec->purpose && (g = gnutls_x509_crt_set_key_purpose_oid(kp.crt, spec->purpose, 0)) < 0)
        goto fail;

    for (const char *const *d = spec->dns; d && *d; d++) {
        g = gnutls_x509_crt_set_subject_alt_name(kp.crt, GNUTLS_SAN_DNSNAME, *d,
                                                 (unsigned)strlen(*d), GNUTLS_FSAN_APPEND);
        if (g < 0) goto fail;
    }
    for (const char *const *ip = spec->ips; ip && *ip; ip++) {
        unsigned char raw[16];
        unsigned len = 0;
        if (inet_pton(AF_INET, *ip, raw) == 1)
            len = 4;
        else if (inet_pton(AF_INET6, *ip, raw) == 1)
            len = 16;
        else
            continue;
        g = gnutls_x509_crt_set_subject_alt_name(kp.crt, GNUTLS_SAN_IPADDRESS, raw, len,
                                                 GNUTLS_FSAN_APPEND);
        if (g < 0) goto fail;
    }

    unsigned char kid[64];
    size_t kidlen = sizeof kid;
    if ((g = gnutls_x509_crt_get_key_id(kp.crt, GNUTLS_KEYID_USE_SHA1, kid, &kidlen)) < 0)
        goto fail;
    if ((g = gnutls_x509_crt_set_subject_key_id(kp.crt, kid, kidlen)) < 0) goto fail;
    if (issuer) {
        unsigned char akid[64];
        size_t akidlen = sizeof akid;
        unsigned crit = 0;
        if (gnutls_x509_crt_get_subject_key_id(issuer->crt, akid, &akidlen, &crit) >= 0 &&
            (g = gnutls_x509_crt_set_authority_key_id(kp.crt, akid, akidlen)) < 0)
            goto fail;
    }

    what = "signature";
    if ((g = gnutls_privkey_init(&signer)) < 0) goto fail;
    g = gnutls_privkey_import_x509(signer, issuer ? issuer->key : kp.key, 0);
    if (g < 0) goto fail;
    g = gnutls_x509_crt_privkey_sign(kp.crt, issuer ? issuer->crt : kp.crt, signer,
                                     GNUTLS_DIG_SHA256, 0);
    if (g < 0) goto fail;
    gnutls_privkey_deinit(signer);
    *out = kp;
    return 0;

fail:
    if (signer) gnutls_privkey_deinit(signer);
    keypair_free(&kp);
    gt_err(what, g);
    return rc;
}

/* ---- checks ---- */

static bool valid_for(gnutls_x509_crt_t crt, time_t now, int min_days)
{
    time_t nb = gnutls_x509_crt_get_activation_time(crt);
    time_t na = gnutls_x509_crt_get_expiration_time(crt);
    if (nb == (time_t)-1 || na == (time_t)-1) return false;
    return nb <= now && na - now > (time_t)min_days * DAY_S;
}

static bool signed_by(gnutls_x509_crt_t crt, gnutls_x509_crt_t ca)
{
    unsigned status = 0;
    int g = gnutls_x509_crt_verify(crt, &ca, 1, 0, &status);
    return g >= 0 && status == 0;
}

static bool has_names(gnutls_x509_crt_t crt, const char *const *names)
{
    for (; *names; names++)
        if (!gnutls_x509_crt_check_hostname(crt, *names)) return false;
    return true;
}

static bool is_ca(gnutls_x509_crt_t crt)
{
    unsigned crit = 0;
    return gnutls_x509_crt_get_ca_status(crt, &crit) > 0;
}

/* ---- ensure ---- */

static int ensure_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        tw_log_error("tls", "cannot create %s: %s", dir, strerror(errno));
        return TW_EIO;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return TW_EIO;
    if ((st.st_mode & 077) && chmod(dir, 0700) != 0) return TW_EIO;
    return 0;
}

static int set_paths(const char *data_dir, tw_tls_files *f)
{
    memset(f, 0, sizeof *f);
    size_t n = strlen(data_dir);
    if (n + 20 >= TW_TLS_PATH_MAX) return TW_ETOOBIG;
    snprintf(f->dir, sizeof f->dir, "%s/tls", data_dir);
    snprintf(f->ca_cert, sizeof f->ca_cert, "%s/tls/ca.pem", data_dir);
    snprintf(f->ca_key, sizeof f->ca_key, "%s/tls/ca.key", data_dir);
    snprintf(f->server_cert, sizeof f->server_cert, "%s/tls/server.pem", data_dir);
    snprintf(f->server_key, sizeof f->server_key, "%s/tls/server.key", data_dir);
    return 0;
}

/* A host name usable as a DNS SAN: letters, digits, '-' and '.', not "localhost". */
static bool usable_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253 || strcmp(h, "localhost") == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

int tw_tls_ensure_opts(const char *data_dir, const tw_tls_opts *opts, tw_tls_files *out,
                       unsigned *changes)
{
    if (!data_dir || !out) return TW_EINVAL;
    if (changes) *changes = 0;
    tw_tls_opts o = {3650, 365, 30, NULL};
    if (opts) {
        if (opts->ca_days > 0) o.ca_days = opts->ca_days;
        if (opts->server_days > 0) o.server_days = opts->server_days;
        if (opts->renew_days > 0) o.renew_days = opts->renew_days;
        o.hostname = opts->hostname;
    }
    int rc = set_paths(data_dir, out);
    if (rc) return rc;
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        tw_log_error("tls", "cannot create %s: %s", data_dir, strerror(errno));
        return TW_EIO;
    }
    if ((rc = ensure_dir(out->dir)) != 0) return rc;

    char host[256] = "";
    if (o.hostname)
        tw_strlcpy(host, o.hostname, sizeof host);
    else if (gethostname(host, sizeof host - 1) != 0)
        host[0] = 0;
    bool use_host = usable_hostname(host);
    const char *dns[] = {"localhost", use_host ? host : NULL, NULL};
    const char *ips[] = {"127.0.0.1", "::1", NULL};
    const char *names[] = {"localhost", "127.0.0.1", "::1", use_host ? host : NULL, NULL};

    time_t now = time(NULL);
    keypair ca = {NULL, NULL}, srv = {NULL, NULL};
    bool new_ca = false;

    rc = load_pair(out->ca_cert, out->ca_key, &ca);
    if (rc == 0 && (!is_ca(ca.crt) || !valid_for(ca.crt, now, o.renew_days))) {
        /* clients trusting the old CA must fetch the new ca.pem */
        tw_log_warn("tls", "%s is not a CA or expires within %d days: making a new one",
                    out->ca_cert, o.renew_days);
        keypair_free(&ca);
        rc = TW_ECRYPTO;
    }
    if (rc) {
        char cn[300];
        snprintf(cn, sizeof cn, "twind CA %s", use_host ? host : "localhost");
        cert_spec spec = {cn, true, NULL, o.ca_days, NULL, NULL};
        if ((rc = make_cert(&spec, NULL, &ca)) != 0) return rc;
        if ((rc = save_pair(&ca, out->ca_cert, out->ca_key)) != 0) goto done;
        new_ca = true;
        tw_log_info("tls", "created the CA %s (%d days)", out->ca_cert, o.ca_days);
    }

    bool keep = false;
    if (!new_ca && load_pair(out->server_cert, out->server_key, &srv) == 0) {
        if (!signed_by(srv.crt, ca.crt))
            tw_log_info("tls", "%s is not signed by the CA: re-issuing", out->server_cert);
        else if (!has_names(srv.crt, names))
            tw_log_info("tls", "%s lacks a host name: re-issuing", out->server_cert);
        else if (!valid_for(srv.crt, now, o.renew_days))
            tw_log_info("tls", "%s expires within %d days: renewing", out->server_cert,
                        o.renew_days);
        else
            keep = true;
        if (!keep) keypair_free(&srv);
    }
    if (!keep) {
        cert_spec spec = {use_host ? host : "localhost",
                          false,
                          GNUTLS_KP_TLS_WWW_SERVER,
                          o.server_days,
                          dns,
                          ips};
        if ((rc = make_cert(&spec, &ca, &srv)) != 0) goto done;
        if ((rc = save_pair(&srv, out->server_cert, out->server_key)) != 0) goto done;
        tw_log_info("tls", "issued the server certificate %s (%d days)", out->server_cert,
                    o.server_days);
    }
    sync_dir(out->dir);
    if (changes) *changes = (new_ca ? TW_TLS_NEW_CA : 0) | (keep ? 0 : TW_TLS_NEW_SERVER);
    rc = 0;
done:
    keypair_free(&ca);
    keypair_free(&srv);
    return rc;
}

int tw_tls_ensure(const char *data_dir, tw_tls_files *out)
{
    return tw_tls_ensure_opts(data_dir, NULL, out, NULL);
}

int tw_tls_cert_not_after(const char *pem_path, int64_t *not_after_s)
{
    gnutls_x509_crt_t crt;
    int rc = load_crt(pem_path, &crt);
    if (rc) return rc;
    time_t na = gnutls_x509_crt_get_expiration_time(crt);
    gnutls_x509_crt_deinit(crt);
    if (na == (time_t)-1) return TW_ECRYPTO;
    *not_after_s = (int64_t)na;
    return 0;
}

int tw_tls_issue_client(const tw_tls_files *f, const char *client_id, int days,
                        const char *cert_path, const char *key_path)
{
    if (!f || !cert_path || !key_path || !tw_client_id_valid(client_id)) return TW_EINVAL;
    keypair ca = {NULL, NULL}, cl = {NULL, NULL};
    int rc = load_pair(f->ca_cert, f->ca_key, &ca);
    if (rc) return rc;
    cert_spec spec = {client_id, false, GNUTLS_KP_TLS_WWW_CLIENT, days > 0 ? days : 365,
                      NULL,      NULL};
    rc = make_cert(&spec, &ca, &cl);
    if (rc == 0) rc = save_pair(&cl, cert_path, key_path);
    keypair_free(&ca);
    keypair_free(&cl);
    return rc;
}

/* ---- client certificate verification ---- */

struct tw_tls_verifier {
    gnutls_x509_trust_list_t trust;
};

int tw_tls_verifier_new(const char *ca_pem_path, tw_tls_verifier **out)
{
    if (!ca_pem_path || !out) return TW_EINVAL;
    gnutls_x509_crt_t ca;
    int rc = load_crt(ca_pem_path, &ca);
    if (rc) return rc;
    tw_tls_verifier *v = calloc(1, sizeof *v);
    if (!v) {
        gnutls_x509_crt_deinit(ca);
        return TW_ENOMEM;
    }
    int g = gnutls_x509_trust_list_init(&v->trust, 0);
    if (g < 0) {
        gnutls_x509_crt_deinit(ca);
        free(v);
        return gt_err("trust list", g);
    }
    /* the list takes ownership of ca */
    g = gnutls_x509_trust_list_add_cas(v->trust, &ca, 1, 0);
    if (g != 1) {
        gnutls_x509_crt_deinit(ca);
        tw_tls_verifier_free(v);
        return TW_ECRYPTO;
    }
    *out = v;
    return 0;
}

void tw_tls_verifier_free(tw_tls_verifier *v)
{
    if (!v) return;
    gnutls_x509_trust_list_deinit(v->trust, 1);
    free(v);
}

static int verify_crts(const tw_tls_verifier *v, gnutls_x509_crt_t *crts, unsigned n,
                       char client_id[TW_ID_MAX])
{
    gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID,
                                     (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
    unsigned status = 0;
    int g = gnutls_x509_trust_list_verify_crt2(v->trust, crts, n, &purpose, 1, 0, &status, NULL);
    if (g < 0 || status != 0) return TW_EAUTH;
    if (is_ca(crts[0])) return TW_EAUTH;
    char cn[TW_ID_MAX + 1];
    size_t cnlen = sizeof cn;
    g = gnutls_x509_crt_get_dn_by_oid(crts[0], GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnlen);
    if (g < 0 || cnlen >= TW_ID_MAX || !tw_client_id_valid(cn)) return TW_EAUTH;
    memcpy(client_id, cn, cnlen + 1);
    return 0;
}

#define MAX_CHAIN 8

int tw_tls_verify_client(const tw_tls_verifier *v, const gnutls_datum_t *chain, unsigned n,
                         char client_id[TW_ID_MAX])
{
    if (!v || !client_id) return TW_EINVAL;
    client_id[0] = 0;
    if (!chain || n == 0 || n > MAX_CHAIN) return TW_EAUTH;
    gnutls_x509_crt_t crts[MAX_CHAIN];
    unsigned got = 0;
    int rc = 0;
    for (; got < n; got++) {
        if (gnutls_x509_crt_init(&crts[got]) < 0) {
            rc = TW_ENOMEM;
            break;
        }
        if (gnutls_x509_crt_import(crts[got], &chain[got], GNUTLS_X509_FMT_DER) < 0) {
            gnutls_x509_crt_deinit(crts[got]);
            rc = TW_EAUTH;
            break;
        }
    }
    if (rc == 0) rc = verify_crts(v, crts, n, client_id);
    for (unsigned i = 0; i < got; i++)
        gnutls_x509_crt_deinit(crts[i]);
    return rc;
}

int tw_tls_verify_client_pem(const tw_tls_verifier *v, const char *pem, size_t len,
                             char client_id[TW_ID_MAX])
{
    if (!v || !pem || !client_id) return TW_EINVAL;
    client_id[0] = 0;
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0) return TW_ENOMEM;
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
    int rc = TW_EAUTH;
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) >= 0)
        rc = verify_crts(v, &crt, 1, client_id);
    gnutls_x509_crt_deinit(crt);
    return rc;
}

int tw_tls_verify_session(const tw_tls_verifier *v, gnutls_session_t session,
                          char client_id[TW_ID_MAX])
{
    if (!v || !session || !client_id) return TW_EINVAL;
    client_id[0] = 0;
    if (gnutls_certificate_type_get(session) != GNUTLS_CRT_X509) return TW_EAUTH;
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(session, &n);
    if (!chain || n == 0) return TW_EAUTH;
    return tw_tls_verify_client(v, chain, n, client_id);
}
