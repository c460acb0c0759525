/* Millisecond monotonic time from SysTick, clocked at the CPU frequency the device tree declares. */
#ifndef WB_TIME_H
#define WB_TIME_H

#include <stdint.h>

void wb_time_init(void);
uint64_t wb_uptime_ms(void);
/* Microseconds, from the SysTick down-counter between ticks (for benchmarks). */
uint64_t wb_uptime_us(void);
void wb_delay_ms(uint32_t ms);

#endif
