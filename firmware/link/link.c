/*
 * Link state machine:
 *
 *   IDLE --(backoff over)--> HANDSHAKE --(TLS up)--> HELLO --(hello_ack)--> ENROLL   (no certificate yet)
 *                                                                     \--> ONLINE   (certificate)
 *   ENROLL: send enroll_request (CSR + optional one-time token); "pending" repeats it every heartbeat
 *           interval; "accepted" stores the issued certificate and reconnects presenting it.
 *   ONLINE: heartbeat every interval; a missing heartbeat_ack, a TLS error, a protocol error or a
 *           timeout drops back to IDLE, which reconnects after a short backoff.
 *
 * The UART carries the TLS byte stream only; QEMU bridges it to the gateway's TCP listener. When
 * the gateway restarts, QEMU reconnects the socket but our TLS session is gone: the next heartbeat
 * goes unanswered and we start over, which is what bounds reconnection time.
 */
#include "link.h"

#include <malloc.h>
#include <string.h>

#include "boot_params.h"
#include "identity.h"
#include "mbedtls/ctr_drbg.h"
#include "mbedtls/ecp.h"
#include "mbedtls/pk.h"
#include "mbedtls/ssl.h"
#include "mbedtls/x509_crt.h"
#include "mbedtls/x509_csr.h"
#include "proto.h"
#include "psa/crypto.h"
#include "rng.h"
#include "wb_board.h"
#include "wb_console.h"
#include "wb_time.h"
#include "wb_uart.h"
#if WB_CAP_WASM_RUNTIME
#include "apps.h"
#endif

#define LINK_FRAME_MAX 2048u      /* largest frame body we accept (announced in hello) */
#define HANDSHAKE_TIMEOUT_MS 3000u /* a handshake takes ~0.1 s here; a lost ClientHello must not stall us */
#define REPLY_TIMEOUT_MS 3000u
/* After a session ends the gateway closes its TCP side and QEMU reconnects the UART's socket within
 * its reconnect delay (0.5 s); a ClientHello sent before that would land in the old connection. */
#define BACKOFF_MS 1000u
#define REJECTED_BACKOFF_MS 60000u
#define GATEWAY_HOSTNAME "localhost" /* the name in the gateway certificate's SAN that we check */

size_t wb_heap_unclaimed(void);

typedef enum { LINK_OFF, LINK_IDLE, LINK_HANDSHAKE, LINK_HELLO, LINK_ENROLL, LINK_ONLINE } link_state;

static const char *const state_names[] = {"off", "idle", "handshake", "hello", "enroll", "online"};

static struct {
    link_state state;
    uint64_t deadline;         /* IDLE: when to retry; others: when the awaited step times out */
    uint64_t next_heartbeat;
    uint64_t handshake_start;
    uint32_t heartbeat_ms;
    uint32_t max_frame;
    uint32_t next_id;
    uint32_t awaiting_id;      /* message id of the request whose reply we wait for, 0 if none */
    wb_boot_params_t params;
    wb_identity_t id;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt own_cert;
    mbedtls_pk_context key;
    int conf_has_cert;
    proto_reader reader;
} L;

#if WB_CAP_WASM_RUNTIME
/* While answering app_start/app_stop, the app's status report is the reply (same message id).
 * While answering deploy_commit, status reports wait until the deploy_result is out. */
static uint32_t reply_id;
static uint32_t reply_app;
static int holding_status;
static int held_status;
#endif

static uint8_t rx_ring[4096]; /* host->device is the slow direction: keep the UART model busy */
static wb_uart_t link_uart = {
    .base = WB_LINK_UART_BASE,
    .irq_rx = WB_LINK_UART_IRQ_RX,
    .irq_tx = -1,
    .baud = WB_LINK_UART_BAUD,
    .clock_hz = WB_LINK_UART_CLOCK_HZ,
    .rx_buf = rx_ring,
    .rx_size = sizeof rx_ring,
};
static uint8_t frame_in[LINK_FRAME_MAX];
static uint8_t frame_out[LINK_FRAME_MAX + PROTO_HEADER_SIZE];
static uint8_t scratch[1024]; /* CSR / DER key encoding */

/* ---- TLS transport over the UART ------------------------------------------------------------ */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    wb_uart_write(ctx, buf, len);
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    size_t n = wb_uart_read(ctx, buf, len);
    return n == 0 ? MBEDTLS_ERR_SSL_WANT_READ : (int)n;
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static void set_state(link_state s, uint64_t now, uint32_t timeout_ms)
{
    L.state = s;
    L.deadline = now + timeout_ms;
}

static void drop_session(uint64_t now, const char *why, int code, uint32_t backoff_ms, int orderly)
{
    if (code != 0) {
        wb_printf("link: %s (-0x%04x) in state %s; retrying in %lu ms\n", why, (unsigned)-code,
                  state_names[L.state], (unsigned long)backoff_ms);
    } else {
        wb_printf("link: %s in state %s; retrying in %lu ms\n", why, state_names[L.state], (unsigned long)backoff_ms);
    }
    /* Say goodbye only on a session we know is alive (the peer answered us last). After a timeout
     * the socket behind the UART may already belong to a new gateway connection, which would
     * take the close_notify as garbage, hang up, and make QEMU reconnect just as our next
     * ClientHello is due. */
    if (L.state >= LINK_HELLO && orderly) {
        mbedtls_ssl_close_notify(&L.ssl);
    }
    set_state(LINK_IDLE, now, backoff_ms);
#if WB_CAP_WASM_RUNTIME
    reply_id = 0;
    wb_apps_link_lost(); /* partial transfers restart from zero on the next session */
#endif
}

/* A session that failed or went silent: no close_notify. */
static void drop(uint64_t now, const char *why, int code, uint32_t backoff_ms)
{
    drop_session(now, why, code, backoff_ms, 0);
}

static uint32_t free_memory(void)
{
    struct mallinfo mi = mallinfo();
    return (uint32_t)(wb_heap_unclaimed() + mi.fordblks);
}

static int send_msg(proto_msg *msg)
{
    size_t len;
    proto_error pe = proto_encode(msg, L.max_frame, frame_out, sizeof frame_out, &len);
    if (pe != PROTO_OK) {
        wb_printf("link: cannot encode message %lu: %s\n", (unsigned long)msg->tag, proto_error_name(pe));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        int rc = mbedtls_ssl_write(&L.ssl, frame_out + off, len - off);
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            continue;
        }
        if (rc < 0) {
            return rc;
        }
        off += (size_t)rc;
    }
    return 0;
}

static uint32_t new_id(void)
{
    if (++L.next_id == 0) {
        L.next_id = 1;
    }
    return L.next_id;
}

/* ---- identity ------------------------------------------------------------------------------- */

static int load_own_key(void)
{
    mbedtls_pk_init(&L.key);
    if (L.id.key_len > 0) {
        int rc = mbedtls_pk_parse_key(&L.key, L.id.key_der, L.id.key_len, 0, 0, wb_rng, 0);
        if (rc == 0) {
            return 0;
        }
        wb_printf("identity: stored key unreadable (-0x%04x); generating a new one\n", (unsigned)-rc);
        mbedtls_pk_free(&L.key);
        mbedtls_pk_init(&L.key);
    }
    uint64_t t0 = wb_uptime_ms();
    int rc = mbedtls_pk_setup(&L.key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (rc == 0) {
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(L.key), wb_rng, 0);
    }
    if (rc != 0) {
        wb_printf("identity: key generation failed (-0x%04x)\n", (unsigned)-rc);
        return rc;
    }
    int n = mbedtls_pk_write_key_der(&L.key, scratch, sizeof scratch);
    if (n <= 0 || (size_t)n > sizeof L.id.key_der) {
        return -1;
    }
    memcpy(L.id.key_der, scratch + sizeof scratch - n, (size_t)n); /* DER is written at the end */
    L.id.key_len = (size_t)n;
    L.id.cert_len = 0; /* a new key invalidates any old certificate */
    L.id.name[0] = '\0';
    wb_printf("identity: generated a P-256 key in %lu ms\n", (unsigned long)(wb_uptime_ms() - t0));
    return wb_identity_save(&L.id);
}

static void print_fingerprint(void)
{
    unsigned char spki[128];
    int n = mbedtls_pk_write_pubkey_der(&L.key, spki, sizeof spki);
    if (n <= 0) {
        return;
    }
    unsigned char digest[32];
    psa_hash_compute(PSA_ALG_SHA_256, spki + sizeof spki - n, (size_t)n, digest, sizeof digest, &(size_t){0});
    wb_printf("identity: key fingerprint sha256 ");
    for (int i = 0; i < 32; i++) {
        wb_printf(i ? ":%02x" : "%02x", digest[i]);
    }
    wb_printf("\n");
}

/* ---- TLS session --------------------------------------------------------------------------- */

static int configure_tls(void)
{
    mbedtls_ssl_config_init(&L.conf);
    int rc = mbedtls_ssl_config_defaults(&L.conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        return rc;
    }
    mbedtls_ssl_conf_authmode(&L.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&L.conf, &L.ca, 0);
    mbedtls_ssl_conf_rng(&L.conf, wb_rng, 0);
    mbedtls_ssl_conf_min_tls_version(&L.conf, MBEDTLS_SSL_VERSION_TLS1_2);
    mbedtls_ssl_conf_max_tls_version(&L.conf, MBEDTLS_SSL_VERSION_TLS1_3);
    L.conf_has_cert = 0;
    if (L.id.cert_len > 0) {
        rc = mbedtls_x509_crt_parse_der(&L.own_cert, L.id.cert_der, L.id.cert_len);
        if (rc == 0) {
            rc = mbedtls_ssl_conf_own_cert(&L.conf, &L.own_cert, &L.key);
        }
        if (rc != 0) {
            wb_printf("identity: stored certificate unusable (-0x%04x); enrolling again\n", (unsigned)-rc);
            L.id.cert_len = 0;
        } else {
            L.conf_has_cert = 1;
        }
    }
    mbedtls_ssl_init(&L.ssl);
    rc = mbedtls_ssl_setup(&L.ssl, &L.conf);
    if (rc == 0) {
        rc = mbedtls_ssl_set_hostname(&L.ssl, GATEWAY_HOSTNAME);
    }
    mbedtls_ssl_set_bio(&L.ssl, &link_uart, bio_send, bio_recv, 0);
    return rc;
}

static void start_handshake(uint64_t now)
{
    uint8_t junk[64];
    while (wb_uart_read(&link_uart, junk, sizeof junk) > 0) {
        /* bytes of a previous session are meaningless now */
    }
    if (L.conf_has_cert != (L.id.cert_len > 0)) {
        /* Identity changed (we just enrolled): rebuild the configuration with the certificate. */
        mbedtls_ssl_free(&L.ssl);
        mbedtls_ssl_config_free(&L.conf);
        configure_tls();
    }
    mbedtls_ssl_session_reset(&L.ssl);
    proto_reader_init(&L.reader, frame_in, sizeof frame_in, PROTO_INITIAL_MAX_FRAME);
    L.max_frame = PROTO_INITIAL_MAX_FRAME;
    L.awaiting_id = 0;
    L.handshake_start = now;
    set_state(LINK_HANDSHAKE, now, HANDSHAKE_TIMEOUT_MS);
}

/* ---- protocol ------------------------------------------------------------------------------ */

static int send_hello(uint64_t now)
{
#if WB_CAP_WASM_RUNTIME
    static const proto_text features[] = {{"tls1.3", 6}, {"wasm3", 5}, {"abi1", 4}};
#else
    static const proto_text features[] = {{"tls1.3", 6}};
#endif
    proto_msg m = {.message_id = new_id(), .tag = PROTO_TAG_HELLO};
    m.u.hello.protocol_version = PROTO_VERSION;
    m.u.hello.board = (proto_text){WB_BOARD_NAME, sizeof WB_BOARD_NAME - 1};
    m.u.hello.firmware_version = (proto_text){WB_FIRMWARE_VERSION, sizeof WB_FIRMWARE_VERSION - 1};
    m.u.hello.ram_free = free_memory();
#if WB_CAP_WASM_RUNTIME
    m.u.hello.max_app_size = wb_apps_max_module_size();
#else
    m.u.hello.max_app_size = 0; /* this profile has no WASM runtime */
#endif
    m.u.hello.n_features = sizeof features / sizeof features[0];
    for (size_t i = 0; i < m.u.hello.n_features; i++) {
        m.u.hello.features[i] = features[i];
    }
    m.u.hello.max_frame_size = LINK_FRAME_MAX;
    L.awaiting_id = m.message_id;
    set_state(LINK_HELLO, now, REPLY_TIMEOUT_MS);
    return send_msg(&m);
}

static int send_enroll_request(uint64_t now)
{
    mbedtls_x509write_csr csr;
    mbedtls_x509write_csr_init(&csr);
    mbedtls_x509write_csr_set_md_alg(&csr, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&csr, &L.key);
    int rc = mbedtls_x509write_csr_set_subject_name(&csr, "CN=" WB_BOARD_NAME);
    int n = rc == 0 ? mbedtls_x509write_csr_der(&csr, scratch, sizeof scratch, wb_rng, 0) : rc;
    mbedtls_x509write_csr_free(&csr);
    if (n <= 0) {
        wb_printf("link: cannot write CSR (-0x%04x)\n", (unsigned)-n);
        return n < 0 ? n : -1;
    }
    proto_msg m = {.message_id = new_id(), .tag = PROTO_TAG_ENROLL_REQUEST};
    m.u.enroll_request.csr = (proto_blob){scratch + sizeof scratch - n, (size_t)n};
    m.u.enroll_request.board = (proto_text){WB_BOARD_NAME, sizeof WB_BOARD_NAME - 1};
    m.u.enroll_request.token = (proto_blob){L.params.token, L.params.token_len};
    L.awaiting_id = m.message_id;
    set_state(LINK_ENROLL, now, L.heartbeat_ms);
    return send_msg(&m);
}

static int send_heartbeat(uint64_t now)
{
    proto_msg m = {.message_id = new_id(), .tag = PROTO_TAG_HEARTBEAT};
    m.u.heartbeat.uptime_ms = now;
    m.u.heartbeat.free_memory = free_memory();
    m.u.heartbeat.n_apps = 0;
#if WB_CAP_WASM_RUNTIME
    uint32_t ids[PROTO_APPS_MAX], states[PROTO_APPS_MAX];
    size_t n = wb_apps_states(ids, states, PROTO_APPS_MAX);
    for (size_t i = 0; i < n; i++) {
        m.u.heartbeat.apps[i].app_id = ids[i];
        m.u.heartbeat.apps[i].state = states[i];
    }
    m.u.heartbeat.n_apps = n;
#endif
    L.awaiting_id = m.message_id;
    L.deadline = now + REPLY_TIMEOUT_MS;
    L.next_heartbeat = now + L.heartbeat_ms;
    return send_msg(&m);
}

#if WB_CAP_WASM_RUNTIME
/* ---- apps ---------------------------------------------------------------------------------- */


static void send_status(const wb_app_report *r, uint32_t id)
{
    proto_msg m = {.message_id = id, .tag = PROTO_TAG_APP_STATUS};
    m.u.app_status.app_id = r->app_id;
    m.u.app_status.state = r->state;
    size_t elen = r->error != 0 ? strlen(r->error) : 0;
    m.u.app_status.error = (proto_text){r->error, elen > PROTO_APP_TEXT_MAX ? PROTO_APP_TEXT_MAX : elen};
    m.u.app_status.restarts = r->restarts;
    m.u.app_status.metrics.calls = r->calls;
    m.u.app_status.metrics.traps = r->traps;
    m.u.app_status.metrics.mem_pages = r->mem_pages;
    m.u.app_status.metrics.max_call_ms = r->max_call_ms;
    send_msg(&m);
}

static void sink_status(const wb_app_report *r)
{
    if (L.state != LINK_ONLINE) {
        return; /* the next session's first heartbeat carries every app's state */
    }
    if (holding_status) {
        held_status = 1;
        return;
    }
    uint32_t id = new_id();
    if (reply_app == r->app_id && reply_id != 0) {
        id = reply_id;
        reply_id = 0;
    }
    send_status(r, id);
}

static void sink_log(uint32_t app_id, uint32_t level, const char *text, size_t len)
{
    if (L.state != LINK_ONLINE) {
        return; /* the console already has the line */
    }
    proto_msg m = {.message_id = new_id(), .tag = PROTO_TAG_APP_LOG};
    m.u.app_log.app_id = app_id;
    m.u.app_log.level = level;
    m.u.app_log.uptime_ms = wb_uptime_ms();
    /* Cut to the protocol's limit on a UTF-8 boundary. */
    size_t n = len > PROTO_LOG_TEXT_MAX ? PROTO_LOG_TEXT_MAX : len;
    while (n > 0 && n < len && ((uint8_t)text[n] & 0xC0u) == 0x80u) {
        n--;
    }
    m.u.app_log.text = (proto_text){text, n};
    send_msg(&m);
}

static int sink_publish(uint32_t app_id, const char *topic, size_t topic_len, const uint8_t *data, size_t len)
{
    if (L.state != LINK_ONLINE) {
        return -1;
    }
    proto_msg m = {.message_id = new_id(), .tag = PROTO_TAG_PUBLISH};
    m.u.publish.app_id = app_id;
    m.u.publish.topic = (proto_text){topic, topic_len};
    m.u.publish.payload = (proto_blob){data, len};
    return send_msg(&m) == 0 ? 0 : -1;
}

static const wb_app_sink app_sink = {sink_status, sink_log, sink_publish};

static void send_deploy_result(uint32_t id, uint32_t app_id, wb_app_code code, uint32_t next_offset,
                               const char *text)
{
    proto_msg m = {.message_id = id, .tag = PROTO_TAG_DEPLOY_RESULT};
    m.u.deploy_result.app_id = app_id;
    m.u.deploy_result.code = code;
    m.u.deploy_result.next_offset = next_offset;
    size_t tl = strlen(text);
    m.u.deploy_result.text = (proto_text){text, tl > PROTO_APP_TEXT_MAX ? PROTO_APP_TEXT_MAX : tl};
    send_msg(&m);
}

static void reply_with_status(uint32_t id, uint32_t app_id, wb_app_code code)
{
    if (reply_id == 0) {
        return; /* a state change already answered */
    }
    reply_id = 0;
    wb_app_report r;
    if (code == WB_APP_UNKNOWN_APP || !wb_apps_report(app_id, &r)) {
        r = (wb_app_report){.app_id = app_id, .state = 0, .error = "unknown app"};
    }
    send_status(&r, id);
}

/* Returns 0 if m was an app message (and answered), -1 otherwise. */
static int handle_app_message(const proto_msg *m)
{
    char err[PROTO_APP_TEXT_MAX + 1];
    uint32_t next = 0;
    wb_app_code code;
    switch (m->tag) {
    case PROTO_TAG_DEPLOY_BEGIN: {
        const proto_deploy_begin *b = &m->u.deploy_begin;
        wb_deploy_spec spec = {b->app_id, b->name.ptr, b->name.len, b->size, b->sha256.ptr, b->config.ptr,
                               b->config.len, b->mem_pages, b->time_budget_ms, b->restart};
        code = wb_apps_deploy_begin(&spec, &next, err, sizeof err);
        send_deploy_result(m->message_id, b->app_id, code, next, err);
        return 0;
    }
    case PROTO_TAG_DEPLOY_CHUNK: {
        const proto_deploy_chunk *c = &m->u.deploy_chunk;
        code = wb_apps_deploy_chunk(c->app_id, c->offset, c->data.ptr, c->data.len, &next, err, sizeof err);
        send_deploy_result(m->message_id, c->app_id, code, next, err);
        return 0;
    }
    case PROTO_TAG_DEPLOY_COMMIT: {
        uint32_t app_id = m->u.deploy_commit.app_id;
        holding_status = 1;
        held_status = 0;
        code = wb_apps_deploy_commit(app_id, &next, err, sizeof err);
        holding_status = 0;
        send_deploy_result(m->message_id, app_id, code, next, err);
        wb_app_report r;
        if (held_status && wb_apps_report(app_id, &r)) {
            send_status(&r, new_id());
        }
        return 0;
    }
    case PROTO_TAG_APP_START:
        reply_app = m->u.app_start.app_id;
        reply_id = m->message_id;
        code = wb_apps_start(reply_app);
        reply_with_status(m->message_id, reply_app, code);
        return 0;
    case PROTO_TAG_APP_STOP:
        reply_app = m->u.app_stop.app_id;
        reply_id = m->message_id;
        code = wb_apps_stop(reply_app, m->u.app_stop.remove);
        reply_with_status(m->message_id, reply_app, code);
        return 0;
    case PROTO_TAG_MESSAGE:
        wb_apps_message(m->u.message.app_id, m->u.message.topic.ptr, m->u.message.topic.len,
                        m->u.message.payload.ptr, m->u.message.payload.len);
        return 0;
    default:
        return -1;
    }
}
#endif

static void on_enroll_result(const proto_enroll_result *r, uint64_t now)
{
    if (r->status == PROTO_ENROLL_PENDING) {
        wb_printf("link: enrollment pending operator approval\n");
        L.awaiting_id = 0;
        L.deadline = now + L.heartbeat_ms; /* ask again then */
        return;
    }
    if (r->status != PROTO_ENROLL_ACCEPTED) {
        drop(now, "enrollment rejected by the gateway", 0, REJECTED_BACKOFF_MS);
        return;
    }
    if (r->certificate.len == 0 || r->certificate.len > sizeof L.id.cert_der || r->device_name.len >= WB_NAME_MAX) {
        drop(now, "enrollment result without a usable certificate", 0, BACKOFF_MS);
        return;
    }
    memcpy(L.id.cert_der, r->certificate.ptr, r->certificate.len);
    L.id.cert_len = r->certificate.len;
    memcpy(L.id.name, r->device_name.ptr, r->device_name.len);
    L.id.name[r->device_name.len] = '\0';
    wb_identity_save(&L.id);
    wb_printf("link: enrolled as %s; reconnecting with the issued certificate\n", L.id.name);
    drop_session(now, "enrollment complete", 0, BACKOFF_MS, 1);
}

static void handle_frame(const uint8_t *body, size_t len, uint64_t now)
{
    proto_msg m;
    proto_error pe = proto_decode(body, len, &m);
    if (pe != PROTO_OK) {
        size_t flen;
        if (proto_encode_error(m.message_id, pe, proto_error_name(pe), frame_out, sizeof frame_out, &flen) ==
            PROTO_OK) {
            mbedtls_ssl_write(&L.ssl, frame_out, flen);
        }
        drop(now, "protocol error from the gateway", 0, BACKOFF_MS);
        return;
    }
    if (m.tag == PROTO_TAG_ERROR) {
        wb_printf("link: gateway error %lu: %.*s\n", (unsigned long)m.u.error.code, (int)m.u.error.text.len,
                  m.u.error.text.ptr);
        if (m.u.error.code == PROTO_ERR_UNKNOWN_DEVICE) {
            /* Our certificate is valid but the gateway no longer knows this key (deleted =
             * revoked): forget the certificate and enroll again with the same key. */
            L.id.cert_len = 0;
            L.id.name[0] = '\0';
            wb_identity_save(&L.id);
            wb_printf("link: this device was removed from the gateway; enrolling again\n");
        }
        drop(now, "gateway closed the session", 0, BACKOFF_MS);
        return;
    }
    if (L.state == LINK_HELLO && m.tag == PROTO_TAG_HELLO_ACK) {
        L.max_frame = m.u.hello_ack.max_frame_size < LINK_FRAME_MAX ? m.u.hello_ack.max_frame_size : LINK_FRAME_MAX;
        proto_reader_set_max(&L.reader, L.max_frame);
        L.heartbeat_ms = m.u.hello_ack.heartbeat_interval_ms;
        L.awaiting_id = 0;
        if (L.id.cert_len == 0) {
            if (send_enroll_request(now) != 0) {
                drop(now, "sending enroll_request failed", 0, BACKOFF_MS);
            }
        } else {
            wb_printf("link: connected as %s (heartbeat %lu ms, frames <= %lu bytes)\n", L.id.name,
                      (unsigned long)L.heartbeat_ms, (unsigned long)L.max_frame);
            set_state(LINK_ONLINE, now, 0);
            L.next_heartbeat = now;
        }
    } else if (L.state == LINK_ENROLL && m.tag == PROTO_TAG_ENROLL_RESULT) {
        on_enroll_result(&m.u.enroll_result, now);
    } else if (L.state == LINK_ONLINE && m.tag == PROTO_TAG_HEARTBEAT_ACK) {
        if (m.message_id == L.awaiting_id) {
            L.awaiting_id = 0;
        }
#if WB_CAP_WASM_RUNTIME
    } else if (L.state == LINK_ONLINE && handle_app_message(&m) == 0) {
        /* handled */
#endif
    } else {
        size_t flen;
        if (proto_encode_error(m.message_id, PROTO_ERR_UNEXPECTED_MESSAGE, "unexpected message", frame_out,
                               sizeof frame_out, &flen) == PROTO_OK) {
            mbedtls_ssl_write(&L.ssl, frame_out, flen);
        }
        drop(now, "unexpected message from the gateway", 0, BACKOFF_MS);
    }
}

static void read_frames(uint64_t now)
{
    uint8_t buf[256];
    for (;;) {
        int n = mbedtls_ssl_read(&L.ssl, buf, sizeof buf);
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) {
            return;
        }
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (n == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            continue; /* TLS 1.3 ticket: we do not resume sessions */
        }
#endif
        if (n <= 0) {
            drop(now, n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ? "gateway closed the connection"
                                                                        : "TLS read failed",
                 n == 0 ? 0 : n, BACKOFF_MS);
            return;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            proto_read_status st = proto_reader_feed(&L.reader, buf + off, (size_t)n - off, &used);
            off += used;
            if (st == PROTO_READ_ERROR) {
                drop(now, "malformed frame from the gateway", 0, BACKOFF_MS);
                return;
            }
            if (st == PROTO_READ_FRAME) {
                link_state before = L.state;
                handle_frame(frame_in, L.reader.frame_len, now);
                if (L.state == LINK_IDLE || L.state < before) {
                    return;
                }
            }
        }
    }
}

/* ---- public -------------------------------------------------------------------------------- */

int wb_link_init(void)
{
    L.state = LINK_OFF;
    int bp = wb_boot_params_take(&L.params);
    if (bp == -1) {
        wb_printf("link: off (no boot parameters: this board was not started by the wasmbed supervisor)\n");
        return -1;
    }
    if (bp != 0 || L.params.seed_len < 48 || L.params.ca_len == 0) {
        wb_printf("link: off (boot parameters incomplete: need a >= 48-byte seed and the gateway CA)\n");
        return -1;
    }
    int loaded = wb_identity_load(&L.id);
    L.id.boots++;
    if (wb_identity_save(&L.id) != 0) {
        wb_printf("link: off (cannot write the identity storage)\n");
        return -1;
    }
    int rc = wb_rng_init(L.params.seed, L.params.seed_len, L.id.boots);
    memset(L.params.seed, 0, sizeof L.params.seed);
    if (rc != 0 || psa_crypto_init() != PSA_SUCCESS) {
        wb_printf("link: off (random generator failed to start: -0x%04x)\n", (unsigned)-rc);
        return -1;
    }
    mbedtls_x509_crt_init(&L.ca);
    mbedtls_x509_crt_init(&L.own_cert);
    rc = mbedtls_x509_crt_parse_der(&L.ca, L.params.ca_der, L.params.ca_len);
    if (rc != 0) {
        wb_printf("link: off (gateway CA certificate unreadable: -0x%04x)\n", (unsigned)-rc);
        return -1;
    }
    if (load_own_key() != 0) {
        return -1;
    }
    wb_printf("identity: %s, storage boot %lu%s\n", L.id.cert_len ? L.id.name : "not enrolled",
              (unsigned long)L.id.boots, loaded == 0 ? "" : " (new storage)");
    print_fingerprint();
    wb_uart_init(&link_uart);
    rc = configure_tls();
    if (rc != 0) {
        wb_printf("link: off (TLS configuration failed: -0x%04x)\n", (unsigned)-rc);
        return -1;
    }
    L.heartbeat_ms = 5000;
#if WB_CAP_WASM_RUNTIME
    wb_apps_init(&app_sink);
    wb_printf("apps: wasm3 runtime ready, modules up to %lu bytes\n", (unsigned long)wb_apps_max_module_size());
#endif
    set_state(LINK_IDLE, wb_uptime_ms(), 0);
    return 0;
}

void wb_link_poll(uint64_t now)
{
#if WB_CAP_WASM_RUNTIME
    wb_apps_poll(now); /* apps keep running whatever the link does */
#endif
    switch (L.state) {
    case LINK_OFF:
        return;
    case LINK_IDLE:
        if (now >= L.deadline) {
            start_handshake(now);
        }
        return;
    case LINK_HANDSHAKE: {
        int rc = mbedtls_ssl_handshake(&L.ssl);
        if (rc == 0) {
            struct mallinfo mi = mallinfo();
            wb_printf("link: TLS up in %lu ms (%s, %s); heap in use %lu, high-water %lu bytes\n",
                      (unsigned long)(now - L.handshake_start), mbedtls_ssl_get_version(&L.ssl),
                      mbedtls_ssl_get_ciphersuite(&L.ssl), (unsigned long)mi.uordblks, (unsigned long)mi.arena);
            if (send_hello(now) != 0) {
                drop(now, "sending hello failed", 0, BACKOFF_MS);
            }
        } else if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) {
            uint32_t flags = mbedtls_ssl_get_verify_result(&L.ssl);
            if (flags != 0 && flags != (uint32_t)-1) {
                wb_printf("link: gateway certificate rejected (verify flags 0x%08lx)\n", (unsigned long)flags);
            }
            drop(now, "TLS handshake failed", rc, BACKOFF_MS);
        } else if (now >= L.deadline) {
            drop(now, "TLS handshake timed out", 0, BACKOFF_MS);
        }
        return;
    }
    case LINK_HELLO:
    case LINK_ENROLL:
    case LINK_ONLINE:
        read_frames(now);
        break;
    }
    if (L.state == LINK_HELLO && now >= L.deadline) {
        drop(now, "no hello_ack", 0, BACKOFF_MS);
    } else if (L.state == LINK_ENROLL && now >= L.deadline) {
        if (L.awaiting_id != 0) {
            drop(now, "no enroll_result", 0, BACKOFF_MS);
        } else if (send_enroll_request(now) != 0) {
            drop(now, "sending enroll_request failed", 0, BACKOFF_MS);
        }
    } else if (L.state == LINK_ONLINE) {
        if (L.awaiting_id != 0 && now >= L.deadline) {
            drop(now, "heartbeat not acknowledged", 0, BACKOFF_MS);
        } else if (L.awaiting_id == 0 && now >= L.next_heartbeat && send_heartbeat(now) != 0) {
            drop(now, "sending heartbeat failed", 0, BACKOFF_MS);
        }
    }
}
