/* The app manager (see apps.h). */
#include "apps.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "host.h"
#include "m3_env.h" /* wasm3 internals: the runtime's memory limit and linear memory header */
#include "mbedtls/sha256.h"
#include "wasm3.h"
#include "wb_board.h"
#include "wb_console.h"
#include "wb_time.h"

#define WASM_STACK_BYTES (8u * 1024u) /* wasm3 value stack per app; bounds recursion depth */

size_t wb_heap_unclaimed(void);

static wb_app apps[WB_APPS_MAX];
static const wb_app_sink *sink;
wb_app *wb_current_app;

/* ---- bookkeeping --------------------------------------------------------------------------------- */

static wb_app *find(uint32_t id)
{
    for (int i = 0; i < WB_APPS_MAX; i++) {
        if (apps[i].used && apps[i].id == id) {
            return &apps[i];
        }
    }
    return 0;
}

static void report_of(const wb_app *a, wb_app_report *r)
{
    r->app_id = a->id;
    r->state = a->state;
    r->error = a->error;
    r->restarts = a->restarts;
    r->calls = a->calls;
    r->traps = a->traps;
    r->mem_pages = (a->rt != 0 && a->rt->memory.mallocated != 0) ? a->rt->memory.numPages : 0;
    r->max_call_ms = a->max_call_ms;
}

static void publish_status(wb_app *a)
{
    if (sink != 0 && sink->status != 0) {
        wb_app_report r;
        report_of(a, &r);
        sink->status(&r);
    }
}

static void set_error(wb_app *a, const char *msg, const char *detail)
{
    if (detail != 0 && detail[0] != '\0') {
        wb_snprintf(a->error, sizeof a->error, "%s: %s", msg, detail);
    } else {
        wb_snprintf(a->error, sizeof a->error, "%s", msg);
    }
}

/* Free the wasm3 runtime (module, linear memory, compiled code). Memory goes back to the heap. */
static void unload(wb_app *a)
{
    if (a->rt != 0) {
        m3_FreeRuntime(a->rt); /* frees the loaded module too */
    } else if (a->mod != 0) {
        m3_FreeModule(a->mod);
    }
    if (a->env != 0) {
        m3_FreeEnvironment(a->env); /* its type cache and recycled code pages go too */
    }
    a->rt = 0;
    a->mod = 0;
    a->env = 0;
    a->f_start = a->f_stop = a->f_timer = a->f_message = a->f_msgbuf = 0;
    memset(a->timers, 0, sizeof a->timers);
}

static void release(wb_app *a)
{
    unload(a);
    free(a->module);
    free(a->config);
    memset(a, 0, sizeof *a);
}

static void fail(wb_app *a, const char *msg, const char *detail)
{
    set_error(a, msg, detail);
    a->traps++;
    unload(a);
    a->state = WB_APP_FAILED;
    wb_printf("app %lu (%s): failed: %s\n", (unsigned long)a->id, a->name, a->error);
    publish_status(a); /* the gateway applies the restart policy (docs/protocol.md) */
}

/* ---- calling into WASM ----------------------------------------------------------------------------- */

/* Run one export under the app's time budget. Returns 0, or -1 after failing the app. */
static int call(wb_app *a, IM3Function f, uint32_t argc, const void **argv, int32_t *result)
{
    /* Locals that must survive the longjmp are volatile (C11 7.13.2.1). */
    volatile uint64_t t0 = wb_uptime_ms();
    wb_current_app = a;
    a->calls++;
    if (setjmp(*wb_budget_jmp()) != 0) {
        wb_budget_disarm();
        wb_current_app = 0;
        fail(a, WB_BUDGET_TRAP, "");
        return -1;
    }
    m3_ResetErrorInfo(a->rt); /* lookups of optional exports leave stale messages behind */
    wb_budget_arm(a->budget_ms);
    M3Result r = m3_Call(f, argc, argv);
    wb_budget_disarm();
    wb_current_app = 0;
    uint32_t took = (uint32_t)(wb_uptime_ms() - t0);
    if (took > a->max_call_ms) {
        a->max_call_ms = took;
    }
    if (r != m3Err_none) {
        if (strstr(r, WB_BUDGET_TRAP) != 0) {
            fail(a, WB_BUDGET_TRAP, "");
        } else {
            M3ErrorInfo info;
            m3_GetErrorInfo(a->rt, &info);
            fail(a, r, info.message);
        }
        return -1;
    }
    if (result != 0) {
        const void *rets[1] = {result};
        if (m3_GetResults(f, 1, rets) != m3Err_none) {
            *result = 0;
        }
    }
    return 0;
}

static IM3Function optional(wb_app *a, const char *name)
{
    IM3Function f = 0;
    return m3_FindFunction(&f, a->rt, name) == m3Err_none ? f : 0;
}

/* Parse, link and start a received module. */
static wb_app_code load_and_start(wb_app *a, char *err, size_t errlen)
{
    /* One environment per app as well: wasm3 caches function types and recycles code pages in the
     * environment, so a shared one would keep memory after the last app is gone. */
    a->env = m3_NewEnvironment();
    IM3Runtime rt = a->env != 0 ? m3_NewRuntime(a->env, WASM_STACK_BYTES, a) : 0;
    if (rt == 0) {
        unload(a);
        wb_snprintf(err, errlen, "no memory for a runtime (%u bytes free)", (unsigned)wb_heap_unclaimed());
        return WB_APP_NO_MEMORY;
    }
    rt->memoryLimit = a->mem_pages * 65536u; /* memory.grow beyond this fails in the app */
    IM3Module mod = 0;
    M3Result r = m3_ParseModule(a->env, &mod, a->module, a->size);
    if (r == m3Err_none) {
        r = m3_LoadModule(rt, mod);
        if (r != m3Err_none) {
            m3_FreeModule(mod);
        }
    }
    a->rt = rt;
    if (r == m3Err_none) {
        a->mod = mod;
        r = wb_host_link(mod);
    }
    if (r == m3Err_none) {
        r = m3_FindFunction(&a->f_start, rt, "app_start");
    }
    if (r != m3Err_none) {
        M3ErrorInfo info;
        m3_GetErrorInfo(rt, &info);
        wb_snprintf(err, errlen, "%s%s%s", r, info.message ? ": " : "", info.message ? info.message : "");
        unload(a);
        return WB_APP_LOAD_FAILED;
    }
    a->f_stop = optional(a, "app_stop");
    a->f_timer = optional(a, "on_timer");
    a->f_message = optional(a, "on_message");
    a->f_msgbuf = optional(a, "msg_buffer");
    int32_t rc = 0;
    if (call(a, a->f_start, 0, 0, &rc) != 0) {
        wb_snprintf(err, errlen, "%s", a->error);
        return WB_APP_START_FAILED;
    }
    if (rc != 0) {
        set_error(a, "app_start returned an error", "");
        wb_snprintf(a->error, sizeof a->error, "app_start returned %ld", (long)rc);
        wb_snprintf(err, errlen, "%s", a->error);
        unload(a);
        a->state = WB_APP_FAILED;
        publish_status(a);
        return WB_APP_START_FAILED;
    }
    a->state = WB_APP_RUNNING;
    a->error[0] = '\0';
    wb_printf("app %lu (%s): running (%lu bytes, %lu pages max, budget %lu ms)\n", (unsigned long)a->id, a->name,
              (unsigned long)a->size, (unsigned long)a->mem_pages, (unsigned long)a->budget_ms);
    publish_status(a);
    return WB_APP_OK;
}

/* ---- public ---------------------------------------------------------------------------------------- */

const wb_app_sink *wb_apps_sink(void)
{
    return sink;
}

int wb_apps_init(const wb_app_sink *s)
{
    sink = s;
    return 0;
}

uint32_t wb_apps_max_module_size(void)
{
    /* A module must fit next to its own runtime and at least one memory page: a quarter of the heap
     * that is still free at boot, capped at 1 MiB. */
    size_t quarter = wb_heap_unclaimed() / 4u;
    return (uint32_t)(quarter > (1u << 20) ? (1u << 20) : quarter);
}

wb_app_code wb_apps_deploy_begin(const wb_deploy_spec *spec, uint32_t *next_offset, char *err, size_t errlen)
{
    *next_offset = 0;
    err[0] = '\0';
    uint32_t max = wb_apps_max_module_size();
    if (spec->size > max) {
        wb_snprintf(err, errlen, "module of %lu bytes exceeds this device's %lu-byte limit",
                    (unsigned long)spec->size, (unsigned long)max);
        return WB_APP_TOO_LARGE;
    }
    wb_app *a = find(spec->app_id);
    if (a != 0) {
        /* A new transfer of an app we hold (update, or a restart after a link drop): stop and drop
         * the old one first — the gateway decided. */
        if (a->state == WB_APP_RUNNING && a->f_stop != 0) {
            call(a, a->f_stop, 0, 0, 0);
        }
        release(a);
    }
    for (int i = 0; i < WB_APPS_MAX && a == 0; i++) {
        if (!apps[i].used) {
            a = &apps[i];
        }
    }
    if (a == 0) {
        wb_snprintf(err, errlen, "all %d app slots are in use", WB_APPS_MAX);
        return WB_APP_BUSY;
    }
    memset(a, 0, sizeof *a);
    a->module = malloc(spec->size ? spec->size : 1u);
    a->config = spec->config_len ? malloc(spec->config_len) : 0;
    if (a->module == 0 || (spec->config_len && a->config == 0)) {
        free(a->module);
        free(a->config);
        memset(a, 0, sizeof *a);
        wb_snprintf(err, errlen, "no memory for a %lu-byte module", (unsigned long)spec->size);
        return WB_APP_NO_MEMORY;
    }
    a->used = 1;
    a->id = spec->app_id;
    size_t n = spec->name_len < WB_APP_NAME_MAX ? spec->name_len : WB_APP_NAME_MAX;
    memcpy(a->name, spec->name, n);
    a->name[n] = '\0';
    a->size = spec->size;
    memcpy(a->sha256, spec->sha256, 32);
    if (spec->config_len) {
        memcpy(a->config, spec->config, spec->config_len);
    }
    a->config_len = spec->config_len;
    a->mem_pages = spec->mem_pages;
    a->budget_ms = spec->time_budget_ms ? spec->time_budget_ms : 1000u;
    a->restart = spec->restart;
    a->state = WB_APP_DEPLOYING;
    wb_printf("app %lu (%s): receiving %lu bytes\n", (unsigned long)a->id, a->name, (unsigned long)a->size);
    return WB_APP_OK;
}

wb_app_code wb_apps_deploy_chunk(uint32_t app_id, uint32_t offset, const uint8_t *data, size_t len,
                                 uint32_t *next_offset, char *err, size_t errlen)
{
    err[0] = '\0';
    wb_app *a = find(app_id);
    if (a == 0 || a->state != WB_APP_DEPLOYING) {
        *next_offset = 0;
        wb_snprintf(err, errlen, "no transfer in progress for app %lu", (unsigned long)app_id);
        return WB_APP_UNKNOWN_APP;
    }
    *next_offset = a->received;
    if (offset != a->received || len > a->size - a->received) {
        wb_snprintf(err, errlen, "chunk at %lu+%u, expected offset %lu of %lu", (unsigned long)offset,
                    (unsigned)len, (unsigned long)a->received, (unsigned long)a->size);
        return WB_APP_BAD_OFFSET;
    }
    memcpy(a->module + offset, data, len);
    a->received += (uint32_t)len;
    *next_offset = a->received;
    return WB_APP_OK;
}

wb_app_code wb_apps_deploy_commit(uint32_t app_id, uint32_t *next_offset, char *err, size_t errlen)
{
    err[0] = '\0';
    *next_offset = 0;
    wb_app *a = find(app_id);
    if (a == 0 || a->state != WB_APP_DEPLOYING) {
        wb_snprintf(err, errlen, "no transfer in progress for app %lu", (unsigned long)app_id);
        return WB_APP_UNKNOWN_APP;
    }
    *next_offset = a->received;
    if (a->received != a->size) {
        wb_snprintf(err, errlen, "commit after %lu of %lu bytes", (unsigned long)a->received,
                    (unsigned long)a->size);
        return WB_APP_BAD_OFFSET;
    }
    uint8_t digest[32];
    mbedtls_sha256(a->module, a->size, digest, 0);
    if (memcmp(digest, a->sha256, 32) != 0) {
        wb_snprintf(err, errlen, "sha256 of the received module does not match; transfer discarded");
        release(a);
        *next_offset = 0;
        return WB_APP_HASH_MISMATCH;
    }
    wb_app_code rc = load_and_start(a, err, errlen);
    if (rc == WB_APP_LOAD_FAILED || rc == WB_APP_NO_MEMORY) {
        a->state = WB_APP_FAILED;
        wb_snprintf(a->error, sizeof a->error, "%s", err);
        publish_status(a);
    }
    return rc;
}

void wb_apps_link_lost(void)
{
    for (int i = 0; i < WB_APPS_MAX; i++) {
        if (apps[i].used && apps[i].state == WB_APP_DEPLOYING) {
            wb_printf("app %lu (%s): transfer interrupted at %lu of %lu bytes; discarded\n",
                      (unsigned long)apps[i].id, apps[i].name, (unsigned long)apps[i].received,
                      (unsigned long)apps[i].size);
            release(&apps[i]);
        }
    }
}

wb_app_code wb_apps_start(uint32_t app_id)
{
    wb_app *a = find(app_id);
    if (a == 0 || a->state == WB_APP_DEPLOYING) {
        return WB_APP_UNKNOWN_APP;
    }
    if (a->state == WB_APP_RUNNING) {
        return WB_APP_OK;
    }
    char err[WB_APP_ERROR_MAX + 1];
    if (a->calls > 0) {
        a->restarts++; /* counts starts after the first one (docs/protocol.md) */
    }
    return load_and_start(a, err, sizeof err);
}

wb_app_code wb_apps_stop(uint32_t app_id, int remove)
{
    wb_app *a = find(app_id);
    if (a == 0) {
        return WB_APP_UNKNOWN_APP;
    }
    if (a->state == WB_APP_RUNNING && a->f_stop != 0) {
        call(a, a->f_stop, 0, 0, 0); /* a failing app_stop still stops the app */
    }
    unload(a);
    if (a->state != WB_APP_FAILED) {
        a->state = WB_APP_STOPPED;
    }
    wb_printf("app %lu (%s): %s\n", (unsigned long)a->id, a->name, remove ? "removed" : "stopped");
    if (remove) {
        wb_app_report r;
        report_of(a, &r);
        r.state = WB_APP_STOPPED;
        release(a);
        if (sink != 0 && sink->status != 0) {
            sink->status(&r);
        }
    } else {
        publish_status(a);
    }
    return WB_APP_OK;
}

int wb_apps_report(uint32_t app_id, wb_app_report *out)
{
    wb_app *a = find(app_id);
    if (a == 0) {
        return 0;
    }
    report_of(a, out);
    return 1;
}

void wb_apps_message(uint32_t app_id, const char *topic, size_t topic_len, const uint8_t *data, size_t len)
{
    wb_app *a = find(app_id);
    if (a == 0 || a->state != WB_APP_RUNNING || a->f_message == 0 || a->f_msgbuf == 0) {
        return;
    }
    /* The app says where messages go (its msg_buffer() export), then gets on_message. */
    int32_t buf = 0;
    if (call(a, a->f_msgbuf, 0, 0, &buf) != 0) {
        return;
    }
    if (wb_host_copy_message(a, buf, topic, topic_len, data, len) != 0) {
        fail(a, "msg_buffer() returned an area outside linear memory", "");
        return;
    }
    uint32_t topic_ptr = (uint32_t)buf, data_ptr = (uint32_t)buf + WB_MESSAGE_TOPIC_MAX;
    uint32_t tl = (uint32_t)topic_len, dl = (uint32_t)len;
    const void *argv[4] = {&topic_ptr, &tl, &data_ptr, &dl};
    call(a, a->f_message, 4, argv, 0);
}

void wb_apps_poll(uint64_t now)
{
    for (int i = 0; i < WB_APPS_MAX; i++) {
        wb_app *a = &apps[i];
        if (!a->used) {
            continue;
        }
        if (a->state != WB_APP_RUNNING || a->f_timer == 0) {
            continue;
        }
        for (int t = 0; t < WB_APP_TIMERS_MAX && a->state == WB_APP_RUNNING; t++) {
            wb_app_timer *tm = &a->timers[t];
            if (!tm->active || now < tm->due) {
                continue;
            }
            if (tm->repeat) {
                tm->due += tm->period_ms;
                if (tm->due <= now) {
                    tm->due = now + tm->period_ms; /* we fell behind: skip, do not burst */
                }
            } else {
                tm->active = 0;
            }
            int32_t id = tm->id;
            const void *argv[1] = {&id};
            call(a, a->f_timer, 1, argv, 0);
        }
    }
}

size_t wb_apps_states(uint32_t *ids, uint32_t *states, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < WB_APPS_MAX && n < max; i++) {
        if (apps[i].used) {
            ids[n] = apps[i].id;
            states[n] = apps[i].state;
            n++;
        }
    }
    return n;
}
