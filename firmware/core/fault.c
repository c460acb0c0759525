/*
 * Crash reporting. All fault exceptions enter wb_fault_entry, which finds the stacked exception
 * frame and hands it to fault_report(): the report names the fault type and its cause bits, the
 * faulting PC and LR, and the raw CFSR/HFSR/MMFAR/BFAR, then the board resets (reason: fault).
 * Printing uses the polled UART path only, so it works with interrupts masked.
 */
#include <stdint.h>

#include "wb_board.h"
#include "wb_console.h"
#include "wb_cortexm.h"
#include "wb_reset.h"

/* Stacked by hardware on exception entry. */
struct exception_frame {
    uint32_t r0, r1, r2, r3, r12, lr, pc, xpsr;
};

struct cause_bit {
    uint32_t mask;
    const char *name;
};

static const struct cause_bit cfsr_bits[] = {
    {1u << 0, "IACCVIOL"},   {1u << 1, "DACCVIOL"},  {1u << 3, "MUNSTKERR"}, {1u << 4, "MSTKERR"},
    {1u << 5, "MLSPERR"},    {1u << 8, "IBUSERR"},   {1u << 9, "PRECISERR"}, {1u << 10, "IMPRECISERR"},
    {1u << 11, "UNSTKERR"},  {1u << 12, "STKERR"},   {1u << 13, "LSPERR"},   {1u << 16, "UNDEFINSTR"},
    {1u << 17, "INVSTATE"},  {1u << 18, "INVPC"},    {1u << 19, "NOCP"},     {1u << 20, "STKOF"},
    {1u << 24, "UNALIGNED"}, {1u << 25, "DIVBYZERO"},
};

static const char *exception_name(uint32_t exc)
{
    switch (exc) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    case 7: return "SecureFault";
    default: return "UnexpectedException";
    }
}

__attribute__((used, noreturn)) void fault_report(const struct exception_frame *frame, uint32_t exc_return)
{
    wb_irq_lock();
    uint32_t exc = wb_ipsr() & 0x1FFu;
    uint32_t cfsr = SCB_CFSR;
    uint32_t hfsr = SCB_HFSR;

    wb_printf("\n*** FAULT: %s", exception_name(exc));
    for (unsigned i = 0; i < sizeof cfsr_bits / sizeof cfsr_bits[0]; i++) {
        if (cfsr & cfsr_bits[i].mask) {
            wb_printf(" %s", cfsr_bits[i].name);
        }
    }
    if (hfsr & (1u << 30)) {
        wb_printf(" FORCED");
    }
    if (hfsr & (1u << 1)) {
        wb_printf(" VECTTBL");
    }
    wb_printf("\n*** PC 0x%08lx LR 0x%08lx xPSR 0x%08lx EXC_RETURN 0x%08lx\n", (unsigned long)frame->pc,
              (unsigned long)frame->lr, (unsigned long)frame->xpsr, (unsigned long)exc_return);
    wb_printf("*** CFSR 0x%08lx HFSR 0x%08lx", (unsigned long)cfsr, (unsigned long)hfsr);
    if (cfsr & (1u << 7)) { /* MMARVALID */
        wb_printf(" MMFAR 0x%08lx", (unsigned long)SCB_MMFAR);
    }
    if (cfsr & (1u << 15)) { /* BFARVALID */
        wb_printf(" BFAR 0x%08lx", (unsigned long)SCB_BFAR);
    }
#if WB_CPU_ARMV8M
    if (exc == 7) {
        wb_printf(" SFSR 0x%08lx SFAR 0x%08lx", (unsigned long)SCB_SFSR, (unsigned long)SCB_SFAR);
    }
#endif
    wb_printf("\n*** R0 0x%08lx R1 0x%08lx R2 0x%08lx R3 0x%08lx R12 0x%08lx SP 0x%08lx\n",
              (unsigned long)frame->r0, (unsigned long)frame->r1, (unsigned long)frame->r2,
              (unsigned long)frame->r3, (unsigned long)frame->r12, (unsigned long)(uintptr_t)(frame + 1));
    wb_printf("*** rebooting\n");
    wb_reset(WB_RESET_FAULT);
}

/* EXC_RETURN bit 2 says which stack holds the frame. Branch (not call) so LR keeps EXC_RETURN. */
__attribute__((naked)) void wb_fault_entry(void)
{
    __asm volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "mov r1, lr\n"
        "b fault_report\n");
}

/* The recipe for the deliberately faulting test images (build variant fault-<kind>). */
#ifdef WB_FAULT_TEST
__attribute__((noinline, used)) void wb_fault_test_undefined_instruction(void)
{
    __asm volatile("udf #0");
}

__attribute__((noinline, used)) uint32_t wb_fault_test_bus_error(void)
{
    /* Outside every region the device tree declares: no device answers there. */
    return *(volatile uint32_t *)(uintptr_t)WB_FAULT_TEST_UNMAPPED_ADDR;
}

__attribute__((noinline, used)) int wb_fault_test_divide_by_zero(volatile int divisor)
{
    return 1000 / divisor;
}
#endif
