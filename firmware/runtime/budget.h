/*
 * Per-call time budget for WASM handlers. wasm3 has no fuel or interrupt mechanism, so:
 *
 *  1. The SysTick hook checks the running call's deadline every millisecond. Once it has passed and
 *     the interrupted instruction lies inside wasm3's opcode handlers (the linker script gathers
 *     them, .text.wasm_ops, between __wasm_ops_start and __wasm_ops_end), it rewrites the stacked
 *     return address so the exception returns into wb_budget_trap(), which longjmp()s back to the
 *     call site. Opcode handlers only interpret: they never hold the heap or a half-updated
 *     allocation (allocation happens in functions outside that range), so abandoning them loses
 *     nothing once the app's runtime is freed — which the caller then does.
 *  2. When the deadline passes while the interrupted code is elsewhere (a host function, newlib,
 *     the lazy compiler), the tick does nothing and tries again 1 ms later; wasm3 also calls
 *     m3_Yield() on every call instruction, which returns a trap once the budget has run out.
 */
#ifndef WB_BUDGET_H
#define WB_BUDGET_H

#include <setjmp.h>
#include <stdint.h>

#define WB_BUDGET_TRAP "time budget exceeded"

/* Arm before calling into WASM (after setjmp(*wb_budget_jmp()) returned 0); disarm after. */
void wb_budget_arm(uint32_t budget_ms);
void wb_budget_disarm(void);
jmp_buf *wb_budget_jmp(void);

#endif
