/*
 * Device <-> gateway wire protocol, version 1 (docs/protocol.md is normative).
 *
 * Frame = 4-byte big-endian body length + one CBOR item; envelope [version, message_id, message];
 * message = [tag, fields...]. No I/O here: callers hand in buffers. Decoded strings and byte
 * strings point into the frame buffer (no copies), so they live as long as that buffer.
 */
#ifndef WB_PROTO_H
#define WB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbor.h"

#define PROTO_VERSION 1
#define PROTO_HEADER_SIZE 4
#define PROTO_INITIAL_MAX_FRAME 1024u /* body limit until hello_ack sets the agreed size */
#define PROTO_MIN_FRAME 1024u         /* smallest max_frame_size one may announce or agree */
#define PROTO_MAX_DEPTH 8             /* deepest nesting in a frame (envelope array = 1) */

/* Field limits (bytes for strings, entries for arrays). */
#define PROTO_BOARD_MAX 32
#define PROTO_FIRMWARE_VERSION_MAX 32
#define PROTO_FEATURES_MAX 16
#define PROTO_FEATURE_MAX 32
#define PROTO_CSR_MAX 600   /* DER PKCS#10 request */
#define PROTO_TOKEN_MAX 32  /* one-time enrollment token */
#define PROTO_CERT_MAX 1024 /* DER client certificate issued on enrollment */
#define PROTO_REASON_MAX 128
#define PROTO_DEVICE_NAME_MAX 63
#define PROTO_UUID_LEN 16
#define PROTO_APPS_MAX 16
#define PROTO_ERROR_TEXT_MAX 128
#define PROTO_HEARTBEAT_MIN_MS 1000u
#define PROTO_HEARTBEAT_MAX_MS 3600000u

/* App message limits (docs/protocol.md sections 7.8-7.17). */
#define PROTO_APP_NAME_MAX 32
#define PROTO_SHA256_LEN 32
#define PROTO_APP_CONFIG_MAX 512 /* encoded CBOR map text -> text, opaque to the codec */
#define PROTO_CHUNK_MAX 1536     /* deploy_chunk data; the gateway also keeps a frame within max_frame */
#define PROTO_APP_TEXT_MAX 128   /* deploy_result.text, app_status.error */
#define PROTO_LOG_TEXT_MAX 256
#define PROTO_TOPIC_MAX 64
#define PROTO_PAYLOAD_MAX 1024
#define PROTO_MEM_PAGES_MAX 65536u
#define PROTO_TIME_BUDGET_MAX_MS 60000u
#define PROTO_LOG_LEVEL_MAX 3

typedef enum {
    PROTO_TAG_HELLO = 1,          /* device -> gateway */
    PROTO_TAG_HELLO_ACK = 2,      /* gateway -> device */
    PROTO_TAG_ENROLL_REQUEST = 3, /* device -> gateway */
    PROTO_TAG_ENROLL_RESULT = 4,  /* gateway -> device */
    PROTO_TAG_HEARTBEAT = 5,      /* device -> gateway */
    PROTO_TAG_HEARTBEAT_ACK = 6,  /* gateway -> device */
    PROTO_TAG_ERROR = 7,          /* either way */
    /* 8..15 reserved (session): specified in a later version. */
    PROTO_TAG_DEPLOY_BEGIN = 16,  /* gateway -> device; reply deploy_result */
    PROTO_TAG_DEPLOY_CHUNK = 17,  /* gateway -> device; reply deploy_result */
    PROTO_TAG_DEPLOY_COMMIT = 18, /* gateway -> device; reply deploy_result */
    PROTO_TAG_DEPLOY_RESULT = 19, /* device -> gateway */
    PROTO_TAG_APP_START = 20,     /* gateway -> device; reply app_status */
    PROTO_TAG_APP_STOP = 21,      /* gateway -> device; reply app_status */
    PROTO_TAG_APP_STATUS = 22,    /* device -> gateway: reply, or unsolicited on every state change */
    PROTO_TAG_APP_LOG = 23,       /* device -> gateway */
    PROTO_TAG_PUBLISH = 24,       /* device -> gateway */
    PROTO_TAG_MESSAGE = 25,       /* gateway -> device */
    /* 26..47 reserved (apps): specified in a later version. */
} proto_tag;

typedef enum {
    PROTO_OK = 0,
    PROTO_ERR_FRAME_TOO_LARGE = 1,
    PROTO_ERR_MALFORMED_CBOR = 2,
    PROTO_ERR_INDEFINITE_LENGTH = 3,
    PROTO_ERR_TRAILING_BYTES = 4,
    PROTO_ERR_TOO_DEEP = 5,
    PROTO_ERR_UNSUPPORTED_ITEM = 6,
    PROTO_ERR_BAD_ENVELOPE = 16,
    PROTO_ERR_UNSUPPORTED_VERSION = 17,
    PROTO_ERR_UNKNOWN_MESSAGE = 18,
    PROTO_ERR_BAD_FIELDS = 19,
    PROTO_ERR_UNEXPECTED_MESSAGE = 20,
    PROTO_ERR_INTERNAL = 32,
    PROTO_ERR_UNKNOWN_DEVICE = 33, /* gateway: client certificate's key is not an enrolled device */
} proto_error;

typedef enum { PROTO_ENROLL_ACCEPTED = 0, PROTO_ENROLL_PENDING = 1, PROTO_ENROLL_REJECTED = 2 } proto_enroll_status;

typedef enum {
    PROTO_APP_UNKNOWN = 0,
    PROTO_APP_DEPLOYING = 1,
    PROTO_APP_STOPPED = 2,
    PROTO_APP_RUNNING = 3,
    PROTO_APP_FAILED = 4,
} proto_app_state_code;

/* deploy_result.code (and app_status.error wording): not protocol errors, the session goes on. */
typedef enum {
    PROTO_APP_ERR_OK = 0,
    PROTO_APP_ERR_TOO_LARGE = 1,     /* size > the device's max_app_size */
    PROTO_APP_ERR_NO_MEMORY = 2,     /* cannot hold the module or instantiate it */
    PROTO_APP_ERR_BAD_OFFSET = 3,    /* chunk offset != next_offset, or beyond size */
    PROTO_APP_ERR_HASH_MISMATCH = 4, /* commit: SHA-256 of the bytes != deploy_begin.sha256 */
    PROTO_APP_ERR_LOAD_FAILED = 5,   /* wasm3 parse/link error (text says which) */
    PROTO_APP_ERR_START_FAILED = 6,  /* app_start returned non-zero or trapped */
    PROTO_APP_ERR_UNKNOWN_APP = 7,   /* no such app_id (or no transfer in progress) */
    PROTO_APP_ERR_BUSY = 8,          /* too many apps, or another transfer in progress */
} proto_app_error;

typedef enum { PROTO_RESTART_NEVER = 0, PROTO_RESTART_ON_FAILURE = 1, PROTO_RESTART_ALWAYS = 2 } proto_restart;

typedef enum { PROTO_LOG_DEBUG = 0, PROTO_LOG_INFO = 1, PROTO_LOG_WARNING = 2, PROTO_LOG_ERROR = 3 } proto_log_level;

typedef struct {
    const char *ptr; /* UTF-8, not NUL-terminated */
    size_t len;
} proto_text;

typedef struct {
    const uint8_t *ptr;
    size_t len;
} proto_blob;

typedef struct {
    uint32_t protocol_version; /* highest version the device implements (>= 1) */
    proto_text board;
    proto_text firmware_version;
    uint32_t ram_free;     /* bytes */
    uint32_t max_app_size; /* bytes */
    size_t n_features;
    proto_text features[PROTO_FEATURES_MAX];
    uint32_t max_frame_size; /* largest body the device can receive, >= PROTO_MIN_FRAME */
} proto_hello;

typedef struct {
    uint32_t protocol_version; /* version chosen for the session */
    uint32_t max_frame_size;   /* agreed: min(device, gateway) */
    uint64_t gateway_time_ms;  /* Unix time, UTC, milliseconds */
    uint32_t heartbeat_interval_ms;
} proto_hello_ack;

typedef struct {
    proto_blob csr; /* DER PKCS#10 certificate request for the device key, 1..600 bytes */
    proto_text board;
    proto_blob token; /* one-time enrollment token, 0..32 bytes (empty: none) */
} proto_enroll_request;

typedef struct {
    uint32_t status;        /* proto_enroll_status */
    proto_text device_name; /* 1..63 bytes when accepted, else empty */
    proto_blob device_uuid; /* 16 bytes when accepted, else empty */
    proto_blob certificate; /* DER client certificate, 1..1024 bytes when accepted, else empty */
    proto_text reason;      /* 0..128 bytes, for logs only */
} proto_enroll_result;

typedef struct {
    uint32_t app_id;
    uint32_t state; /* proto_app_state_code; 0..255, unknown values allowed */
} proto_app_state;

typedef struct {
    uint64_t uptime_ms;
    uint32_t free_memory; /* bytes */
    size_t n_apps;
    proto_app_state apps[PROTO_APPS_MAX];
} proto_heartbeat;

typedef struct {
    uint64_t gateway_time_ms;
} proto_heartbeat_ack;

typedef struct {
    uint32_t code; /* proto_error, 1..65535 */
    proto_text text;
} proto_error_msg;

typedef struct {
    uint32_t app_id; /* >= 1, gateway-assigned, unique per device */
    proto_text name; /* 1..32 bytes */
    uint32_t size;   /* module bytes, >= 1 */
    proto_blob sha256; /* exactly 32 bytes */
    proto_blob config; /* 0..512 bytes: encoded CBOR map text -> text (parse it when config_get runs) */
    uint32_t mem_pages;      /* max linear memory pages the app may grow to, 0..65536 */
    uint32_t time_budget_ms; /* per handler call, 1..60000 */
    uint32_t restart;        /* proto_restart, 0..2 */
} proto_deploy_begin;

typedef struct {
    uint32_t app_id;
    uint32_t offset;
    proto_blob data; /* 1..1536 bytes */
} proto_deploy_chunk;

typedef struct {
    uint32_t app_id; /* >= 1 */
} proto_app_ref;     /* deploy_commit, app_start */

typedef struct {
    uint32_t app_id;
    uint32_t code;        /* proto_app_error */
    uint32_t next_offset; /* bytes the device holds contiguously from 0 */
    proto_text text;      /* 0..128 bytes */
} proto_deploy_result;

typedef struct {
    uint32_t app_id;
    bool remove; /* also free the module */
} proto_app_stop;

typedef struct {
    uint32_t calls;       /* handler calls so far (app_start included) */
    uint32_t traps;       /* traps and budget overruns so far */
    uint32_t mem_pages;   /* current linear memory pages */
    uint32_t max_call_ms; /* longest handler call */
} proto_app_metrics;

typedef struct {
    uint32_t app_id;
    uint32_t state;   /* proto_app_state_code, 0..255 */
    proto_text error; /* 0..128 bytes: why it failed (empty otherwise) */
    uint32_t restarts;
    proto_app_metrics metrics;
} proto_app_status;

typedef struct {
    uint32_t app_id;
    uint32_t level; /* proto_log_level, 0..3 */
    uint64_t uptime_ms;
    proto_text text; /* 0..256 bytes */
} proto_app_log;

typedef struct {
    uint32_t app_id;
    proto_text topic;   /* 1..64 bytes */
    proto_blob payload; /* 0..1024 bytes */
} proto_app_topic;      /* publish (device -> gateway) and message (gateway -> device) */

typedef struct {
    uint32_t message_id; /* a reply carries its request's id; 0 if unknown (see proto_decode) */
    uint32_t tag;        /* proto_tag: selects the union member */
    union {
        proto_hello hello;
        proto_hello_ack hello_ack;
        proto_enroll_request enroll_request;
        proto_enroll_result enroll_result;
        proto_heartbeat heartbeat;
        proto_heartbeat_ack heartbeat_ack;
        proto_error_msg error;
        proto_deploy_begin deploy_begin;
        proto_deploy_chunk deploy_chunk;
        proto_app_ref deploy_commit;
        proto_deploy_result deploy_result;
        proto_app_ref app_start;
        proto_app_stop app_stop;
        proto_app_status app_status;
        proto_app_log app_log;
        proto_app_topic publish;
        proto_app_topic message;
    } u;
} proto_msg;

/* Stable names of the error codes ("MALFORMED_CBOR", ...), for error texts and logs. */
const char *proto_error_name(proto_error code);

/* Stable names of the app result codes ("HASH_MISMATCH", ...). */
const char *proto_app_error_name(proto_app_error code);

/* Frame header: PROTO_ERR_FRAME_TOO_LARGE if the declared body length exceeds max_frame. */
proto_error proto_frame_length(const uint8_t hdr[PROTO_HEADER_SIZE], uint32_t max_frame, uint32_t *len);

/* Decode one frame body (header already removed). On error msg->message_id holds the envelope's
 * id if it could be read, else 0: reply with an error message carrying it, then close. */
proto_error proto_decode(const uint8_t *body, size_t len, proto_msg *msg);

/* Check msg against the field limits (also done by proto_encode and proto_decode). */
proto_error proto_validate(const proto_msg *msg);

/* Encode msg as a complete frame (header + body) into buf. Fails with BAD_FIELDS (limits),
 * FRAME_TOO_LARGE (body > max_frame) or INTERNAL (buf too small); *frame_len = header + body. */
proto_error proto_encode(const proto_msg *msg, uint32_t max_frame, uint8_t *buf, size_t cap, size_t *frame_len);

/* Convenience: an error frame; text is a NUL-terminated string, cut to PROTO_ERROR_TEXT_MAX. */
proto_error proto_encode_error(uint32_t message_id, proto_error code, const char *text, uint8_t *buf, size_t cap,
                               size_t *frame_len);

/* Incremental frame reader for a byte stream (UART/TLS): the body lands in a caller buffer. */
typedef enum { PROTO_READ_MORE = 0, PROTO_READ_FRAME = 1, PROTO_READ_ERROR = 2 } proto_read_status;

typedef struct {
    uint8_t *buf;
    size_t cap;
    uint32_t max_frame;
    uint8_t hdr[PROTO_HEADER_SIZE];
    size_t hdr_len;
    uint32_t frame_len; /* body length of the current frame */
    size_t have;        /* body bytes received */
    bool ready;         /* a complete body sits in buf */
    proto_error err;    /* sticky */
} proto_reader;

/* max_frame is clamped to cap (the device announces what its buffer holds). */
void proto_reader_init(proto_reader *r, uint8_t *buf, size_t cap, uint32_t max_frame);
void proto_reader_set_max(proto_reader *r, uint32_t max_frame);
/* Consume bytes up to the end of one frame. *consumed says how many were used. On FRAME the body
 * is buf[0..frame_len) until the next feed; on ERROR, r->err says why (FRAME_TOO_LARGE) and
 * the reader stays failed. The length is checked as soon as the header is complete. */
proto_read_status proto_reader_feed(proto_reader *r, const uint8_t *data, size_t n, size_t *consumed);

#endif
