/*
 * Small strict CBOR (RFC 8949) encoder and decoder for the device link (docs/protocol.md).
 *
 * No allocation, no recursion: the encoder writes into a caller buffer and remembers the first
 * error (sticky), so a message is built with plain calls and checked once at the end. The decoder
 * is a cursor over a caller buffer; it also has a sticky error, so a parser can read all fields
 * and check once. Only the protocol's profile is accepted: integers, byte and UTF-8 text strings,
 * arrays, maps with integer/text keys, false/true/null, definite lengths, bounded nesting.
 * The error codes and the order of checks match gateway/protocol/cbor.py.
 */
#ifndef WB_CBOR_H
#define WB_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest container nesting cbor_skip()/cbor_check_item() can track (their max_depth is capped). */
#define CBOR_DEPTH_LIMIT 16

typedef enum {
    CBOR_OK = 0,
    CBOR_ERR_OVERFLOW,    /* encoder: output buffer too small */
    CBOR_ERR_MALFORMED,   /* truncated, reserved additional info 28-30, bad UTF-8, count > data */
    CBOR_ERR_INDEFINITE,  /* indefinite-length string, array or map */
    CBOR_ERR_TRAILING,    /* bytes after the single item */
    CBOR_ERR_TOO_DEEP,    /* nesting deeper than the limit */
    CBOR_ERR_UNSUPPORTED, /* well-formed but outside the profile: tag, float, simple, odd map key */
    CBOR_ERR_TYPE,        /* decoder: the next item is not of the requested type */
    CBOR_ERR_RANGE,       /* decoder: integer does not fit the requested C type */
} cbor_err;

typedef enum {
    CBOR_TYPE_INVALID = 0, /* end of buffer, sticky error, or an item outside the profile */
    CBOR_TYPE_UINT,
    CBOR_TYPE_NINT,
    CBOR_TYPE_BYTES,
    CBOR_TYPE_TEXT,
    CBOR_TYPE_ARRAY,
    CBOR_TYPE_MAP,
    CBOR_TYPE_BOOL,
    CBOR_TYPE_NULL,
} cbor_type;

/* ---- encoder ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len; /* bytes written so far (never exceeds cap) */
    cbor_err err;
} cbor_enc;

void cbor_enc_init(cbor_enc *e, uint8_t *buf, size_t cap);
void cbor_put_uint(cbor_enc *e, uint64_t v);
void cbor_put_int(cbor_enc *e, int64_t v);
/* Encodes the negative integer -1 - n (covers the full major type 1 range down to -2^64). */
void cbor_put_negative(cbor_enc *e, uint64_t n);
void cbor_put_bytes(cbor_enc *e, const uint8_t *p, size_t n);
/* Text is written as given; the caller supplies valid UTF-8. */
void cbor_put_text(cbor_enc *e, const char *p, size_t n);
void cbor_put_cstr(cbor_enc *e, const char *s);
void cbor_put_array(cbor_enc *e, size_t count);
void cbor_put_map(cbor_enc *e, size_t pairs);
void cbor_put_bool(cbor_enc *e, bool v);
void cbor_put_null(cbor_enc *e);

/* ---- decoder ---------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    cbor_err err;
} cbor_dec;

void cbor_dec_init(cbor_dec *d, const uint8_t *buf, size_t len);
size_t cbor_dec_remaining(const cbor_dec *d);
/* Type of the next item without consuming it; CBOR_TYPE_INVALID if none or not in the profile. */
cbor_type cbor_peek(const cbor_dec *d);

/* Each reader consumes one item on success. On failure it records the error (first one sticks),
 * leaves the cursor where it was and returns that error; once an error is set every call fails. */
cbor_err cbor_read_uint(cbor_dec *d, uint64_t *v);
cbor_err cbor_read_u32(cbor_dec *d, uint32_t *v);
cbor_err cbor_read_int(cbor_dec *d, int64_t *v);
/* Negative integer of any size: the item's value is -1 - *n. */
cbor_err cbor_read_negative(cbor_dec *d, uint64_t *n);
cbor_err cbor_read_bytes(cbor_dec *d, const uint8_t **p, size_t *n);
cbor_err cbor_read_text(cbor_dec *d, const char **p, size_t *n); /* validates UTF-8 */
cbor_err cbor_read_array(cbor_dec *d, size_t *count);
cbor_err cbor_read_map(cbor_dec *d, size_t *pairs);
cbor_err cbor_read_bool(cbor_dec *d, bool *v);
cbor_err cbor_read_null(cbor_dec *d);
/* Skip one complete item of any profile type, checking it on the way; iterative, nesting inside
 * the item limited to max_depth levels (capped at CBOR_DEPTH_LIMIT). */
cbor_err cbor_skip(cbor_dec *d, unsigned max_depth);

/* Check that buf holds exactly one well-formed profile item, nested at most max_depth deep,
 * with nothing after it. Returns the first problem in byte order, CBOR_ERR_TRAILING last. */
cbor_err cbor_check_item(const uint8_t *buf, size_t len, unsigned max_depth);

/* True if p[0..n) is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
bool cbor_utf8_valid(const uint8_t *p, size_t n);

#endif
