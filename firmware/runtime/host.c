/* Host functions of ABI v1 (docs/abi.md). Every pointer from the app is bounds-checked against its
 * linear memory; a bad pointer is WB_EINVAL, never a host fault. */
#include "host.h"

#include <string.h>

#include "budget.h"
#include "cbor.h"
#include "m3_env.h"
#include "rng.h"
#include "wb_board.h"
#include "wb_console.h"
#include "wb_i2c.h"
#include "wb_leds.h"
#include "wb_time.h"

#define LOG_MAX 256u
#define I2C_MAX 64u
#define TIMER_MIN_MS 10u

/* wasm3 raw-call convention: results then arguments, one 64-bit cell each, at sp. */
#define HOST_FN(name) static const void *name(IM3Runtime rt, IM3ImportContext ctx, uint64_t *sp, void *mem)
#define ARG_I32(i, nrets) ((int32_t)(uint32_t)sp[(nrets) + (i)])
#define RET_I32(v)                                                                                   \
    do {                                                                                             \
        *(int32_t *)&sp[0] = (int32_t)(v);                                                           \
        return m3Err_none;                                                                           \
    } while (0)

static uint32_t mem_size(IM3Runtime rt)
{
    return rt->memory.mallocated != 0 ? (uint32_t)rt->memory.mallocated->length : 0u;
}

/* Pointer into linear memory for [ptr, ptr+len), or 0 when out of bounds. */
static uint8_t *span(IM3Runtime rt, void *mem, int32_t ptr, int32_t len)
{
    uint32_t size = mem_size(rt);
    if (ptr < 0 || len < 0 || (uint32_t)ptr > size || (uint32_t)len > size - (uint32_t)ptr) {
        return 0;
    }
    return (uint8_t *)mem + ptr;
}

HOST_FN(h_log)
{
    (void)ctx;
    int32_t level = ARG_I32(0, 0), ptr = ARG_I32(1, 0), len = ARG_I32(2, 0);
    if (len > (int32_t)LOG_MAX) {
        len = LOG_MAX; /* longer lines are cut, as documented */
    }
    const uint8_t *p = span(rt, mem, ptr, len);
    wb_app *a = wb_current_app;
    if (p == 0 || a == 0) {
        return m3Err_none; /* nothing sensible to log; a log call never fails the app */
    }
    wb_printf("app %lu (%s): %.*s\n", (unsigned long)a->id, a->name, (int)len, (const char *)p);
    extern const wb_app_sink *wb_apps_sink(void);
    const wb_app_sink *s = wb_apps_sink();
    if (s != 0 && s->log != 0) {
        s->log(a->id, (uint32_t)(level < 0 ? 0 : level > 3 ? 3 : level), (const char *)p, (size_t)len);
    }
    return m3Err_none;
}

HOST_FN(h_uptime_ms)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    *(int64_t *)&sp[0] = (int64_t)wb_uptime_ms();
    return m3Err_none;
}

HOST_FN(h_timer_set)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    int32_t id = ARG_I32(0, 1), period = ARG_I32(1, 1), repeat = ARG_I32(2, 1);
    wb_app *a = wb_current_app;
    if (a == 0 || period < (int32_t)TIMER_MIN_MS) {
        RET_I32(WB_EINVAL);
    }
    wb_app_timer *slot = 0;
    for (int i = 0; i < WB_APP_TIMERS_MAX; i++) {
        if (a->timers[i].active && a->timers[i].id == id) {
            slot = &a->timers[i]; /* re-arming an existing timer */
            break;
        }
        if (!a->timers[i].active && slot == 0) {
            slot = &a->timers[i];
        }
    }
    if (slot == 0) {
        RET_I32(WB_ENOSPC);
    }
    slot->id = id;
    slot->period_ms = (uint32_t)period;
    slot->repeat = repeat != 0;
    slot->active = 1;
    slot->due = wb_uptime_ms() + (uint32_t)period;
    RET_I32(0);
}

HOST_FN(h_timer_cancel)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    int32_t id = ARG_I32(0, 1);
    wb_app *a = wb_current_app;
    for (int i = 0; a != 0 && i < WB_APP_TIMERS_MAX; i++) {
        if (a->timers[i].active && a->timers[i].id == id) {
            a->timers[i].active = 0;
            RET_I32(0);
        }
    }
    RET_I32(WB_ENOENT);
}

#if WB_LED_COUNT > 0
static const wb_led_t leds[WB_LED_COUNT] = WB_LEDS;
#endif

HOST_FN(h_led_count)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    RET_I32(WB_LED_COUNT);
}

HOST_FN(h_led_set)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    int32_t index = ARG_I32(0, 1), on = ARG_I32(1, 1);
#if WB_LED_COUNT > 0
    if (index < 0 || index >= WB_LED_COUNT) {
        RET_I32(WB_EINVAL);
    }
    wb_led_write(&leds[index], on != 0);
    RET_I32(0);
#else
    (void)index;
    (void)on;
    RET_I32(WB_ENOTSUP);
#endif
}

HOST_FN(h_led_get)
{
    (void)rt;
    (void)ctx;
    (void)mem;
    int32_t index = ARG_I32(0, 1);
#if WB_LED_COUNT > 0
    if (index < 0 || index >= WB_LED_COUNT) {
        RET_I32(WB_EINVAL);
    }
    RET_I32(wb_led_read(&leds[index]));
#else
    (void)index;
    RET_I32(WB_ENOTSUP);
#endif
}

#if WB_APP_I2C_COUNT > 0
static const uintptr_t app_buses[WB_APP_I2C_COUNT] = WB_APP_I2C_BASES;
#endif

HOST_FN(h_i2c_transfer)
{
    (void)ctx;
    int32_t bus = ARG_I32(0, 1), addr = ARG_I32(1, 1);
    int32_t wptr = ARG_I32(2, 1), wlen = ARG_I32(3, 1), rptr = ARG_I32(4, 1), rlen = ARG_I32(5, 1);
#if WB_APP_I2C_COUNT > 0
    if (bus < 0 || bus >= WB_APP_I2C_COUNT) {
        RET_I32(WB_ENOTSUP);
    }
    if (addr < 0 || addr > 0x7F || wlen > (int32_t)I2C_MAX || rlen > (int32_t)I2C_MAX) {
        RET_I32(WB_EINVAL);
    }
    const uint8_t *w = span(rt, mem, wptr, wlen);
    uint8_t *r = span(rt, mem, rptr, rlen);
    if ((wlen > 0 && w == 0) || (rlen > 0 && r == 0)) {
        RET_I32(WB_EINVAL);
    }
    RET_I32(wb_i2c_transfer(app_buses[bus], (uint8_t)addr, w, (size_t)wlen, r, (size_t)rlen) == 0 ? 0 : WB_EIO);
#else
    (void)rt;
    (void)mem;
    (void)bus;
    (void)addr;
    (void)wptr;
    (void)wlen;
    (void)rptr;
    (void)rlen;
    RET_I32(WB_ENOTSUP);
#endif
}

/* TMP105: select 12-bit resolution once (config register 1, R1:R0 = 11), then read the
 * temperature register (0): a signed 16-bit value in 1/256 °C. */
HOST_FN(h_temperature_mdeg)
{
    (void)ctx;
    int32_t out_ptr = ARG_I32(0, 1);
#if WB_HAS_TEMPERATURE
    uint8_t *out = span(rt, mem, out_ptr, 4);
    if (out == 0) {
        RET_I32(WB_EINVAL);
    }
    static int configured;
    const uint8_t set12bit[2] = {0x01, 0x60};
    if (!configured && wb_i2c_transfer(WB_TEMPERATURE_I2C_BASE, WB_TEMPERATURE_I2C_ADDR, set12bit, 2, 0, 0) == 0) {
        configured = 1;
    }
    const uint8_t reg = 0x00;
    uint8_t raw[2];
    if (wb_i2c_transfer(WB_TEMPERATURE_I2C_BASE, WB_TEMPERATURE_I2C_ADDR, &reg, 1, raw, 2) != 0) {
        RET_I32(WB_EIO);
    }
    int16_t v = (int16_t)((uint16_t)(raw[0] << 8) | raw[1]);
    int32_t mdeg = (int32_t)v * 1000 / 256;
    memcpy(out, &mdeg, 4); /* WASM is little-endian, so is the Cortex-M */
    RET_I32(0);
#else
    (void)rt;
    (void)mem;
    (void)out_ptr;
    RET_I32(WB_ENOTSUP);
#endif
}

HOST_FN(h_random_fill)
{
    (void)ctx;
    int32_t ptr = ARG_I32(0, 1), len = ARG_I32(1, 1);
    uint8_t *p = span(rt, mem, ptr, len);
    if (p == 0) {
        RET_I32(WB_EINVAL);
    }
    RET_I32(wb_rng(0, p, (size_t)len) == 0 ? 0 : WB_EIO);
}

HOST_FN(h_publish)
{
    (void)ctx;
    int32_t tptr = ARG_I32(0, 1), tlen = ARG_I32(1, 1), dptr = ARG_I32(2, 1), dlen = ARG_I32(3, 1);
    if (tlen < 1 || tlen > WB_MESSAGE_TOPIC_MAX || dlen > WB_MESSAGE_DATA_MAX) {
        RET_I32(WB_EINVAL);
    }
    const uint8_t *t = span(rt, mem, tptr, tlen), *d = span(rt, mem, dptr, dlen);
    wb_app *a = wb_current_app;
    if (t == 0 || d == 0 || a == 0) {
        RET_I32(WB_EINVAL);
    }
    extern const wb_app_sink *wb_apps_sink(void);
    const wb_app_sink *s = wb_apps_sink();
    if (s == 0 || s->publish == 0) {
        RET_I32(WB_EIO);
    }
    RET_I32(s->publish(a->id, (const char *)t, (size_t)tlen, d, (size_t)dlen) == 0 ? 0 : WB_EBUSY);
}

HOST_FN(h_config_get)
{
    (void)ctx;
    int32_t kptr = ARG_I32(0, 1), klen = ARG_I32(1, 1), optr = ARG_I32(2, 1), ocap = ARG_I32(3, 1);
    const uint8_t *key = span(rt, mem, kptr, klen);
    uint8_t *out = span(rt, mem, optr, ocap);
    wb_app *a = wb_current_app;
    if (key == 0 || out == 0 || a == 0) {
        RET_I32(WB_EINVAL);
    }
    cbor_dec d;
    cbor_dec_init(&d, a->config, a->config_len);
    size_t pairs = 0;
    if (a->config_len == 0 || cbor_read_map(&d, &pairs) != CBOR_OK) {
        RET_I32(WB_ENOENT);
    }
    for (size_t i = 0; i < pairs; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (cbor_read_text(&d, &k, &kl) != CBOR_OK || cbor_read_text(&d, &v, &vl) != CBOR_OK) {
            RET_I32(WB_ENOENT);
        }
        if (kl == (size_t)klen && memcmp(k, key, kl) == 0) {
            if (vl > (size_t)ocap) {
                RET_I32(WB_ENOSPC);
            }
            memcpy(out, v, vl);
            RET_I32((int32_t)vl);
        }
    }
    RET_I32(WB_ENOENT);
}

static const struct {
    const char *name;
    const char *sig;
    M3RawCall fn;
} host_functions[] = {
    {"log", "v(iii)", h_log},
    {"uptime_ms", "I()", h_uptime_ms},
    {"timer_set", "i(iii)", h_timer_set},
    {"timer_cancel", "i(i)", h_timer_cancel},
    {"led_count", "i()", h_led_count},
    {"led_set", "i(ii)", h_led_set},
    {"led_get", "i(i)", h_led_get},
    {"i2c_transfer", "i(iiiiii)", h_i2c_transfer},
    {"temperature_mdeg", "i(i)", h_temperature_mdeg},
    {"random_fill", "i(ii)", h_random_fill},
    {"publish", "i(iiii)", h_publish},
    {"config_get", "i(iiii)", h_config_get},
};

M3Result wb_host_link(IM3Module mod)
{
    for (size_t i = 0; i < sizeof host_functions / sizeof host_functions[0]; i++) {
        M3Result r = m3_LinkRawFunction(mod, "wasmbed", host_functions[i].name, host_functions[i].sig,
                                        host_functions[i].fn);
        if (r != m3Err_none && r != m3Err_functionLookupFailed) {
            return r; /* e.g. the module imports it with another signature */
        }
    }
    /* Any import left unlinked is one we do not provide: wasm3 reports it when it is called, which
     * is too late; the gateway refuses such modules before transfer (docs/abi.md). */
    return m3Err_none;
}

int wb_host_copy_message(wb_app *a, int32_t buf, const char *topic, size_t topic_len, const uint8_t *data,
                         size_t len)
{
    if (topic_len > WB_MESSAGE_TOPIC_MAX || len > WB_MESSAGE_DATA_MAX || a->rt == 0 ||
        a->rt->memory.mallocated == 0) {
        return -1;
    }
    uint8_t *mem = (uint8_t *)(a->rt->memory.mallocated + 1); /* data follows the memory header */
    uint8_t *dst = span(a->rt, mem, buf, WB_MESSAGE_TOPIC_MAX + WB_MESSAGE_DATA_MAX);
    if (dst == 0) {
        return -1;
    }
    memcpy(dst, topic, topic_len);
    memcpy(dst + WB_MESSAGE_TOPIC_MAX, data, len);
    return 0;
}
