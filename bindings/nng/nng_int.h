/*
 * nng_int.h - the inside of the nng binding, shared by nng_binding.c (the
 * listeners, the connection table, the housekeeping thread and the ops) and
 * nng_conn.c (one connection's stream I/O, framing and send queue).
 *
 * nng_direct.c (tcp:// and ipc:// on the binding's own sockets and poller
 * threads) shares the connection code.
 *
 * Lifetime of a connection (nconn): one reference belongs to the connection
 * table slot, one to each aio in flight (receive, send) or, for a direct
 * socket, to its epoll registration and to a write in progress, and one to
 * each caller of lookup() while it uses it. nconn_close() (idempotent)
 * closes the stream (shuts the socket down), unregisters the tw_conn and
 * frees the slot; when the last reference goes, the nconn is handed to the
 * housekeeping thread, which frees the aios and the stream (closes the
 * socket) outside every nng callback and poller pass.
 */
#ifndef TW_NNG_INT_H
#define TW_NNG_INT_H

#include "nng_binding.h"
#include "nng_frame.h"
#include "runtime/conn.h"
#include "runtime/router.h"
#include "runtime/log.h"
#include "runtime/runtime.h"

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct nng_bind nng_bind;
typedef struct nconn nconn;
typedef struct nng_direct nng_direct;

/* The first member of what a poller's epoll event points at. */
enum { TW_NNG_PE_CONN = 1, TW_NNG_PE_LISTENER = 2 };

struct nconn {
    int pe_kind; /* TW_NNG_PE_CONN */
    atomic_int refs;
    nng_bind *nb;
    uint32_t slot;
    uint32_t gen;
    nng_stream *st; /* an nng stream, or NULL: a direct socket */
    int fd;         /* the direct socket, or -1 */
    int ep;         /* the epoll set of its poller (direct sockets) */
    tw_conn *conn;
    int64_t opened_ms;
    char remote[64];
    nng_aio *rx_aio;
    nng_aio *tx_aio;

    /* receive side: only touched by the receive callback */
    char *rbuf;
    size_t rlen, rcap;

    /* send side, under mtx */
    pthread_mutex_t mtx;
    tw_msg **q; /* ring of queued messages (one reference each) */
    size_t qhead, qn, qcap;
    size_t qbytes; /* encoded bytes queued or in the batch, not yet written */
    size_t wrel;   /* wbuf bytes up to here are released from qbytes */
    bool writing;  /* a stream send is in flight */
    bool closing;
    bool close_when_flushed; /* close once the queue is written */
    bool flush_deferred;     /* on a receiving thread's flush list (nng_conn.c) */
    char *wbuf;              /* the batch being written */
    size_t wlen, woff, wcap;
    /* direct sockets, under mtx */
    bool tx_blocked;   /* a write waits for EPOLLOUT; the poller goes on */
    bool rx_stopped;   /* no more reading (the 413 case) */
    uint32_t ev_mask;  /* the events the epoll set watches now */
    bool deregistered; /* poller thread only */
    /* deadlines the housekeeping thread checks (mono ms, 0: none) */
    _Atomic int64_t tx_wait_ms;  /* a write waits for the peer since */
    _Atomic int64_t close_by_ms; /* closing once flushed, at the latest */
    /* the dead-stream probe (nng_conn.c, "A dead TLS stream"): whether it
     * works on this stream, and when the next one is due while a receive is
     * outstanding (mono ms, 0: no receive outstanding) */
    bool probe;
    _Atomic int64_t rx_probe_ms;

    nconn *reap_next;
};

typedef struct nng_listener_ent {
    int pe_kind;      /* TW_NNG_PE_LISTENER */
    int fd;           /* a direct listening socket, or -1 */
    bool unlink_path; /* an ipc:// socket file of ours */
    char url[256];    /* as configured */
    char bound[256];  /* as bound (port resolved) */
    nng_stream_listener *l;
    nng_aio *accept_aio;
    nng_aio *retry_aio;
    nng_bind *nb;
} nng_listener_ent;

typedef struct nng_slot {
    nconn *c;     /* NULL when free */
    uint32_t gen; /* bumped on every reuse */
} nng_slot;

struct nng_bind {
    tw_runtime *rt;
    tw_binding *b;
    tw_msg_limits lim;
    size_t send_queue;        /* messages queued per connection, at most */
    size_t send_queue_bytes;  /* and bytes (nng_conn.c, "Overflow policy") */
    int64_t write_timeout_ms; /* a stuck write or a closing connection */
    int max_conns;
    int64_t login_timeout_ms;
    nng_tls_config *tls;
    char data_dir[1024];
    bool direct;      /* tcp:// and ipc:// on our own sockets (nng_direct.c) */
    int io_threads;   /* their pollers */
    int poll_spin_us; /* their busy-poll bound (nng_direct.c) */
    nng_direct *dx;

    nng_listener_ent *ls;
    int nls;

    /* connection table: bdata of a tw_conn encodes (slot, gen) */
    pthread_rwlock_t slots_lock;
    nng_slot *slots;
    uint32_t *free_slots;
    int nfree;
    atomic_int nconns;
    atomic_int nlive; /* nconn structures not yet freed (stop waits for 0) */

    /* housekeeping thread: reaps dead connections, enforces the login timeout
     * and the write deadlines, probes streams for a lost peer */
    pthread_t hk;
    bool hk_started;
    pthread_mutex_t hk_mtx;
    pthread_cond_t hk_cond;
    bool hk_stop;
    nconn *reap; /* list of connections to free */
    atomic_bool stopping;
};

/* nng_conn.c. nconn_start takes an nng stream, or (st NULL) a connected
 * non-blocking socket with its peer's address; either is the nconn's on
 * success, the caller's on failure. */
int nconn_start(nng_bind *nb, nng_stream *st, int fd, const char *remote, uint32_t slot,
                uint32_t gen, nconn **out);
void nconn_begin(nconn *c);                     /* starts receiving once the nconn is in its slot */
void nconn_on_event(nconn *c, uint32_t events); /* its poller thread only */
void nconn_thread_done(void);                   /* a poller thread ends: frees its flush list */
void nconn_close(nconn *c, const char *why);
nconn *nconn_ref(nconn *c);
void nconn_unref(nconn *c);
void nconn_free(nconn *c); /* housekeeping thread only */
int nconn_send(nconn *c, tw_msg *m, bool bounded);
/* Why the housekeeping thread must drop c now (a write deadline passed), or
 * NULL. Reads only c's atomics. */
const char *nconn_overdue(nconn *c, int64_t now_ms);
/* Whether c's stream lost its peer without telling (nng_conn.c, "A dead TLS
 * stream"): one probe of the socket when one is due. Housekeeping thread. */
bool nconn_peer_lost(nconn *c, int64_t now_ms);

/* nng_binding.c */
/* TW_EFULL (logged, naming the listener `bound`) when max_conns are open */
int nng_slot_alloc(nng_bind *nb, const char *bound, uint32_t *slot, uint32_t *gen);
void nng_slot_set(nng_bind *nb, uint32_t slot, nconn *c);
void nng_slot_free(nng_bind *nb, uint32_t slot);
void nng_slot_release(nng_bind *nb, nconn *c);
void nng_reap_push(nng_bind *nb, nconn *c);
/* le->bound: le->url with its port replaced by the bound one (port > 0) */
void nng_listener_set_bound(nng_listener_ent *le, int port);

/* nng_direct.c */
bool nng_direct_url(const char *url); /* tcp:// or ipc:// */
int nng_usable_cpus(void);            /* of this process's affinity mask */
int nng_direct_new(nng_bind *nb, int threads, int spin_us, nng_direct **out);
int nng_direct_start(nng_direct *dx); /* the pollers */
int nng_direct_listen(nng_direct *dx, nng_listener_ent *le);
void nng_direct_close_listeners(nng_direct *dx);
void nng_direct_stop(nng_direct *dx); /* after every connection is gone */
void nng_direct_free(nng_direct *dx);

#endif
