/*
 * Host unit tests for cbor.c / proto.c behaviour that is not visible through the hex harness:
 * sticky errors, cursor positions, UTF-8 edge cases, the stream reader, encode-side limits.
 * Prints "ok <checks>" and exits 0, or lists failures and exits 1. Run by tests/test_cbor_c.py.
 */
#include <stdio.h>
#include <string.h>

#include "cbor.h"
#include "proto.h"

static int checks, failures;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                                     \
        }                                                                                                              \
    } while (0)

#define UTF8(s) cbor_utf8_valid((const uint8_t *)(s), sizeof(s) - 1)

static void test_encoder_sticky(void)
{
    uint8_t buf[3];
    cbor_enc e;
    cbor_enc_init(&e, buf, sizeof buf);
    cbor_put_uint(&e, 1000);
    CHECK(e.err == CBOR_OK && e.len == 3 && buf[0] == 0x19 && buf[1] == 0x03 && buf[2] == 0xe8);
    cbor_put_uint(&e, 1);
    CHECK(e.err == CBOR_ERR_OVERFLOW && e.len == 3);
    cbor_put_null(&e);
    CHECK(e.err == CBOR_ERR_OVERFLOW && e.len == 3);

    uint8_t big[16];
    cbor_enc_init(&e, big, sizeof big);
    cbor_put_int(&e, INT64_MIN);
    CHECK(e.len == 9 && big[0] == 0x3b && big[1] == 0x7f && big[8] == 0xff);
    cbor_enc_init(&e, big, sizeof big);
    cbor_put_bytes(&e, NULL, 0);
    cbor_put_text(&e, NULL, 0);
    CHECK(e.err == CBOR_OK && e.len == 2 && big[0] == 0x40 && big[1] == 0x60);
    cbor_enc_init(&e, NULL, 100); /* no buffer: everything overflows, nothing is written */
    cbor_put_uint(&e, 0);
    CHECK(e.err == CBOR_ERR_OVERFLOW && e.len == 0);
}

static void test_decoder_sticky(void)
{
    static const uint8_t in[] = {0x63, 'a', 'b', 'c', 0x1b, 0, 0, 0, 1, 0, 0, 0, 0};
    cbor_dec d;
    uint64_t u = 99;
    uint32_t u32 = 99;
    const char *t;
    size_t n;

    cbor_dec_init(&d, in, sizeof in);
    CHECK(cbor_peek(&d) == CBOR_TYPE_TEXT);
    CHECK(cbor_read_uint(&d, &u) == CBOR_ERR_TYPE && u == 99 && d.p == in);
    CHECK(cbor_read_text(&d, &t, &n) == CBOR_ERR_TYPE); /* sticky */
    CHECK(cbor_peek(&d) == CBOR_TYPE_INVALID);

    cbor_dec_init(&d, in, sizeof in);
    CHECK(cbor_read_text(&d, &t, &n) == CBOR_OK && n == 3 && memcmp(t, "abc", 3) == 0 && t == (const char *)in + 1);
    CHECK(cbor_read_u32(&d, &u32) == CBOR_ERR_RANGE && u32 == 99 && d.p == in + 4);

    cbor_dec_init(&d, in + 4, sizeof in - 4);
    CHECK(cbor_read_uint(&d, &u) == CBOR_OK && u == 4294967296ull && cbor_dec_remaining(&d) == 0);
    CHECK(cbor_read_uint(&d, &u) == CBOR_ERR_MALFORMED); /* past the end */

    static const uint8_t ints[] = {0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0};
    int64_t i64 = 0;
    cbor_dec_init(&d, ints, sizeof ints);
    CHECK(cbor_read_int(&d, &i64) == CBOR_OK && i64 == INT64_MIN);
    CHECK(cbor_read_int(&d, &i64) == CBOR_ERR_RANGE);

    static const uint8_t arr[] = {0x85, 0x01}; /* claims 5 items, has 1 byte */
    cbor_dec_init(&d, arr, sizeof arr);
    CHECK(cbor_read_array(&d, &n) == CBOR_ERR_MALFORMED);
    static const uint8_t map[] = {0xa1, 0x01}; /* 1 pair needs 2 bytes */
    cbor_dec_init(&d, map, sizeof map);
    CHECK(cbor_read_map(&d, &n) == CBOR_ERR_MALFORMED);
}

static void test_skip_and_check(void)
{
    uint8_t deep[32];
    for (int depth = 1; depth <= 10; depth++) {
        memset(deep, 0x81, (size_t)depth);
        deep[depth] = 0x00;
        cbor_err e = cbor_check_item(deep, (size_t)depth + 1, 8);
        CHECK(depth <= 8 ? e == CBOR_OK : e == CBOR_ERR_TOO_DEEP);
    }
    static const uint8_t bad_key[] = {0xa1, 0x80, 0x00};
    CHECK(cbor_check_item(bad_key, sizeof bad_key, 8) == CBOR_ERR_UNSUPPORTED);
    static const uint8_t bad_key2[] = {0xa2, 0x01, 0x02, 0x41, 0x00, 0x00}; /* second key is bytes */
    CHECK(cbor_check_item(bad_key2, sizeof bad_key2, 8) == CBOR_ERR_UNSUPPORTED);
    static const uint8_t ok_map[] = {0xa2, 0x20, 0x80, 0x61, 'k', 0xa1, 0x01, 0xf6};
    CHECK(cbor_check_item(ok_map, sizeof ok_map, 8) == CBOR_OK);
    /* skip stops exactly after one item */
    static const uint8_t two[] = {0x82, 0x01, 0x82, 0x02, 0x03, 0x04};
    cbor_dec d;
    cbor_dec_init(&d, two, sizeof two);
    CHECK(cbor_skip(&d, 8) == CBOR_OK && cbor_dec_remaining(&d) == 1);
    CHECK(cbor_check_item(two, sizeof two, 8) == CBOR_ERR_TRAILING);
    CHECK(cbor_check_item(two, 0, 8) == CBOR_ERR_MALFORMED);
}

static void test_utf8(void)
{
    CHECK(UTF8("plain ascii"));
    CHECK(UTF8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e"));
    CHECK(UTF8("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
    CHECK(UTF8("\xed\x9f\xbf"));     /* U+D7FF */
    CHECK(!UTF8("\xc0\x80"));        /* overlong NUL */
    CHECK(!UTF8("\xc1\xbf"));
    CHECK(!UTF8("\xe0\x80\x80"));
    CHECK(!UTF8("\xed\xa0\x80")); /* surrogate */
    CHECK(!UTF8("\xf4\x90\x80\x80"));
    CHECK(!UTF8("\xf0\x80\x80\x80"));
    CHECK(!UTF8("\xf8\x88\x80\x80\x80"));
    CHECK(!UTF8("\x80"));
    CHECK(!UTF8("\xe2\x82"));
    CHECK(!UTF8("\xe2\x28\xa1"));
    CHECK(!UTF8("\xff"));
}

static size_t build_heartbeat(uint8_t *buf, size_t cap, uint32_t id)
{
    proto_msg m;
    size_t len = 0;
    memset(&m, 0, sizeof m);
    m.message_id = id;
    m.tag = PROTO_TAG_HEARTBEAT;
    m.u.heartbeat.uptime_ms = 1234;
    m.u.heartbeat.free_memory = 5678;
    m.u.heartbeat.n_apps = 1;
    m.u.heartbeat.apps[0] = (proto_app_state){42, PROTO_APP_RUNNING};
    CHECK(proto_encode(&m, PROTO_INITIAL_MAX_FRAME, buf, cap, &len) == PROTO_OK);
    return len;
}

static void test_reader(void)
{
    uint8_t stream[128], body[PROTO_MIN_FRAME];
    size_t a = build_heartbeat(stream, sizeof stream, 1);
    size_t b = build_heartbeat(stream + a, sizeof stream - a, 2);
    proto_reader r;
    proto_msg m;
    size_t used;

    proto_reader_init(&r, body, sizeof body, 1u << 20);
    CHECK(r.max_frame == sizeof body); /* clamped to the buffer */
    CHECK(proto_reader_feed(&r, stream, a + b, &used) == PROTO_READ_FRAME && used == a);
    CHECK(r.frame_len == a - 4 && proto_decode(r.buf, r.frame_len, &m) == PROTO_OK && m.message_id == 1);
    CHECK(proto_reader_feed(&r, stream + used, 3, &used) == PROTO_READ_MORE && used == 3);
    CHECK(proto_reader_feed(&r, stream + a + 3, b - 3, &used) == PROTO_READ_FRAME && used == b - 3);
    CHECK(proto_decode(r.buf, r.frame_len, &m) == PROTO_OK && m.message_id == 2 && m.u.heartbeat.apps[0].app_id == 42);

    /* Oversize length is refused on the 4th header byte, before any body byte is stored. */
    static const uint8_t huge[] = {0x00, 0x00, 0x04, 0x01, 0xaa, 0xbb};
    proto_reader_init(&r, body, sizeof body, PROTO_INITIAL_MAX_FRAME);
    CHECK(proto_reader_feed(&r, huge, sizeof huge, &used) == PROTO_READ_ERROR && used == 4);
    CHECK(r.err == PROTO_ERR_FRAME_TOO_LARGE);
    CHECK(proto_reader_feed(&r, huge + 4, 2, &used) == PROTO_READ_ERROR && used == 0); /* sticky */
    static const uint8_t exact[] = {0x00, 0x00, 0x04, 0x00};
    proto_reader_init(&r, body, sizeof body, PROTO_INITIAL_MAX_FRAME);
    CHECK(proto_reader_feed(&r, exact, sizeof exact, &used) == PROTO_READ_MORE && used == 4);
    /* An empty frame is handed out (and then fails to decode as MALFORMED_CBOR). */
    static const uint8_t empty[] = {0, 0, 0, 0};
    proto_reader_init(&r, body, sizeof body, PROTO_INITIAL_MAX_FRAME);
    CHECK(proto_reader_feed(&r, empty, sizeof empty, &used) == PROTO_READ_FRAME && r.frame_len == 0);
    CHECK(proto_decode(r.buf, 0, &m) == PROTO_ERR_MALFORMED_CBOR);
}

static void test_encode_limits(void)
{
    uint8_t buf[256];
    size_t len = 0;
    proto_msg m;
    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_ENROLL_REQUEST;
    m.u.enroll_request.board = (proto_text){"b", 1};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_ERR_BAD_FIELDS); /* empty CSR */
    static const uint8_t key[] = {1, 2, 3};
    static const uint8_t tok[33] = {0};
    m.u.enroll_request.csr = (proto_blob){key, sizeof key};
    m.u.enroll_request.token = (proto_blob){tok, 33};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_ERR_BAD_FIELDS); /* token > 32 */
    m.u.enroll_request.token = (proto_blob){NULL, 0};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_OK && len == 4 + 12);
    CHECK(proto_encode(&m, 10, buf, sizeof buf, &len) == PROTO_ERR_FRAME_TOO_LARGE);
    CHECK(proto_encode(&m, 1024, buf, 10, &len) == PROTO_ERR_INTERNAL);
    m.u.enroll_request.board = (proto_text){"\xff", 1};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_ERR_BAD_FIELDS); /* not UTF-8 */
    m.tag = 99;
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_ERR_UNKNOWN_MESSAGE);

    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_ENROLL_RESULT;
    m.u.enroll_result.status = PROTO_ENROLL_ACCEPTED;
    m.u.enroll_result.device_name = (proto_text){"dev-1", 5};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* accepted needs a 16-byte uuid */
    static const uint8_t uuid[16] = {0x12};
    m.u.enroll_result.device_uuid = (proto_blob){uuid, 16};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* accepted needs a certificate */
    static const uint8_t cert[1025] = {0x30};
    m.u.enroll_result.certificate = (proto_blob){cert, 1025};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* certificate > 1024 */
    m.u.enroll_result.certificate = (proto_blob){cert, 1024};
    CHECK(proto_validate(&m) == PROTO_OK);
    m.u.enroll_result.status = PROTO_ENROLL_PENDING;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* pending carries no name/uuid/certificate */
    m.u.enroll_result.device_name.len = 0;
    m.u.enroll_result.device_uuid.len = 0;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.enroll_result.certificate.len = 0;
    m.u.enroll_result.reason = (proto_text){"waiting for approval", 20};
    CHECK(proto_validate(&m) == PROTO_OK);
    m.u.enroll_result.status = 3;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.enroll_result.status = PROTO_ENROLL_REJECTED;
    m.u.enroll_result.reason = (proto_text){"\xff", 1};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* reason must be UTF-8 */

    /* Error texts are cut to the limit on a UTF-8 boundary. */
    char text[300];
    memset(text, 'a', sizeof text);
    text[127] = (char)0xc3; /* a 2-byte sequence straddling byte 128 */
    text[128] = (char)0xa9;
    text[299] = 0;
    CHECK(proto_encode_error(5, PROTO_ERR_BAD_FIELDS, text, buf, sizeof buf, &len) == PROTO_OK);
    CHECK(proto_decode(buf + 4, len - 4, &m) == PROTO_OK && m.tag == PROTO_TAG_ERROR && m.message_id == 5);
    CHECK(m.u.error.code == PROTO_ERR_BAD_FIELDS && m.u.error.text.len == 127);
    CHECK(proto_encode_error(0, PROTO_ERR_INTERNAL, NULL, buf, sizeof buf, &len) == PROTO_OK && len == 4 + 8);
    CHECK(strcmp(proto_error_name(PROTO_ERR_TOO_DEEP), "TOO_DEEP") == 0);
    CHECK(strcmp(proto_error_name(PROTO_ERR_UNKNOWN_DEVICE), "UNKNOWN_DEVICE") == 0);
}

static void test_roundtrip_all(void)
{
    static const uint8_t uuid[16] = {0xde, 0xad, 0xbe, 0xef};
    proto_msg in[7], out;
    uint8_t buf[512];
    size_t len;
    memset(in, 0, sizeof in);
    for (int i = 0; i < 7; i++) {
        in[i].tag = (uint32_t)(i + 1);
        in[i].message_id = 0xFFFFFFFFu - (uint32_t)i;
    }
    in[0].u.hello = (proto_hello){1, {"b", 1}, {"v", 1}, 1, 2, 1, {{"f", 1}}, PROTO_MIN_FRAME};
    in[1].u.hello_ack = (proto_hello_ack){1, 65536, 1700000000000ull, 30000};
    in[2].u.enroll_request = (proto_enroll_request){{uuid, 16}, {"mps2-an505", 10}, {uuid, 4}};
    in[3].u.enroll_result = (proto_enroll_result){PROTO_ENROLL_ACCEPTED, {"dev", 3}, {uuid, 16}, {uuid, 8}, {"", 0}};
    in[4].u.heartbeat.uptime_ms = UINT64_MAX;
    in[5].u.heartbeat_ack.gateway_time_ms = 0;
    in[6].u.error = (proto_error_msg){0xFFFF, {"", 0}};
    for (int i = 0; i < 7; i++) {
        CHECK(proto_encode(&in[i], PROTO_INITIAL_MAX_FRAME, buf, sizeof buf, &len) == PROTO_OK);
        CHECK(proto_decode(buf + 4, len - 4, &out) == PROTO_OK);
        CHECK(out.tag == in[i].tag && out.message_id == in[i].message_id);
    }
    CHECK(out.u.error.code == 0xFFFF && out.u.error.text.len == 0);
}

static void test_app_messages(void)
{
    static const uint8_t sha[32] = {0xaa};
    static const uint8_t big[PROTO_CHUNK_MAX + 1] = {0};
    uint8_t buf[2048];
    size_t len = 0;
    proto_msg m, out;

    memset(&m, 0, sizeof m);
    m.message_id = 11;
    m.tag = PROTO_TAG_DEPLOY_BEGIN;
    m.u.deploy_begin = (proto_deploy_begin){1, {"hello", 5}, 300, {sha, 32}, {NULL, 0}, 1, 1000, PROTO_RESTART_NEVER};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_OK);
    CHECK(proto_decode(buf + 4, len - 4, &out) == PROTO_OK && out.tag == PROTO_TAG_DEPLOY_BEGIN);
    CHECK(out.u.deploy_begin.size == 300 && out.u.deploy_begin.sha256.len == 32 && out.u.deploy_begin.config.len == 0);
    /* sha256 is followed by config (1 byte), mem_pages (1), time_budget_ms (3), restart (1): it points into the frame */
    CHECK(out.u.deploy_begin.sha256.ptr == buf + len - 6 - 32);
    m.u.deploy_begin.app_id = 0;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* app ids start at 1 */
    m.u.deploy_begin.app_id = 1;
    m.u.deploy_begin.time_budget_ms = 0;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_begin.time_budget_ms = PROTO_TIME_BUDGET_MAX_MS + 1;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_begin.time_budget_ms = PROTO_TIME_BUDGET_MAX_MS;
    m.u.deploy_begin.restart = 3;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_begin.restart = PROTO_RESTART_ALWAYS;
    m.u.deploy_begin.sha256.len = 31;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_begin.sha256.len = 32;
    m.u.deploy_begin.config = (proto_blob){big, PROTO_APP_CONFIG_MAX + 1};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_begin.config.len = PROTO_APP_CONFIG_MAX;
    m.u.deploy_begin.mem_pages = PROTO_MEM_PAGES_MAX;
    CHECK(proto_validate(&m) == PROTO_OK);

    /* The largest chunk fits a 1560-byte frame body, not the initial 1024. */
    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_DEPLOY_CHUNK;
    m.message_id = 0xFFFFFFFFu;
    m.u.deploy_chunk = (proto_deploy_chunk){0xFFFFFFFFu, 0xFFFFFFFFu, {big, PROTO_CHUNK_MAX}};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_ERR_FRAME_TOO_LARGE);
    CHECK(proto_encode(&m, PROTO_CHUNK_MAX + 22, buf, sizeof buf, &len) == PROTO_OK);
    CHECK(len == 4 + PROTO_CHUNK_MAX + 22);
    m.u.deploy_chunk.data.len = PROTO_CHUNK_MAX + 1;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.deploy_chunk.data.len = 0;
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);

    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_APP_STOP;
    m.u.app_stop = (proto_app_stop){9, true};
    CHECK(proto_encode(&m, 1024, buf, sizeof buf, &len) == PROTO_OK);
    CHECK(proto_decode(buf + 4, len - 4, &out) == PROTO_OK && out.u.app_stop.remove && out.u.app_stop.app_id == 9);

    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_APP_LOG;
    m.u.app_log = (proto_app_log){1, 4, 0, {"", 0}};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* level 0..3 */
    m.u.app_log.level = PROTO_LOG_ERROR;
    CHECK(proto_validate(&m) == PROTO_OK);

    memset(&m, 0, sizeof m);
    m.tag = PROTO_TAG_MESSAGE;
    m.u.message = (proto_app_topic){1, {"", 0}, {NULL, 0}};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS); /* topic 1..64 */
    m.u.message.topic = (proto_text){"t", 1};
    m.u.message.payload = (proto_blob){big, PROTO_PAYLOAD_MAX + 1};
    CHECK(proto_validate(&m) == PROTO_ERR_BAD_FIELDS);
    m.u.message.payload.len = PROTO_PAYLOAD_MAX;
    CHECK(proto_encode(&m, 2048, buf, sizeof buf, &len) == PROTO_OK);
    CHECK(proto_decode(buf + 4, len - 4, &out) == PROTO_OK && out.tag == PROTO_TAG_MESSAGE);
    CHECK(out.u.message.payload.len == PROTO_PAYLOAD_MAX && out.u.message.payload.ptr == buf + len - PROTO_PAYLOAD_MAX);

    CHECK(strcmp(proto_app_error_name(PROTO_APP_ERR_HASH_MISMATCH), "HASH_MISMATCH") == 0);
    CHECK(strcmp(proto_app_error_name(PROTO_APP_ERR_BUSY), "BUSY") == 0);
}

int main(void)
{
    test_encoder_sticky();
    test_decoder_sticky();
    test_skip_and_check();
    test_utf8();
    test_reader();
    test_encode_limits();
    test_roundtrip_all();
    test_app_messages();
    if (failures) {
        printf("%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("ok %d\n", checks);
    return 0;
}
