/*
 * Boot: bring up time and the console, report what this board is (all from the device tree via
 * board_gen.h) and why it last reset, then run the main loop. Later layers (TLS link, WASM
 * runtime, app manager) hook into the loop; which of them a board gets is decided by its profile.
 */
#include <stdint.h>

#include "wb_board.h"
#include "wb_console.h"
#include "wb_cortexm.h"
#include "wb_reset.h"
#include "wb_time.h"
#include "wb_uart.h"
#include "wb_watchdog.h"
#if WB_CAP_TLS_LINK
#include "link.h"
#endif

extern char __vector_table, __data_start, __data_end, __data_load;
size_t wb_heap_size(void);

#ifdef WB_BENCH_FIB
/* The compute benchmark's native side: the same recursion as apps/c/fib.c, so the two can be
 * compared on one board (run under QEMU -icount for instruction-accurate time). */
__attribute__((noinline)) static uint32_t fib(uint32_t n)
{
    return n < 2u ? n : fib(n - 1u) + fib(n - 2u);
}

static void bench_fib(void)
{
    volatile uint32_t n = WB_BENCH_FIB;
    uint64_t t0 = wb_uptime_us();
    uint32_t r = fib(n);
    uint64_t t1 = wb_uptime_us();
    wb_printf("bench: native fib(%lu) = %lu in %lu us\n", (unsigned long)n, (unsigned long)r,
              (unsigned long)(t1 - t0));
}
#endif

#ifdef WB_BENCH_UART_SINK
/* The raw side of the link benchmark: count bytes arriving on the link UART with the same driver
 * and ring the TLS link uses, and report the total every 100 ms while it grows. */
static uint8_t sink_ring[4096];

static void bench_uart_sink(void)
{
    wb_uart_t u = {.base = WB_LINK_UART_BASE, .irq_rx = WB_LINK_UART_IRQ_RX, .irq_tx = -1,
                   .baud = WB_LINK_UART_BAUD, .clock_hz = WB_LINK_UART_CLOCK_HZ,
                   .rx_buf = sink_ring, .rx_size = sizeof sink_ring};
    wb_uart_init(&u);
    wb_printf("bench: uart sink ready\n");
    uint8_t buf[256];
    uint64_t total = 0, reported = 0, next = 0;
    for (;;) {
        size_t n = wb_uart_read(&u, buf, sizeof buf);
        total += n;
        uint64_t now = wb_uptime_ms();
        if (now >= next && total != reported) {
            wb_printf("bench: uart sink %lu bytes at %lu ms\n", (unsigned long)total, (unsigned long)now);
            reported = total;
            next = now + 100;
        }
#if WB_HAS_WATCHDOG
        wb_watchdog_kick();
#endif
        if (n == 0) {
            wb_wait_for_interrupt();
        }
    }
}
#endif

#ifdef WB_FAULT_TEST
void wb_fault_test_undefined_instruction(void);
uint32_t wb_fault_test_bus_error(void);
int wb_fault_test_divide_by_zero(volatile int divisor);
#endif

static const char *const profile_lacks[] = WB_PROFILE_LACKS;

static void enable_fault_exceptions(void)
{
    /* Report MemManage/BusFault/UsageFault as themselves rather than escalated HardFaults, and trap
     * integer division by zero instead of silently returning 0. */
    uint32_t shcsr = SCB_SHCSR_MEMFAULTENA | SCB_SHCSR_BUSFAULTENA | SCB_SHCSR_USGFAULTENA;
#if WB_CPU_ARMV8M
    shcsr |= SCB_SHCSR_SECUREFAULTENA;
#endif
    SCB_SHCSR |= shcsr;
    SCB_CCR |= SCB_CCR_DIV_0_TRP;
}

static void print_banner(wb_reset_reason_t reason, uint32_t boots)
{
    uintptr_t image_end = (uintptr_t)&__data_load + (uintptr_t)(&__data_end - &__data_start);
    unsigned long image = (unsigned long)(image_end - (uintptr_t)&__vector_table);

    wb_printf("\n\nwasmbed firmware %s\n", WB_FIRMWARE_VERSION);
    wb_printf("board   : %s \"%s\"\n", WB_BOARD_NAME, WB_BOARD_MODEL);
    wb_printf("cpu     : %s @ %lu MHz, FPU %s, CPUID 0x%08lx\n", WB_CPU_NAME,
              (unsigned long)(WB_CPU_CLOCK_HZ / 1000000u), WB_CPU_HAS_FPU ? "yes" : "no",
              (unsigned long)SCB_CPUID);
    wb_printf("ram     : %lu bytes (%lu KiB) @ 0x%08lx, heap %lu KiB\n", (unsigned long)WB_RAM_SIZE,
              (unsigned long)(WB_RAM_SIZE / 1024u), (unsigned long)WB_RAM_BASE,
              (unsigned long)(wb_heap_size() / 1024u));
    wb_printf("flash   : %lu bytes (%lu KiB) @ 0x%08lx, image %lu bytes\n", (unsigned long)WB_FLASH_SIZE,
              (unsigned long)(WB_FLASH_SIZE / 1024u), (unsigned long)WB_FLASH_BASE, image);
    wb_printf("reset   : %s (boot %lu)\n", wb_reset_reason_name(reason), (unsigned long)boots);
    wb_printf("profile : %s (%s)\n", WB_PROFILE_NAME, WB_PROFILE_CAPS);
    for (unsigned i = 0; i < sizeof profile_lacks / sizeof profile_lacks[0]; i++) {
        if (profile_lacks[i][0] != '\0') {
            wb_printf("lacks   : %s\n", profile_lacks[i]);
        }
    }
#if WB_HAS_WATCHDOG
    wb_printf("watchdog: %lu ms\n", (unsigned long)WB_WATCHDOG_TIMEOUT_MS);
#else
    wb_printf("watchdog: none on this board\n");
#endif
}

void wb_nmi_handler(void)
{
#if WB_HAS_WATCHDOG
    if (wb_watchdog_fired()) {
        /* First expiry: the main loop stopped kicking. Record why; the second expiry resets us. */
        wb_reset_record(WB_RESET_WATCHDOG);
        wb_printf("\n*** watchdog expired: main loop stalled, resetting\n");
        for (;;) {
        }
    }
#endif
}

int main(void)
{
    uint32_t boots = 0;
    wb_reset_reason_t reason = wb_reset_reason_take(&boots);
    enable_fault_exceptions();
    wb_console_init();
    wb_time_init();
    print_banner(reason, boots);
#if WB_HAS_WATCHDOG
    wb_watchdog_start(WB_WATCHDOG_TIMEOUT_MS);
#endif

#ifdef WB_BENCH_FIB
    bench_fib();
#endif
#ifdef WB_BENCH_UART_SINK
    bench_uart_sink();
#endif
#ifdef WB_FAULT_TEST
    wb_printf("fault-test: triggering %s\n", WB_FAULT_TEST);
    wb_delay_ms(1);
    if (WB_FAULT_TEST[0] == 'u') {
        wb_fault_test_undefined_instruction();
    } else if (WB_FAULT_TEST[0] == 'b') {
        wb_printf("fault-test: read 0x%08lx\n", (unsigned long)wb_fault_test_bus_error());
    } else {
        wb_printf("fault-test: 1000/0 = %d\n", wb_fault_test_divide_by_zero(0));
    }
#endif

#if WB_CAP_TLS_LINK
    int link_up = wb_link_init() == 0;
#endif
    wb_printf("wasmbed: ready\n");
    for (;;) {
#if WB_HAS_WATCHDOG
        wb_watchdog_kick();
#endif
#if WB_CAP_TLS_LINK
        if (link_up) {
            wb_link_poll(wb_uptime_ms()); /* returns as soon as it has no bytes to work on */
        }
#endif
        wb_wait_for_interrupt(); /* SysTick or UART RX wakes us */
    }
}
