/*
 * Strict CBOR profile encoder/decoder; see cbor.h and docs/protocol.md ("CBOR profile").
 * Check order per item (mirrored in gateway/protocol/cbor.py so both sides agree on codes):
 *   initial byte present -> additional info 28..30 -> 31 (indefinite / malformed) ->
 *   argument bytes present -> map key type -> per-major checks.
 */
#include "cbor.h"

#include <string.h>

/* ---- encoder ---------------------------------------------------------------------------- */

void cbor_enc_init(cbor_enc *e, uint8_t *buf, size_t cap)
{
    e->buf = buf;
    e->cap = buf ? cap : 0;
    e->len = 0;
    e->err = CBOR_OK;
}

static void put_raw(cbor_enc *e, const void *p, size_t n)
{
    if (e->err != CBOR_OK || n == 0)
        return;
    if (n > e->cap - e->len) {
        e->err = CBOR_ERR_OVERFLOW;
        return;
    }
    memcpy(e->buf + e->len, p, n);
    e->len += n;
}

/* Shortest ("preferred") head for major type `major` with argument v. */
static void put_head(cbor_enc *e, uint8_t major, uint64_t v)
{
    uint8_t h[9];
    size_t n;
    uint8_t ib = (uint8_t)(major << 5);
    if (v < 24) {
        h[0] = (uint8_t)(ib | v);
        n = 1;
    } else if (v <= 0xFFu) {
        h[0] = ib | 24;
        n = 2;
    } else if (v <= 0xFFFFu) {
        h[0] = ib | 25;
        n = 3;
    } else if (v <= 0xFFFFFFFFu) {
        h[0] = ib | 26;
        n = 5;
    } else {
        h[0] = ib | 27;
        n = 9;
    }
    for (size_t i = 1; i < n; i++)
        h[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put_raw(e, h, n);
}

void cbor_put_uint(cbor_enc *e, uint64_t v) { put_head(e, 0, v); }
void cbor_put_negative(cbor_enc *e, uint64_t n) { put_head(e, 1, n); }

void cbor_put_int(cbor_enc *e, int64_t v)
{
    if (v >= 0)
        put_head(e, 0, (uint64_t)v);
    else
        put_head(e, 1, (uint64_t)(-(v + 1))); /* -1 - v without overflow at INT64_MIN */
}

void cbor_put_bytes(cbor_enc *e, const uint8_t *p, size_t n)
{
    put_head(e, 2, n);
    put_raw(e, p, n);
}

void cbor_put_text(cbor_enc *e, const char *p, size_t n)
{
    put_head(e, 3, n);
    put_raw(e, p, n);
}

void cbor_put_cstr(cbor_enc *e, const char *s) { cbor_put_text(e, s, strlen(s)); }
void cbor_put_array(cbor_enc *e, size_t count) { put_head(e, 4, count); }
void cbor_put_map(cbor_enc *e, size_t pairs) { put_head(e, 5, pairs); }

void cbor_put_bool(cbor_enc *e, bool v)
{
    uint8_t b = v ? 0xF5 : 0xF4;
    put_raw(e, &b, 1);
}

void cbor_put_null(cbor_enc *e)
{
    uint8_t b = 0xF6;
    put_raw(e, &b, 1);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

bool cbor_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2;
            lo = 0xA0; /* no overlongs */
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            need = 2;
        } else if (c == 0xED) {
            need = 2;
            hi = 0x9F; /* no surrogates */
        } else if (c == 0xF0) {
            need = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3;
            hi = 0x8F; /* nothing above U+10FFFF */
        } else {
            return false;
        }
        if (n - i - 1 < need)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- decoder ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t major;
    uint8_t ai;
    uint64_t arg;
    size_t len; /* bytes taken by the head */
} head_t;

static cbor_err read_head(const uint8_t *p, const uint8_t *end, head_t *h)
{
    if (p >= end)
        return CBOR_ERR_MALFORMED;
    h->major = (uint8_t)(p[0] >> 5);
    h->ai = (uint8_t)(p[0] & 0x1F);
    if (h->ai >= 28 && h->ai <= 30)
        return CBOR_ERR_MALFORMED;
    if (h->ai == 31)
        return (h->major >= 2 && h->major <= 5) ? CBOR_ERR_INDEFINITE : CBOR_ERR_MALFORMED;
    if (h->ai < 24) {
        h->arg = h->ai;
        h->len = 1;
        return CBOR_OK;
    }
    size_t n = (size_t)1 << (h->ai - 24);
    if ((size_t)(end - p) - 1 < n)
        return CBOR_ERR_MALFORMED;
    h->arg = 0;
    for (size_t i = 1; i <= n; i++)
        h->arg = (h->arg << 8) | p[i];
    h->len = n + 1;
    return CBOR_OK;
}

/* Checks on a major-7 item, shared by skip and the readers' view of the profile. */
static cbor_err check_simple(const head_t *h)
{
    if (h->ai >= 20 && h->ai <= 22)
        return CBOR_OK;
    if (h->ai == 24 && h->arg < 32)
        return CBOR_ERR_MALFORMED;
    return CBOR_ERR_UNSUPPORTED;
}

static cbor_err fail(cbor_dec *d, cbor_err e)
{
    if (d->err == CBOR_OK)
        d->err = e;
    return d->err;
}

void cbor_dec_init(cbor_dec *d, const uint8_t *buf, size_t len)
{
    d->p = buf;
    d->end = buf ? buf + len : buf;
    d->err = CBOR_OK;
}

size_t cbor_dec_remaining(const cbor_dec *d) { return (size_t)(d->end - d->p); }

cbor_type cbor_peek(const cbor_dec *d)
{
    head_t h;
    if (d->err != CBOR_OK || read_head(d->p, d->end, &h) != CBOR_OK)
        return CBOR_TYPE_INVALID;
    switch (h.major) {
    case 0: return CBOR_TYPE_UINT;
    case 1: return CBOR_TYPE_NINT;
    case 2: return CBOR_TYPE_BYTES;
    case 3: return CBOR_TYPE_TEXT;
    case 4: return CBOR_TYPE_ARRAY;
    case 5: return CBOR_TYPE_MAP;
    case 7:
        if (h.ai == 20 || h.ai == 21)
            return CBOR_TYPE_BOOL;
        if (h.ai == 22)
            return CBOR_TYPE_NULL;
        return CBOR_TYPE_INVALID;
    default: return CBOR_TYPE_INVALID;
    }
}

/* Read the next head and require major type `major`. */
static cbor_err expect(cbor_dec *d, uint8_t major, head_t *h)
{
    if (d->err != CBOR_OK)
        return d->err;
    cbor_err e = read_head(d->p, d->end, h);
    if (e != CBOR_OK)
        return fail(d, e);
    if (h->major != major)
        return fail(d, CBOR_ERR_TYPE);
    return CBOR_OK;
}

cbor_err cbor_read_uint(cbor_dec *d, uint64_t *v)
{
    head_t h;
    if (expect(d, 0, &h) != CBOR_OK)
        return d->err;
    *v = h.arg;
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_read_u32(cbor_dec *d, uint32_t *v)
{
    head_t h;
    if (expect(d, 0, &h) != CBOR_OK)
        return d->err;
    if (h.arg > 0xFFFFFFFFu)
        return fail(d, CBOR_ERR_RANGE);
    *v = (uint32_t)h.arg;
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_read_int(cbor_dec *d, int64_t *v)
{
    head_t h;
    if (d->err != CBOR_OK)
        return d->err;
    cbor_err e = read_head(d->p, d->end, &h);
    if (e != CBOR_OK)
        return fail(d, e);
    if (h.major != 0 && h.major != 1)
        return fail(d, CBOR_ERR_TYPE);
    if (h.arg > (uint64_t)INT64_MAX)
        return fail(d, CBOR_ERR_RANGE);
    *v = h.major == 0 ? (int64_t)h.arg : -1 - (int64_t)h.arg;
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_read_negative(cbor_dec *d, uint64_t *n)
{
    head_t h;
    if (expect(d, 1, &h) != CBOR_OK)
        return d->err;
    *n = h.arg;
    d->p += h.len;
    return CBOR_OK;
}

static cbor_err read_string(cbor_dec *d, uint8_t major, const uint8_t **p, size_t *n)
{
    head_t h;
    if (expect(d, major, &h) != CBOR_OK)
        return d->err;
    const uint8_t *data = d->p + h.len;
    if (h.arg > (uint64_t)(d->end - data))
        return fail(d, CBOR_ERR_MALFORMED);
    if (major == 3 && !cbor_utf8_valid(data, (size_t)h.arg))
        return fail(d, CBOR_ERR_MALFORMED);
    *p = data;
    *n = (size_t)h.arg;
    d->p = data + h.arg;
    return CBOR_OK;
}

cbor_err cbor_read_bytes(cbor_dec *d, const uint8_t **p, size_t *n) { return read_string(d, 2, p, n); }

cbor_err cbor_read_text(cbor_dec *d, const char **p, size_t *n)
{
    const uint8_t *u = NULL;
    cbor_err e = read_string(d, 3, &u, n);
    if (e == CBOR_OK)
        *p = (const char *)u;
    return e;
}

static cbor_err read_container(cbor_dec *d, uint8_t major, size_t *count)
{
    head_t h;
    if (expect(d, major, &h) != CBOR_OK)
        return d->err;
    /* Every item takes at least one byte: a count beyond the data left is malformed. */
    uint64_t left = (uint64_t)(d->end - d->p) - h.len;
    if (major == 4 ? h.arg > left : h.arg > left / 2)
        return fail(d, CBOR_ERR_MALFORMED);
    *count = (size_t)h.arg;
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_read_array(cbor_dec *d, size_t *count) { return read_container(d, 4, count); }
cbor_err cbor_read_map(cbor_dec *d, size_t *pairs) { return read_container(d, 5, pairs); }

cbor_err cbor_read_bool(cbor_dec *d, bool *v)
{
    head_t h;
    if (expect(d, 7, &h) != CBOR_OK)
        return d->err;
    if (h.ai != 20 && h.ai != 21)
        return fail(d, CBOR_ERR_TYPE);
    *v = h.ai == 21;
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_read_null(cbor_dec *d)
{
    head_t h;
    if (expect(d, 7, &h) != CBOR_OK)
        return d->err;
    if (h.ai != 22)
        return fail(d, CBOR_ERR_TYPE);
    d->p += h.len;
    return CBOR_OK;
}

cbor_err cbor_skip(cbor_dec *d, unsigned max_depth)
{
    uint64_t left[CBOR_DEPTH_LIMIT]; /* items still to read in each open container */
    bool is_map[CBOR_DEPTH_LIMIT];
    unsigned depth = 0;
    const uint8_t *p = d->p;

    if (d->err != CBOR_OK)
        return d->err;
    if (max_depth > CBOR_DEPTH_LIMIT)
        max_depth = CBOR_DEPTH_LIMIT;
    do {
        /* In a map, `left` counts keys and values; an even count means a key comes next. */
        bool key = depth > 0 && is_map[depth - 1] && (left[depth - 1] % 2) == 0;
        if (depth > 0)
            left[depth - 1]--;
        head_t h;
        cbor_err e = read_head(p, d->end, &h);
        if (e != CBOR_OK)
            return fail(d, e);
        if (key && h.major != 0 && h.major != 1 && h.major != 3)
            return fail(d, CBOR_ERR_UNSUPPORTED);
        p += h.len;
        uint64_t rem = (uint64_t)(d->end - p);
        switch (h.major) {
        case 0:
        case 1:
            break;
        case 2:
        case 3:
            if (h.arg > rem)
                return fail(d, CBOR_ERR_MALFORMED);
            if (h.major == 3 && !cbor_utf8_valid(p, (size_t)h.arg))
                return fail(d, CBOR_ERR_MALFORMED);
            p += h.arg;
            break;
        case 4:
        case 5:
            if (depth + 1 > max_depth)
                return fail(d, CBOR_ERR_TOO_DEEP);
            if (h.major == 4 ? h.arg > rem : h.arg > rem / 2)
                return fail(d, CBOR_ERR_MALFORMED);
            if (h.arg > 0) {
                left[depth] = h.major == 4 ? h.arg : 2 * h.arg;
                is_map[depth] = h.major == 5;
                depth++;
            }
            break;
        case 6:
            return fail(d, CBOR_ERR_UNSUPPORTED);
        default:
            e = check_simple(&h);
            if (e != CBOR_OK)
                return fail(d, e);
            break;
        }
        while (depth > 0 && left[depth - 1] == 0)
            depth--;
    } while (depth > 0);
    d->p = p;
    return CBOR_OK;
}

cbor_err cbor_check_item(const uint8_t *buf, size_t len, unsigned max_depth)
{
    cbor_dec d;
    cbor_dec_init(&d, buf, len);
    cbor_err e = cbor_skip(&d, max_depth);
    if (e != CBOR_OK)
        return e;
    return cbor_dec_remaining(&d) ? CBOR_ERR_TRAILING : CBOR_OK;
}
