/* SysTick millisecond clock. The reload value derives from the CPU clock in the device tree. */
#include "wb_time.h"

#include "wb_board.h"
#include "wb_cortexm.h"

static volatile uint64_t ticks_ms;

/* Called every tick with the interrupted context's stacked frame (r0-r3, r12, lr, pc, xpsr). A layer
 * that must act on what was interrupted (the WASM time budget) overrides this weak default. */
__attribute__((weak)) void wb_tick_hook(uint32_t *frame, uint64_t now_ms)
{
    (void)frame;
    (void)now_ms;
}

__attribute__((used)) void wb_systick_c(uint32_t *frame)
{
    ticks_ms++;
    wb_tick_hook(frame, ticks_ms);
}

/* Naked entry: hand the C part the stacked frame of whatever we interrupted. EXC_RETURN bit 2
 * says which stack holds it; a branch (not a call) keeps LR = EXC_RETURN for the return. */
__attribute__((naked)) void wb_systick_handler(void)
{
    __asm volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b wb_systick_c\n");
}

void wb_time_init(void)
{
    SYST_RVR = WB_CPU_CLOCK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

uint64_t wb_uptime_ms(void)
{
    uint64_t a, b;
    do { /* a 64-bit read is two loads: retry if the tick interrupt landed between them */
        a = ticks_ms;
        b = ticks_ms;
    } while (a != b);
    return a;
}

uint64_t wb_uptime_us(void)
{
    const uint32_t per_ms = WB_CPU_CLOCK_HZ / 1000u;
    uint64_t ms;
    uint32_t cvr;
    do { /* sample the ms count and the down-counter consistently (no tick in between) */
        ms = wb_uptime_ms();
        cvr = SYST_CVR;
    } while (ms != wb_uptime_ms());
    return ms * 1000u + (uint64_t)(per_ms - 1u - cvr) * 1000u / per_ms;
}

void wb_delay_ms(uint32_t ms)
{
    uint64_t until = wb_uptime_ms() + ms;
    while (wb_uptime_ms() < until) {
        wb_wait_for_interrupt();
    }
}
