/*
 * The few Cortex-M system registers the firmware touches (ARMv7-M / ARMv8-M Mainline System Control
 * Space). Written out here rather than pulling in CMSIS: it is a dozen addresses, and each one is used.
 */
#ifndef WB_CORTEXM_H
#define WB_CORTEXM_H

#include <stdint.h>

#define WB_REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* SysTick */
#define SYST_CSR   WB_REG32(0xE000E010u)
#define SYST_RVR   WB_REG32(0xE000E014u)
#define SYST_CVR   WB_REG32(0xE000E018u)
#define SYST_CSR_ENABLE    (1u << 0)
#define SYST_CSR_TICKINT   (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2)

/* NVIC */
#define NVIC_ISER(n) WB_REG32(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) WB_REG32(0xE000E180u + 4u * (n))
#define NVIC_ICPR(n) WB_REG32(0xE000E280u + 4u * (n))

/* System Control Block */
#define SCB_CPUID  WB_REG32(0xE000ED00u)
#define SCB_ICSR   WB_REG32(0xE000ED04u)
#define SCB_VTOR   WB_REG32(0xE000ED08u)
#define SCB_AIRCR  WB_REG32(0xE000ED0Cu)
#define SCB_CCR    WB_REG32(0xE000ED14u)
#define SCB_SHCSR  WB_REG32(0xE000ED24u)
#define SCB_CFSR   WB_REG32(0xE000ED28u)
#define SCB_HFSR   WB_REG32(0xE000ED2Cu)
#define SCB_MMFAR  WB_REG32(0xE000ED34u)
#define SCB_BFAR   WB_REG32(0xE000ED38u)
#define SCB_CPACR  WB_REG32(0xE000ED88u)
#define SCB_SFSR   WB_REG32(0xE000EDE4u) /* ARMv8-M Security Extension only */
#define SCB_SFAR   WB_REG32(0xE000EDE8u)

#define SCB_AIRCR_RESET   (0x05FAu << 16 | (1u << 2)) /* VECTKEY | SYSRESETREQ */
#define SCB_CCR_DIV_0_TRP (1u << 4)
#define SCB_SHCSR_MEMFAULTENA (1u << 16)
#define SCB_SHCSR_BUSFAULTENA (1u << 17)
#define SCB_SHCSR_USGFAULTENA (1u << 18)
#define SCB_SHCSR_SECUREFAULTENA (1u << 19)

static inline void wb_irq_enable(unsigned irq) { NVIC_ISER(irq / 32u) = 1u << (irq % 32u); }
static inline void wb_irq_disable(unsigned irq) { NVIC_ICER(irq / 32u) = 1u << (irq % 32u); }
static inline void wb_irq_lock(void) { __asm volatile("cpsid i" ::: "memory"); }
static inline void wb_irq_unlock(void) { __asm volatile("cpsie i" ::: "memory"); }
static inline void wb_wait_for_interrupt(void) { __asm volatile("wfi"); }

static inline uint32_t wb_ipsr(void)
{
    uint32_t v;
    __asm volatile("mrs %0, ipsr" : "=r"(v));
    return v;
}

#endif
