/*
 * Reset and the vector table: C runtime set-up (.data copy, .bss clear, FPU enable), then main().
 * Every external interrupt line goes to one dispatcher (see wb_irq.h), so the table's shape depends
 * only on the NVIC line count the device tree declares.
 */
#include <stdint.h>
#include <string.h>

#include "wb_board.h"
#include "wb_cortexm.h"
#include "wb_irq.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);
extern int main(void);

void reset_handler(void);
void wb_fault_entry(void);
void wb_nmi_handler(void);
void wb_systick_handler(void);
static void irq_dispatch(void);
static void unexpected_exception(void);

typedef void (*vector_t)(void);

struct isr_slot {
    wb_isr_t fn;
    void *arg;
};
static struct isr_slot isr_table[WB_NUM_IRQS];

__attribute__((section(".vectors"), used)) static const vector_t vector_table[16 + WB_NUM_IRQS] = {
    [0] = (vector_t)(uintptr_t)&__stack_top,
    [1] = reset_handler,
    [2] = wb_nmi_handler,
    [3] = wb_fault_entry,      /* HardFault */
    [4] = wb_fault_entry,      /* MemManage */
    [5] = wb_fault_entry,      /* BusFault */
    [6] = wb_fault_entry,      /* UsageFault */
    [7] = wb_fault_entry,      /* SecureFault (ARMv8-M); reserved on ARMv7-M */
    [11] = unexpected_exception, /* SVCall */
    [12] = unexpected_exception, /* DebugMonitor */
    [14] = unexpected_exception, /* PendSV */
    [15] = wb_systick_handler,
    [16 ... 16 + WB_NUM_IRQS - 1] = irq_dispatch,
};

int wb_irq_connect(int irq, wb_isr_t fn, void *arg)
{
    if (irq < 0 || irq >= WB_NUM_IRQS) {
        return -1;
    }
    isr_table[irq].fn = fn;
    isr_table[irq].arg = arg;
    wb_irq_enable((unsigned)irq);
    return 0;
}

static void irq_dispatch(void)
{
    unsigned irq = (wb_ipsr() & 0x1FFu) - 16u;
    if (irq < WB_NUM_IRQS && isr_table[irq].fn != 0) {
        isr_table[irq].fn(isr_table[irq].arg);
    } else {
        wb_irq_disable(irq); /* a line nobody handles would otherwise fire forever */
    }
}

static void unexpected_exception(void)
{
    wb_fault_entry();
}

__attribute__((noreturn)) void reset_handler(void)
{
    /* The vector table is linked at the start of the code region; make sure VTOR agrees on every
     * board (STM32 boots through the flash alias at 0). */
    SCB_VTOR = (uint32_t)(uintptr_t)vector_table;
#if WB_CPU_HAS_FPU
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access before any floating-point instruction */
    __asm volatile("dsb\n isb");
#endif
    memcpy(&__data_start, &__data_load, (size_t)((char *)&__data_end - (char *)&__data_start));
    memset(&__bss_start, 0, (size_t)((char *)&__bss_end - (char *)&__bss_start));
    for (void (**ctor)(void) = __init_array_start; ctor < __init_array_end; ctor++) {
        (*ctor)(); /* constructors, if any library has them (no crt0: -nostartfiles) */
    }
    main();
    for (;;) {
        wb_wait_for_interrupt();
    }
}
