/*
 * Host test harness for firmware/core/cbor.c and proto.c, driven by tests/test_cbor_c.py.
 * All input on stdin, results on stdout, one line per result:
 *   enc [cap]      tokens -> hex        u N | n N (=-1-N) | b HEX|- | t HEX|- | a N | m N | T | F | N
 *   dec [depth]    hex -> JSON-ish      after cbor_check_item(); ERR <cbor_err name> on failure
 *   rdec           hex -> JSON-ish      readers only (no pre-check), harness depth cap 16
 *   proto [max]    hex frame -> JSON    fed through proto_reader one byte at a time, then
 *                                       proto_decode; second line "RE <hex>" = proto_encode of it
 *   sample NAME    fixed messages built from C literals -> frame hex
 * JSON-ish: ints as numbers, {"b":"hex"} bytes, {"t":"hex"} text, {"m":[[k,v],...]} maps.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbor.h"
#include "proto.h"

#define MAX_INPUT (1u << 20)

static uint8_t in_buf[MAX_INPUT];
static uint8_t out_buf[MAX_INPUT];

static const char *cbor_err_name(cbor_err e)
{
    switch (e) {
    case CBOR_OK: return "OK";
    case CBOR_ERR_OVERFLOW: return "OVERFLOW";
    case CBOR_ERR_MALFORMED: return "MALFORMED";
    case CBOR_ERR_INDEFINITE: return "INDEFINITE";
    case CBOR_ERR_TRAILING: return "TRAILING";
    case CBOR_ERR_TOO_DEEP: return "TOO_DEEP";
    case CBOR_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case CBOR_ERR_TYPE: return "TYPE";
    case CBOR_ERR_RANGE: return "RANGE";
    }
    return "?";
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parse hex digits from s (whitespace ignored) into buf; returns length or -1. */
static long parse_hex(const char *s, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
            continue;
        int v = hexval((unsigned char)*s);
        if (v < 0)
            return -1;
        if (hi < 0) {
            hi = v;
        } else {
            if (n >= cap)
                return -1;
            buf[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    return hi < 0 ? (long)n : -1;
}

static char *read_stdin(void)
{
    static char text[2 * MAX_INPUT + 16];
    size_t n = fread(text, 1, sizeof text - 1, stdin);
    text[n] = 0;
    return text;
}

static void fprint_hex(FILE *o, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(o, "%02x", p[i]);
}

static void print_hex(const uint8_t *p, size_t n) { fprint_hex(stdout, p, n); }

/* Print one item with the cursor readers; returns the sticky error. Depth-capped by the harness. */
static cbor_err print_item(FILE *o, cbor_dec *d, unsigned depth)
{
    const uint8_t *p;
    const char *t;
    size_t n;
    uint64_t u;
    bool b;

    if (depth > 16)
        return CBOR_ERR_TOO_DEEP;
    switch (cbor_peek(d)) {
    case CBOR_TYPE_UINT:
        if (cbor_read_uint(d, &u) == CBOR_OK)
            fprintf(o, "%" PRIu64, u);
        break;
    case CBOR_TYPE_NINT:
        if (cbor_read_negative(d, &u) == CBOR_OK) {
            if (u == UINT64_MAX)
                fprintf(o, "-18446744073709551616");
            else
                fprintf(o, "-%" PRIu64, u + 1);
        }
        break;
    case CBOR_TYPE_BYTES:
        if (cbor_read_bytes(d, &p, &n) == CBOR_OK) {
            fprintf(o, "{\"b\":\"");
            fprint_hex(o, p, n);
            fprintf(o, "\"}");
        }
        break;
    case CBOR_TYPE_TEXT:
        if (cbor_read_text(d, &t, &n) == CBOR_OK) {
            fprintf(o, "{\"t\":\"");
            fprint_hex(o, (const uint8_t *)t, n);
            fprintf(o, "\"}");
        }
        break;
    case CBOR_TYPE_ARRAY:
        if (cbor_read_array(d, &n) == CBOR_OK) {
            fprintf(o, "[");
            for (size_t i = 0; i < n && d->err == CBOR_OK; i++) {
                if (i)
                    fprintf(o, ",");
                if (print_item(o, d, depth + 1) != CBOR_OK)
                    return d->err ? d->err : CBOR_ERR_TOO_DEEP;
            }
            fprintf(o, "]");
        }
        break;
    case CBOR_TYPE_MAP:
        if (cbor_read_map(d, &n) == CBOR_OK) {
            fprintf(o, "{\"m\":[");
            for (size_t i = 0; i < n && d->err == CBOR_OK; i++) {
                fprintf(o, i ? ",[" : "[");
                if (print_item(o, d, depth + 1) != CBOR_OK)
                    return d->err ? d->err : CBOR_ERR_TOO_DEEP;
                fprintf(o, ",");
                if (print_item(o, d, depth + 1) != CBOR_OK)
                    return d->err ? d->err : CBOR_ERR_TOO_DEEP;
                fprintf(o, "]");
            }
            fprintf(o, "]}");
        }
        break;
    case CBOR_TYPE_BOOL:
        if (cbor_read_bool(d, &b) == CBOR_OK)
            fprintf(o, b ? "true" : "false");
        break;
    case CBOR_TYPE_NULL:
        if (cbor_read_null(d) == CBOR_OK)
            fprintf(o, "null");
        break;
    case CBOR_TYPE_INVALID:
        /* Let skip classify it (malformed / indefinite / unsupported). */
        if (cbor_skip(d, 16) == CBOR_OK)
            return CBOR_ERR_TYPE; /* peek and skip disagree: a harness-visible bug */
        break;
    }
    return d->err;
}

static int cmd_enc(int argc, char **argv)
{
    size_t cap = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : sizeof out_buf;
    cbor_enc e;
    char *text = read_stdin();
    uint8_t tmp[65536 + 16];

    cbor_enc_init(&e, out_buf, cap);
    for (char *tok = strtok(text, " \n\r\t"); tok; tok = strtok(NULL, " \n\r\t")) {
        char *arg = NULL;
        if (strchr("unbtam", tok[0]) && tok[1] == 0) {
            arg = strtok(NULL, " \n\r\t");
            if (!arg) {
                fprintf(stderr, "missing argument for %s\n", tok);
                return 2;
            }
        }
        long n;
        switch (tok[0]) {
        case 'u': cbor_put_uint(&e, strtoull(arg, NULL, 10)); break;
        case 'n': cbor_put_negative(&e, strtoull(arg, NULL, 10)); break;
        case 'i': cbor_put_int(&e, strtoll(tok + 1, NULL, 10)); break; /* i<value>, e.g. i-5 */
        case 'b':
        case 't':
            n = strcmp(arg, "-") == 0 ? 0 : parse_hex(arg, tmp, sizeof tmp);
            if (n < 0) {
                fprintf(stderr, "bad hex\n");
                return 2;
            }
            if (tok[0] == 'b')
                cbor_put_bytes(&e, tmp, (size_t)n);
            else
                cbor_put_text(&e, (const char *)tmp, (size_t)n);
            break;
        case 'a': cbor_put_array(&e, strtoull(arg, NULL, 10)); break;
        case 'm': cbor_put_map(&e, strtoull(arg, NULL, 10)); break;
        case 'T': cbor_put_bool(&e, true); break;
        case 'F': cbor_put_bool(&e, false); break;
        case 'N': cbor_put_null(&e); break;
        default: fprintf(stderr, "bad token %s\n", tok); return 2;
        }
    }
    if (e.err != CBOR_OK) {
        printf("ERR %s %zu\n", cbor_err_name(e.err), e.len);
        return 0;
    }
    print_hex(out_buf, e.len);
    printf("\n");
    return 0;
}

static int cmd_dec(int argc, char **argv, bool precheck)
{
    unsigned depth = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : PROTO_MAX_DEPTH;
    long n = parse_hex(read_stdin(), in_buf, sizeof in_buf);
    if (n < 0) {
        fprintf(stderr, "bad hex\n");
        return 2;
    }
    if (precheck) {
        cbor_err e = cbor_check_item(in_buf, (size_t)n, depth);
        if (e != CBOR_OK) {
            printf("ERR %s\n", cbor_err_name(e));
            return 0;
        }
    }
    cbor_dec d;
    cbor_dec_init(&d, in_buf, (size_t)n);
    /* Buffer the JSON so an error line is printed alone. */
    static char json[4 * MAX_INPUT];
    FILE *mem = fmemopen(json, sizeof json, "w");
    if (!mem)
        return 2;
    cbor_err e = print_item(mem, &d, 0);
    fputc(0, mem);
    fclose(mem);
    if (e != CBOR_OK)
        printf("ERR %s\n", cbor_err_name(e));
    else if (!precheck && cbor_dec_remaining(&d))
        printf("ERR TRAILING\n");
    else
        printf("%s\n", json);
    return 0;
}

static void print_text(proto_text t)
{
    printf("{\"t\":\"");
    print_hex((const uint8_t *)t.ptr, t.len);
    printf("\"}");
}

static void print_blob(proto_blob b)
{
    printf("{\"b\":\"");
    print_hex(b.ptr, b.len);
    printf("\"}");
}

/* The message as the JSON-ish form of its envelope array [version, id, [tag, fields...]]. */
static void print_msg(const proto_msg *m)
{
    printf("[%d,%" PRIu32 ",[%" PRIu32, PROTO_VERSION, m->message_id, m->tag);
    switch (m->tag) {
    case PROTO_TAG_HELLO: {
        const proto_hello *h = &m->u.hello;
        printf(",%" PRIu32 ",", h->protocol_version);
        print_text(h->board);
        printf(",");
        print_text(h->firmware_version);
        printf(",%" PRIu32 ",%" PRIu32 ",[", h->ram_free, h->max_app_size);
        for (size_t i = 0; i < h->n_features; i++) {
            if (i)
                printf(",");
            print_text(h->features[i]);
        }
        printf("],%" PRIu32, h->max_frame_size);
        break;
    }
    case PROTO_TAG_HELLO_ACK:
        printf(",%" PRIu32 ",%" PRIu32 ",%" PRIu64 ",%" PRIu32, m->u.hello_ack.protocol_version,
               m->u.hello_ack.max_frame_size, m->u.hello_ack.gateway_time_ms, m->u.hello_ack.heartbeat_interval_ms);
        break;
    case PROTO_TAG_ENROLL_REQUEST:
        printf(",");
        print_blob(m->u.enroll_request.csr);
        printf(",");
        print_text(m->u.enroll_request.board);
        printf(",");
        print_blob(m->u.enroll_request.token);
        break;
    case PROTO_TAG_ENROLL_RESULT:
        printf(",%" PRIu32 ",", m->u.enroll_result.status);
        print_text(m->u.enroll_result.device_name);
        printf(",");
        print_blob(m->u.enroll_result.device_uuid);
        printf(",");
        print_blob(m->u.enroll_result.certificate);
        printf(",");
        print_text(m->u.enroll_result.reason);
        break;
    case PROTO_TAG_HEARTBEAT: {
        const proto_heartbeat *h = &m->u.heartbeat;
        printf(",%" PRIu64 ",%" PRIu32 ",[", h->uptime_ms, h->free_memory);
        for (size_t i = 0; i < h->n_apps; i++)
            printf("%s[%" PRIu32 ",%" PRIu32 "]", i ? "," : "", h->apps[i].app_id, h->apps[i].state);
        printf("]");
        break;
    }
    case PROTO_TAG_HEARTBEAT_ACK:
        printf(",%" PRIu64, m->u.heartbeat_ack.gateway_time_ms);
        break;
    case PROTO_TAG_ERROR:
        printf(",%" PRIu32 ",", m->u.error.code);
        print_text(m->u.error.text);
        break;
    case PROTO_TAG_DEPLOY_BEGIN: {
        const proto_deploy_begin *b = &m->u.deploy_begin;
        printf(",%" PRIu32 ",", b->app_id);
        print_text(b->name);
        printf(",%" PRIu32 ",", b->size);
        print_blob(b->sha256);
        printf(",");
        print_blob(b->config);
        printf(",%" PRIu32 ",%" PRIu32 ",%" PRIu32, b->mem_pages, b->time_budget_ms, b->restart);
        break;
    }
    case PROTO_TAG_DEPLOY_CHUNK:
        printf(",%" PRIu32 ",%" PRIu32 ",", m->u.deploy_chunk.app_id, m->u.deploy_chunk.offset);
        print_blob(m->u.deploy_chunk.data);
        break;
    case PROTO_TAG_DEPLOY_COMMIT:
        printf(",%" PRIu32, m->u.deploy_commit.app_id);
        break;
    case PROTO_TAG_APP_START:
        printf(",%" PRIu32, m->u.app_start.app_id);
        break;
    case PROTO_TAG_DEPLOY_RESULT:
        printf(",%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",", m->u.deploy_result.app_id, m->u.deploy_result.code,
               m->u.deploy_result.next_offset);
        print_text(m->u.deploy_result.text);
        break;
    case PROTO_TAG_APP_STOP:
        printf(",%" PRIu32 ",%s", m->u.app_stop.app_id, m->u.app_stop.remove ? "true" : "false");
        break;
    case PROTO_TAG_APP_STATUS: {
        const proto_app_status *st = &m->u.app_status;
        printf(",%" PRIu32 ",%" PRIu32 ",", st->app_id, st->state);
        print_text(st->error);
        printf(",%" PRIu32 ",[%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%" PRIu32 "]", st->restarts, st->metrics.calls,
               st->metrics.traps, st->metrics.mem_pages, st->metrics.max_call_ms);
        break;
    }
    case PROTO_TAG_APP_LOG:
        printf(",%" PRIu32 ",%" PRIu32 ",%" PRIu64 ",", m->u.app_log.app_id, m->u.app_log.level,
               m->u.app_log.uptime_ms);
        print_text(m->u.app_log.text);
        break;
    case PROTO_TAG_PUBLISH:
    case PROTO_TAG_MESSAGE:
        printf(",%" PRIu32 ",", m->u.publish.app_id);
        print_text(m->u.publish.topic);
        printf(",");
        print_blob(m->u.publish.payload);
        break;
    }
    printf("]]\n");
}

static int cmd_proto(int argc, char **argv)
{
    uint32_t max = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : PROTO_INITIAL_MAX_FRAME;
    long n = parse_hex(read_stdin(), in_buf, sizeof in_buf);
    static uint8_t body[MAX_INPUT];
    proto_reader r;
    proto_msg m;
    size_t used = 0, consumed;
    proto_read_status st = PROTO_READ_MORE;

    if (n < 0) {
        fprintf(stderr, "bad hex\n");
        return 2;
    }
    proto_reader_init(&r, body, sizeof body, max);
    /* One byte at a time, as a polled UART delivers it. */
    while (used < (size_t)n && st == PROTO_READ_MORE) {
        st = proto_reader_feed(&r, in_buf + used, 1, &consumed);
        used += consumed;
    }
    if (st == PROTO_READ_ERROR) {
        printf("ERR %d 0\n", (int)r.err);
        return 0;
    }
    if (st != PROTO_READ_FRAME) {
        printf("INCOMPLETE\n");
        return 0;
    }
    if (used != (size_t)n) {
        printf("EXTRA %zu\n", (size_t)n - used);
        return 0;
    }
    proto_error e = proto_decode(r.buf, r.frame_len, &m);
    if (e != PROTO_OK) {
        printf("ERR %d %" PRIu32 "\n", (int)e, m.message_id);
        return 0;
    }
    print_msg(&m);
    size_t flen = 0;
    e = proto_encode(&m, max, out_buf, sizeof out_buf, &flen);
    if (e != PROTO_OK) {
        printf("REERR %d\n", (int)e);
        return 0;
    }
    printf("RE ");
    print_hex(out_buf, flen);
    printf("\n");
    return 0;
}

#define TEXT(s) ((proto_text){(s), sizeof(s) - 1})

static int cmd_sample(const char *name)
{
    static const uint8_t csr[] = {0x30, 0x81, 0xd9, 0x30, 0x81, 0x80, 0x02, 0x01, 0x00, 0x30, 0x1e, 0x31, 0x1c};
    static const uint8_t token[] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7};
    static const uint8_t uuid[16] = {0x6f, 0x1c, 0x2a, 0x8e};
    static const uint8_t cert[] = {0x30, 0x82, 0x01, 0x9a, 0x30, 0x82, 0x01, 0x40, 0xa0, 0x03};
    proto_msg m;
    size_t flen = 0;
    proto_error e;

    memset(&m, 0, sizeof m);
    m.message_id = 7;
    if (strcmp(name, "hello") == 0) {
        m.tag = PROTO_TAG_HELLO;
        m.u.hello.protocol_version = 1;
        m.u.hello.board = TEXT("mps2-an385");
        m.u.hello.firmware_version = TEXT("0.1.0");
        m.u.hello.ram_free = 4000000;
        m.u.hello.max_app_size = 65536;
        m.u.hello.n_features = 2;
        m.u.hello.features[0] = TEXT("wasm-mvp");
        m.u.hello.features[1] = TEXT("bulk-memory");
        m.u.hello.max_frame_size = 4096;
    } else if (strcmp(name, "heartbeat") == 0) {
        m.tag = PROTO_TAG_HEARTBEAT;
        m.u.heartbeat.uptime_ms = 4294967296ull; /* past 32 bits */
        m.u.heartbeat.free_memory = 65535;
        m.u.heartbeat.n_apps = 3;
        m.u.heartbeat.apps[0] = (proto_app_state){1, PROTO_APP_RUNNING};
        m.u.heartbeat.apps[1] = (proto_app_state){24, PROTO_APP_FAILED};
        m.u.heartbeat.apps[2] = (proto_app_state){0xFFFFFFFFu, 255};
    } else if (strcmp(name, "enroll_request") == 0) {
        m.tag = PROTO_TAG_ENROLL_REQUEST;
        m.u.enroll_request.csr = (proto_blob){csr, sizeof csr};
        m.u.enroll_request.board = TEXT("stm32vldiscovery");
        m.u.enroll_request.token = (proto_blob){token, sizeof token};
    } else if (strcmp(name, "enroll_result") == 0) {
        m.tag = PROTO_TAG_ENROLL_RESULT;
        m.u.enroll_result.status = PROTO_ENROLL_ACCEPTED;
        m.u.enroll_result.device_name = TEXT("stm32vldiscovery-6f1c2a8e");
        m.u.enroll_result.device_uuid = (proto_blob){uuid, sizeof uuid};
        m.u.enroll_result.certificate = (proto_blob){cert, sizeof cert};
        m.u.enroll_result.reason = TEXT("token");
    } else if (strcmp(name, "deploy_result") == 0) {
        m.tag = PROTO_TAG_DEPLOY_RESULT;
        m.u.deploy_result = (proto_deploy_result){3, PROTO_APP_ERR_OK, 1536, TEXT("")};
    } else if (strcmp(name, "deploy_result_error") == 0) {
        m.tag = PROTO_TAG_DEPLOY_RESULT;
        m.u.deploy_result = (proto_deploy_result){3, PROTO_APP_ERR_LOAD_FAILED, 0, TEXT("missing imported function")};
    } else if (strcmp(name, "app_status") == 0) {
        m.tag = PROTO_TAG_APP_STATUS;
        m.u.app_status = (proto_app_status){3, PROTO_APP_FAILED, TEXT("time budget exceeded"), 2,
                                            {0xFFFFFFFFu, 1, 1, 1000}};
    } else if (strcmp(name, "app_log") == 0) {
        m.tag = PROTO_TAG_APP_LOG;
        m.u.app_log = (proto_app_log){3, PROTO_LOG_INFO, 4294967296ull, TEXT("hello from wasm \xc3\xa9")};
    } else if (strcmp(name, "publish") == 0) {
        static const uint8_t payload[] = "31.500";
        m.tag = PROTO_TAG_PUBLISH;
        m.u.publish = (proto_app_topic){3, TEXT("temperature"), {payload, 6}};
    } else if (strcmp(name, "error") == 0) {
        e = proto_encode_error(9, PROTO_ERR_UNKNOWN_MESSAGE, "unknown message tag 99", out_buf, sizeof out_buf,
                               &flen);
        goto out;
    } else {
        fprintf(stderr, "unknown sample\n");
        return 2;
    }
    e = proto_encode(&m, PROTO_INITIAL_MAX_FRAME, out_buf, sizeof out_buf, &flen);
out:
    if (e != PROTO_OK) {
        printf("ERR %d\n", (int)e);
        return 0;
    }
    print_hex(out_buf, flen);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cbor_tool enc|dec|rdec|proto|sample ...\n");
        return 2;
    }
    if (strcmp(argv[1], "enc") == 0)
        return cmd_enc(argc, argv);
    if (strcmp(argv[1], "dec") == 0)
        return cmd_dec(argc, argv, true);
    if (strcmp(argv[1], "rdec") == 0)
        return cmd_dec(argc, argv, false);
    if (strcmp(argv[1], "proto") == 0)
        return cmd_proto(argc, argv);
    if (strcmp(argv[1], "sample") == 0 && argc > 2)
        return cmd_sample(argv[2]);
    fprintf(stderr, "unknown command\n");
    return 2;
}
