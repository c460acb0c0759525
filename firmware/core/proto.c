/*
 * Protocol v1 message layer over cbor.c; see proto.h and docs/protocol.md.
 * Decoding checks happen in the same order as gateway/protocol (messages.py), so a bad frame
 * gets the same error code from either side.
 */
#include "proto.h"

#include <string.h>

const char *proto_error_name(proto_error code)
{
    switch (code) {
    case PROTO_OK: return "OK";
    case PROTO_ERR_FRAME_TOO_LARGE: return "FRAME_TOO_LARGE";
    case PROTO_ERR_MALFORMED_CBOR: return "MALFORMED_CBOR";
    case PROTO_ERR_INDEFINITE_LENGTH: return "INDEFINITE_LENGTH";
    case PROTO_ERR_TRAILING_BYTES: return "TRAILING_BYTES";
    case PROTO_ERR_TOO_DEEP: return "TOO_DEEP";
    case PROTO_ERR_UNSUPPORTED_ITEM: return "UNSUPPORTED_ITEM";
    case PROTO_ERR_BAD_ENVELOPE: return "BAD_ENVELOPE";
    case PROTO_ERR_UNSUPPORTED_VERSION: return "UNSUPPORTED_VERSION";
    case PROTO_ERR_UNKNOWN_MESSAGE: return "UNKNOWN_MESSAGE";
    case PROTO_ERR_BAD_FIELDS: return "BAD_FIELDS";
    case PROTO_ERR_UNEXPECTED_MESSAGE: return "UNEXPECTED_MESSAGE";
    case PROTO_ERR_INTERNAL: return "INTERNAL";
    case PROTO_ERR_UNKNOWN_DEVICE: return "UNKNOWN_DEVICE";
    }
    return "UNKNOWN_ERROR";
}

const char *proto_app_error_name(proto_app_error code)
{
    switch (code) {
    case PROTO_APP_ERR_OK: return "OK";
    case PROTO_APP_ERR_TOO_LARGE: return "TOO_LARGE";
    case PROTO_APP_ERR_NO_MEMORY: return "NO_MEMORY";
    case PROTO_APP_ERR_BAD_OFFSET: return "BAD_OFFSET";
    case PROTO_APP_ERR_HASH_MISMATCH: return "HASH_MISMATCH";
    case PROTO_APP_ERR_LOAD_FAILED: return "LOAD_FAILED";
    case PROTO_APP_ERR_START_FAILED: return "START_FAILED";
    case PROTO_APP_ERR_UNKNOWN_APP: return "UNKNOWN_APP";
    case PROTO_APP_ERR_BUSY: return "BUSY";
    }
    return "UNKNOWN_APP_ERROR";
}

proto_error proto_frame_length(const uint8_t hdr[PROTO_HEADER_SIZE], uint32_t max_frame, uint32_t *len)
{
    uint32_t n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (n > max_frame)
        return PROTO_ERR_FRAME_TOO_LARGE;
    *len = n;
    return PROTO_OK;
}

/* ---- validation ------------------------------------------------------------------------- */

static bool text_ok(proto_text t, size_t lo, size_t hi)
{
    if (t.len < lo || t.len > hi)
        return false;
    return t.len == 0 || (t.ptr != NULL && cbor_utf8_valid((const uint8_t *)t.ptr, t.len));
}

static bool blob_ok(proto_blob b, size_t lo, size_t hi)
{
    return b.len >= lo && b.len <= hi && (b.len == 0 || b.ptr != NULL);
}

proto_error proto_validate(const proto_msg *m)
{
    bool ok;
    switch (m->tag) {
    case PROTO_TAG_HELLO: {
        const proto_hello *h = &m->u.hello;
        ok = h->protocol_version >= 1 && text_ok(h->board, 1, PROTO_BOARD_MAX) &&
             text_ok(h->firmware_version, 1, PROTO_FIRMWARE_VERSION_MAX) && h->n_features <= PROTO_FEATURES_MAX &&
             h->max_frame_size >= PROTO_MIN_FRAME;
        for (size_t i = 0; ok && i < h->n_features; i++)
            ok = text_ok(h->features[i], 1, PROTO_FEATURE_MAX);
        break;
    }
    case PROTO_TAG_HELLO_ACK: {
        const proto_hello_ack *a = &m->u.hello_ack;
        ok = a->protocol_version >= 1 && a->max_frame_size >= PROTO_MIN_FRAME &&
             a->heartbeat_interval_ms >= PROTO_HEARTBEAT_MIN_MS && a->heartbeat_interval_ms <= PROTO_HEARTBEAT_MAX_MS;
        break;
    }
    case PROTO_TAG_ENROLL_REQUEST:
        ok = blob_ok(m->u.enroll_request.csr, 1, PROTO_CSR_MAX) &&
             text_ok(m->u.enroll_request.board, 1, PROTO_BOARD_MAX) &&
             blob_ok(m->u.enroll_request.token, 0, PROTO_TOKEN_MAX);
        break;
    case PROTO_TAG_ENROLL_RESULT: {
        const proto_enroll_result *r = &m->u.enroll_result;
        if (r->status == PROTO_ENROLL_ACCEPTED)
            ok = text_ok(r->device_name, 1, PROTO_DEVICE_NAME_MAX) &&
                 blob_ok(r->device_uuid, PROTO_UUID_LEN, PROTO_UUID_LEN) &&
                 blob_ok(r->certificate, 1, PROTO_CERT_MAX);
        else
            ok = r->status <= PROTO_ENROLL_REJECTED && r->device_name.len == 0 && r->device_uuid.len == 0 &&
                 r->certificate.len == 0;
        ok = ok && text_ok(r->reason, 0, PROTO_REASON_MAX);
        break;
    }
    case PROTO_TAG_HEARTBEAT: {
        const proto_heartbeat *h = &m->u.heartbeat;
        ok = h->n_apps <= PROTO_APPS_MAX;
        for (size_t i = 0; ok && i < h->n_apps; i++)
            ok = h->apps[i].state <= 255;
        break;
    }
    case PROTO_TAG_HEARTBEAT_ACK:
        ok = true;
        break;
    case PROTO_TAG_ERROR:
        ok = m->u.error.code >= 1 && m->u.error.code <= 0xFFFF && text_ok(m->u.error.text, 0, PROTO_ERROR_TEXT_MAX);
        break;
    case PROTO_TAG_DEPLOY_BEGIN: {
        const proto_deploy_begin *b = &m->u.deploy_begin;
        ok = b->app_id >= 1 && text_ok(b->name, 1, PROTO_APP_NAME_MAX) && b->size >= 1 &&
             blob_ok(b->sha256, PROTO_SHA256_LEN, PROTO_SHA256_LEN) && blob_ok(b->config, 0, PROTO_APP_CONFIG_MAX) &&
             b->mem_pages <= PROTO_MEM_PAGES_MAX && b->time_budget_ms >= 1 &&
             b->time_budget_ms <= PROTO_TIME_BUDGET_MAX_MS && b->restart <= PROTO_RESTART_ALWAYS;
        break;
    }
    case PROTO_TAG_DEPLOY_CHUNK:
        ok = m->u.deploy_chunk.app_id >= 1 && blob_ok(m->u.deploy_chunk.data, 1, PROTO_CHUNK_MAX);
        break;
    case PROTO_TAG_DEPLOY_COMMIT:
    case PROTO_TAG_APP_START:
        ok = m->u.app_start.app_id >= 1; /* deploy_commit and app_start share proto_app_ref */
        break;
    case PROTO_TAG_DEPLOY_RESULT:
        ok = m->u.deploy_result.app_id >= 1 && text_ok(m->u.deploy_result.text, 0, PROTO_APP_TEXT_MAX);
        break;
    case PROTO_TAG_APP_STOP:
        ok = m->u.app_stop.app_id >= 1;
        break;
    case PROTO_TAG_APP_STATUS:
        ok = m->u.app_status.app_id >= 1 && m->u.app_status.state <= 255 &&
             text_ok(m->u.app_status.error, 0, PROTO_APP_TEXT_MAX);
        break;
    case PROTO_TAG_APP_LOG:
        ok = m->u.app_log.app_id >= 1 && m->u.app_log.level <= PROTO_LOG_LEVEL_MAX &&
             text_ok(m->u.app_log.text, 0, PROTO_LOG_TEXT_MAX);
        break;
    case PROTO_TAG_PUBLISH:
    case PROTO_TAG_MESSAGE: /* same layout */
        ok = m->u.publish.app_id >= 1 && text_ok(m->u.publish.topic, 1, PROTO_TOPIC_MAX) &&
             blob_ok(m->u.publish.payload, 0, PROTO_PAYLOAD_MAX);
        break;
    default:
        return PROTO_ERR_UNKNOWN_MESSAGE;
    }
    return ok ? PROTO_OK : PROTO_ERR_BAD_FIELDS;
}

/* ---- decoding --------------------------------------------------------------------------- */

static proto_error from_cbor(cbor_err e)
{
    switch (e) {
    case CBOR_OK: return PROTO_OK;
    case CBOR_ERR_MALFORMED: return PROTO_ERR_MALFORMED_CBOR;
    case CBOR_ERR_INDEFINITE: return PROTO_ERR_INDEFINITE_LENGTH;
    case CBOR_ERR_TRAILING: return PROTO_ERR_TRAILING_BYTES;
    case CBOR_ERR_TOO_DEEP: return PROTO_ERR_TOO_DEEP;
    case CBOR_ERR_UNSUPPORTED: return PROTO_ERR_UNSUPPORTED_ITEM;
    case CBOR_ERR_TYPE:
    case CBOR_ERR_RANGE: return PROTO_ERR_BAD_FIELDS;
    case CBOR_ERR_OVERFLOW: break;
    }
    return PROTO_ERR_INTERNAL;
}

static void rd_text(cbor_dec *d, proto_text *t)
{
    t->ptr = NULL;
    t->len = 0;
    cbor_read_text(d, &t->ptr, &t->len);
}

static void rd_blob(cbor_dec *d, proto_blob *b)
{
    b->ptr = NULL;
    b->len = 0;
    cbor_read_bytes(d, &b->ptr, &b->len);
}

/* Reads the fields of message `tag`; field-type problems end up in d->err (sticky). */
static proto_error rd_fields(cbor_dec *d, proto_msg *m)
{
    switch (m->tag) {
    case PROTO_TAG_HELLO: {
        proto_hello *h = &m->u.hello;
        size_t n = 0;
        cbor_read_u32(d, &h->protocol_version);
        rd_text(d, &h->board);
        rd_text(d, &h->firmware_version);
        cbor_read_u32(d, &h->ram_free);
        cbor_read_u32(d, &h->max_app_size);
        if (cbor_read_array(d, &n) == CBOR_OK && n > PROTO_FEATURES_MAX)
            return PROTO_ERR_BAD_FIELDS;
        h->n_features = n;
        for (size_t i = 0; i < n; i++)
            rd_text(d, &h->features[i]);
        cbor_read_u32(d, &h->max_frame_size);
        break;
    }
    case PROTO_TAG_HELLO_ACK:
        cbor_read_u32(d, &m->u.hello_ack.protocol_version);
        cbor_read_u32(d, &m->u.hello_ack.max_frame_size);
        cbor_read_uint(d, &m->u.hello_ack.gateway_time_ms);
        cbor_read_u32(d, &m->u.hello_ack.heartbeat_interval_ms);
        break;
    case PROTO_TAG_ENROLL_REQUEST:
        rd_blob(d, &m->u.enroll_request.csr);
        rd_text(d, &m->u.enroll_request.board);
        rd_blob(d, &m->u.enroll_request.token);
        break;
    case PROTO_TAG_ENROLL_RESULT:
        cbor_read_u32(d, &m->u.enroll_result.status);
        rd_text(d, &m->u.enroll_result.device_name);
        rd_blob(d, &m->u.enroll_result.device_uuid);
        rd_blob(d, &m->u.enroll_result.certificate);
        rd_text(d, &m->u.enroll_result.reason);
        break;
    case PROTO_TAG_HEARTBEAT: {
        proto_heartbeat *h = &m->u.heartbeat;
        size_t n = 0;
        cbor_read_uint(d, &h->uptime_ms);
        cbor_read_u32(d, &h->free_memory);
        if (cbor_read_array(d, &n) == CBOR_OK && n > PROTO_APPS_MAX)
            return PROTO_ERR_BAD_FIELDS;
        h->n_apps = n;
        for (size_t i = 0; i < n && d->err == CBOR_OK; i++) {
            size_t items = 0;
            if (cbor_read_array(d, &items) == CBOR_OK && items < 2)
                return PROTO_ERR_BAD_FIELDS;
            cbor_read_u32(d, &h->apps[i].app_id);
            cbor_read_u32(d, &h->apps[i].state);
            /* Later versions may append items to an entry: skip them (frame depth already checked). */
            for (size_t k = 2; k < items && d->err == CBOR_OK; k++)
                cbor_skip(d, PROTO_MAX_DEPTH);
        }
        break;
    }
    case PROTO_TAG_HEARTBEAT_ACK:
        cbor_read_uint(d, &m->u.heartbeat_ack.gateway_time_ms);
        break;
    case PROTO_TAG_ERROR:
        cbor_read_u32(d, &m->u.error.code);
        rd_text(d, &m->u.error.text);
        break;
    case PROTO_TAG_DEPLOY_BEGIN: {
        proto_deploy_begin *b = &m->u.deploy_begin;
        cbor_read_u32(d, &b->app_id);
        rd_text(d, &b->name);
        cbor_read_u32(d, &b->size);
        rd_blob(d, &b->sha256);
        rd_blob(d, &b->config);
        cbor_read_u32(d, &b->mem_pages);
        cbor_read_u32(d, &b->time_budget_ms);
        cbor_read_u32(d, &b->restart);
        break;
    }
    case PROTO_TAG_DEPLOY_CHUNK:
        cbor_read_u32(d, &m->u.deploy_chunk.app_id);
        cbor_read_u32(d, &m->u.deploy_chunk.offset);
        rd_blob(d, &m->u.deploy_chunk.data);
        break;
    case PROTO_TAG_DEPLOY_COMMIT:
    case PROTO_TAG_APP_START:
        cbor_read_u32(d, &m->u.app_start.app_id);
        break;
    case PROTO_TAG_DEPLOY_RESULT:
        cbor_read_u32(d, &m->u.deploy_result.app_id);
        cbor_read_u32(d, &m->u.deploy_result.code);
        cbor_read_u32(d, &m->u.deploy_result.next_offset);
        rd_text(d, &m->u.deploy_result.text);
        break;
    case PROTO_TAG_APP_STOP:
        cbor_read_u32(d, &m->u.app_stop.app_id);
        cbor_read_bool(d, &m->u.app_stop.remove);
        break;
    case PROTO_TAG_APP_STATUS: {
        proto_app_status *st = &m->u.app_status;
        size_t n = 0;
        cbor_read_u32(d, &st->app_id);
        cbor_read_u32(d, &st->state);
        rd_text(d, &st->error);
        cbor_read_u32(d, &st->restarts);
        if (cbor_read_array(d, &n) == CBOR_OK && n != 4)
            return PROTO_ERR_BAD_FIELDS;
        cbor_read_u32(d, &st->metrics.calls);
        cbor_read_u32(d, &st->metrics.traps);
        cbor_read_u32(d, &st->metrics.mem_pages);
        cbor_read_u32(d, &st->metrics.max_call_ms);
        break;
    }
    case PROTO_TAG_APP_LOG:
        cbor_read_u32(d, &m->u.app_log.app_id);
        cbor_read_u32(d, &m->u.app_log.level);
        cbor_read_uint(d, &m->u.app_log.uptime_ms);
        rd_text(d, &m->u.app_log.text);
        break;
    case PROTO_TAG_PUBLISH:
    case PROTO_TAG_MESSAGE:
        cbor_read_u32(d, &m->u.publish.app_id);
        rd_text(d, &m->u.publish.topic);
        rd_blob(d, &m->u.publish.payload);
        break;
    default:
        return PROTO_ERR_UNKNOWN_MESSAGE;
    }
    return d->err == CBOR_OK ? PROTO_OK : from_cbor(d->err);
}

/* Fields per tag; 0 = tag not defined in this version (reserved or unassigned). */
static size_t field_count(uint64_t tag)
{
    static const uint8_t counts[] = {0, 7, 4, 3, 5, 3, 1, 2, /* 8..15 reserved */ 0, 0, 0, 0, 0, 0, 0, 0,
                                     /* 16..25: apps */ 8, 3, 1, 4, 1, 2, 5, 4, 3, 3};
    return tag < sizeof counts ? counts[tag] : 0;
}

proto_error proto_decode(const uint8_t *body, size_t len, proto_msg *m)
{
    cbor_dec d;
    size_t n = 0;
    uint64_t version = 0, id = 0, tag = 0;

    memset(m, 0, sizeof *m);
    /* Whole-frame check first: definite lengths, profile, depth, no trailing bytes. */
    proto_error e = from_cbor(cbor_check_item(body, len, PROTO_MAX_DEPTH));
    if (e != PROTO_OK)
        return e;
    cbor_dec_init(&d, body, len);
    if (cbor_read_array(&d, &n) != CBOR_OK || n != 3)
        return PROTO_ERR_BAD_ENVELOPE;
    if (cbor_read_uint(&d, &version) != CBOR_OK)
        return PROTO_ERR_BAD_ENVELOPE;
    if (cbor_read_uint(&d, &id) != CBOR_OK || id > 0xFFFFFFFFu)
        return PROTO_ERR_BAD_ENVELOPE;
    m->message_id = (uint32_t)id;
    if (version != PROTO_VERSION)
        return PROTO_ERR_UNSUPPORTED_VERSION;
    if (cbor_read_array(&d, &n) != CBOR_OK || n == 0)
        return PROTO_ERR_BAD_ENVELOPE;
    if (cbor_read_uint(&d, &tag) != CBOR_OK)
        return PROTO_ERR_BAD_ENVELOPE;
    if (field_count(tag) == 0)
        return PROTO_ERR_UNKNOWN_MESSAGE;
    m->tag = (uint32_t)tag;
    if (n - 1 != field_count(m->tag))
        return PROTO_ERR_BAD_FIELDS;
    e = rd_fields(&d, m);
    if (e != PROTO_OK)
        return e;
    return proto_validate(m);
}

/* ---- encoding --------------------------------------------------------------------------- */

static void put_text(cbor_enc *e, proto_text t) { cbor_put_text(e, t.ptr, t.len); }
static void put_blob(cbor_enc *e, proto_blob b) { cbor_put_bytes(e, b.ptr, b.len); }

proto_error proto_encode(const proto_msg *m, uint32_t max_frame, uint8_t *buf, size_t cap, size_t *frame_len)
{
    cbor_enc e;
    proto_error v = proto_validate(m);
    if (v != PROTO_OK)
        return v;
    if (buf == NULL || cap < PROTO_HEADER_SIZE)
        return PROTO_ERR_INTERNAL;
    cbor_enc_init(&e, buf + PROTO_HEADER_SIZE, cap - PROTO_HEADER_SIZE);
    cbor_put_array(&e, 3);
    cbor_put_uint(&e, PROTO_VERSION);
    cbor_put_uint(&e, m->message_id);
    cbor_put_array(&e, 1 + field_count(m->tag));
    cbor_put_uint(&e, m->tag);
    switch (m->tag) {
    case PROTO_TAG_HELLO: {
        const proto_hello *h = &m->u.hello;
        cbor_put_uint(&e, h->protocol_version);
        put_text(&e, h->board);
        put_text(&e, h->firmware_version);
        cbor_put_uint(&e, h->ram_free);
        cbor_put_uint(&e, h->max_app_size);
        cbor_put_array(&e, h->n_features);
        for (size_t i = 0; i < h->n_features; i++)
            put_text(&e, h->features[i]);
        cbor_put_uint(&e, h->max_frame_size);
        break;
    }
    case PROTO_TAG_HELLO_ACK:
        cbor_put_uint(&e, m->u.hello_ack.protocol_version);
        cbor_put_uint(&e, m->u.hello_ack.max_frame_size);
        cbor_put_uint(&e, m->u.hello_ack.gateway_time_ms);
        cbor_put_uint(&e, m->u.hello_ack.heartbeat_interval_ms);
        break;
    case PROTO_TAG_ENROLL_REQUEST:
        put_blob(&e, m->u.enroll_request.csr);
        put_text(&e, m->u.enroll_request.board);
        put_blob(&e, m->u.enroll_request.token);
        break;
    case PROTO_TAG_ENROLL_RESULT:
        cbor_put_uint(&e, m->u.enroll_result.status);
        put_text(&e, m->u.enroll_result.device_name);
        put_blob(&e, m->u.enroll_result.device_uuid);
        put_blob(&e, m->u.enroll_result.certificate);
        put_text(&e, m->u.enroll_result.reason);
        break;
    case PROTO_TAG_HEARTBEAT: {
        const proto_heartbeat *h = &m->u.heartbeat;
        cbor_put_uint(&e, h->uptime_ms);
        cbor_put_uint(&e, h->free_memory);
        cbor_put_array(&e, h->n_apps);
        for (size_t i = 0; i < h->n_apps; i++) {
            cbor_put_array(&e, 2);
            cbor_put_uint(&e, h->apps[i].app_id);
            cbor_put_uint(&e, h->apps[i].state);
        }
        break;
    }
    case PROTO_TAG_HEARTBEAT_ACK:
        cbor_put_uint(&e, m->u.heartbeat_ack.gateway_time_ms);
        break;
    case PROTO_TAG_ERROR:
        cbor_put_uint(&e, m->u.error.code);
        put_text(&e, m->u.error.text);
        break;
    case PROTO_TAG_DEPLOY_BEGIN: {
        const proto_deploy_begin *b = &m->u.deploy_begin;
        cbor_put_uint(&e, b->app_id);
        put_text(&e, b->name);
        cbor_put_uint(&e, b->size);
        put_blob(&e, b->sha256);
        put_blob(&e, b->config);
        cbor_put_uint(&e, b->mem_pages);
        cbor_put_uint(&e, b->time_budget_ms);
        cbor_put_uint(&e, b->restart);
        break;
    }
    case PROTO_TAG_DEPLOY_CHUNK:
        cbor_put_uint(&e, m->u.deploy_chunk.app_id);
        cbor_put_uint(&e, m->u.deploy_chunk.offset);
        put_blob(&e, m->u.deploy_chunk.data);
        break;
    case PROTO_TAG_DEPLOY_COMMIT:
    case PROTO_TAG_APP_START:
        cbor_put_uint(&e, m->u.app_start.app_id);
        break;
    case PROTO_TAG_DEPLOY_RESULT:
        cbor_put_uint(&e, m->u.deploy_result.app_id);
        cbor_put_uint(&e, m->u.deploy_result.code);
        cbor_put_uint(&e, m->u.deploy_result.next_offset);
        put_text(&e, m->u.deploy_result.text);
        break;
    case PROTO_TAG_APP_STOP:
        cbor_put_uint(&e, m->u.app_stop.app_id);
        cbor_put_bool(&e, m->u.app_stop.remove);
        break;
    case PROTO_TAG_APP_STATUS: {
        const proto_app_status *st = &m->u.app_status;
        cbor_put_uint(&e, st->app_id);
        cbor_put_uint(&e, st->state);
        put_text(&e, st->error);
        cbor_put_uint(&e, st->restarts);
        cbor_put_array(&e, 4);
        cbor_put_uint(&e, st->metrics.calls);
        cbor_put_uint(&e, st->metrics.traps);
        cbor_put_uint(&e, st->metrics.mem_pages);
        cbor_put_uint(&e, st->metrics.max_call_ms);
        break;
    }
    case PROTO_TAG_APP_LOG:
        cbor_put_uint(&e, m->u.app_log.app_id);
        cbor_put_uint(&e, m->u.app_log.level);
        cbor_put_uint(&e, m->u.app_log.uptime_ms);
        put_text(&e, m->u.app_log.text);
        break;
    case PROTO_TAG_PUBLISH:
    case PROTO_TAG_MESSAGE:
        cbor_put_uint(&e, m->u.publish.app_id);
        put_text(&e, m->u.publish.topic);
        put_blob(&e, m->u.publish.payload);
        break;
    default:
        return PROTO_ERR_UNKNOWN_MESSAGE;
    }
    if (e.err != CBOR_OK)
        return PROTO_ERR_INTERNAL;
    if (e.len > max_frame)
        return PROTO_ERR_FRAME_TOO_LARGE;
    uint32_t n = (uint32_t)e.len;
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    *frame_len = PROTO_HEADER_SIZE + e.len;
    return PROTO_OK;
}

proto_error proto_encode_error(uint32_t message_id, proto_error code, const char *text, uint8_t *buf, size_t cap,
                               size_t *frame_len)
{
    proto_msg m;
    size_t n = text ? strlen(text) : 0;
    if (n > PROTO_ERROR_TEXT_MAX)
        n = PROTO_ERROR_TEXT_MAX;
    /* Do not cut a UTF-8 sequence in half: drop continuation bytes at the cut. */
    while (n > 0 && n < strlen(text) && ((uint8_t)text[n] & 0xC0) == 0x80)
        n--;
    memset(&m, 0, sizeof m);
    m.message_id = message_id;
    m.tag = PROTO_TAG_ERROR;
    m.u.error.code = (uint32_t)code;
    m.u.error.text.ptr = text;
    m.u.error.text.len = n;
    return proto_encode(&m, PROTO_INITIAL_MAX_FRAME, buf, cap, frame_len);
}

/* ---- stream reader ---------------------------------------------------------------------- */

void proto_reader_init(proto_reader *r, uint8_t *buf, size_t cap, uint32_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->cap = buf ? cap : 0;
    proto_reader_set_max(r, max_frame);
}

void proto_reader_set_max(proto_reader *r, uint32_t max_frame)
{
    r->max_frame = (size_t)max_frame > r->cap ? (uint32_t)r->cap : max_frame;
}

proto_read_status proto_reader_feed(proto_reader *r, const uint8_t *data, size_t n, size_t *consumed)
{
    size_t used = 0;
    if (r->ready) { /* the previous frame has been handed out: start the next one */
        r->ready = false;
        r->hdr_len = 0;
        r->have = 0;
    }
    *consumed = 0;
    if (r->err != PROTO_OK)
        return PROTO_READ_ERROR;
    while (r->hdr_len < PROTO_HEADER_SIZE) {
        if (used == n) {
            *consumed = used;
            return PROTO_READ_MORE;
        }
        r->hdr[r->hdr_len++] = data[used++];
        if (r->hdr_len == PROTO_HEADER_SIZE) {
            r->err = proto_frame_length(r->hdr, r->max_frame, &r->frame_len);
            if (r->err != PROTO_OK) {
                *consumed = used;
                return PROTO_READ_ERROR;
            }
        }
    }
    size_t take = r->frame_len - r->have;
    if (take > n - used)
        take = n - used;
    if (take > 0)
        memcpy(r->buf + r->have, data + used, take);
    r->have += take;
    used += take;
    *consumed = used;
    if (r->have < r->frame_len)
        return PROTO_READ_MORE;
    r->ready = true;
    return PROTO_READ_FRAME;
}
