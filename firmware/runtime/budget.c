#include "budget.h"

#include "wb_time.h"
#include "wasm3.h"

extern char __wasm_ops_start, __wasm_ops_end;

static jmp_buf budget_jmp;
static volatile uint64_t deadline_ms; /* 0: no WASM call running */
static volatile int expired;

jmp_buf *wb_budget_jmp(void)
{
    return &budget_jmp;
}

void wb_budget_arm(uint32_t budget_ms)
{
    expired = 0;
    deadline_ms = wb_uptime_ms() + budget_ms;
}

void wb_budget_disarm(void)
{
    deadline_ms = 0;
    expired = 0;
}

/* Where an aborted call resumes (in thread mode, on the interpreter's stack). */
static __attribute__((noreturn, used)) void wb_budget_trap(void)
{
    deadline_ms = 0;
    longjmp(budget_jmp, 1);
}

void wb_tick_hook(uint32_t *frame, uint64_t now)
{
    uint64_t d = deadline_ms;
    if (d == 0 || now < d) {
        return;
    }
    expired = 1;
    uintptr_t pc = frame[6];
    if (pc >= (uintptr_t)&__wasm_ops_start && pc < (uintptr_t)&__wasm_ops_end) {
        deadline_ms = 0;
        frame[6] = (uint32_t)(uintptr_t)wb_budget_trap & ~1u;
        /* Thumb state only: drop IT/ICI bits of the abandoned instruction; keep bit 9, which
         * records whether the hardware realigned the stack for this frame. */
        frame[7] = (frame[7] & (1u << 9)) | (1u << 24);
    }
}

/* wasm3 calls this (weakly defined there) on every call instruction. */
M3Result m3_Yield(void)
{
    return expired ? "[trap] " WB_BUDGET_TRAP : m3Err_none;
}
