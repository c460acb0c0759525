/* SysTick millisecond clock. The reload value derives from the CPU clock in the device tree. */
#include "wb_time.h"

#include "wb_board.h"
#include "wb_cortexm.h"

static volatile uint64_t ticks_ms;

void wb_systick_handler(void)
{
    ticks_ms++;
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

void wb_delay_ms(uint32_t ms)
{
    uint64_t until = wb_uptime_ms() + ms;
    while (wb_uptime_ms() < until) {
        wb_wait_for_interrupt();
    }
}
