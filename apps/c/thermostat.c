/* thermostat (C version of apps/thermostat.wat): every 500 ms read the temperature, publish it on
 * "temperature" as text ("31.500"), LED 0 on above config "threshold_mdeg" (default 30000). */
#include "wasmbed.h"

static int32_t threshold = 30000;
static int warned;

/* Optional '-' and decimal digits; returns 0 and sets *out, or -1 if malformed. */
static int parse_int(const char *s, int32_t n, int32_t *out)
{
    int32_t i = 0, v = 0, neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

static char *put_uint(char *p, uint32_t v)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

WB_EXPORT("app_start") int32_t app_start(void)
{
    char value[32];
    static const char key[] = "threshold_mdeg";
    int32_t n = wb_config_get(key, sizeof key - 1, value, sizeof value);
    int32_t t;
    if (n >= 0 && parse_int(value, n, &t) == 0)
        threshold = t;
    return wb_timer_set(1, 500, 1) < 0 ? 1 : 0;
}

WB_EXPORT("on_timer") void on_timer(int32_t id)
{
    (void)id;
    int32_t mdeg;
    if (wb_temperature_mdeg(&mdeg) < 0) {
        if (!warned) {
            warned = 1;
            wb_log_str(WB_LOG_WARNING, "thermostat: no temperature sensor");
        }
        return;
    }
    char text[16], *p = text;
    uint32_t abs = mdeg < 0 ? (uint32_t)-mdeg : (uint32_t)mdeg;
    if (mdeg < 0)
        *p++ = '-';
    p = put_uint(p, abs / 1000);
    *p++ = '.';
    *p++ = (char)('0' + abs % 1000 / 100);
    *p++ = (char)('0' + abs % 100 / 10);
    *p++ = (char)('0' + abs % 10);
    static const char topic[] = "temperature";
    wb_publish(topic, sizeof topic - 1, text, (int32_t)(p - text));
    wb_led_set(0, mdeg > threshold);
}
