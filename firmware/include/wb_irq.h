/*
 * External interrupts. The vector table points every NVIC line at one dispatcher which looks the
 * handler up by IPSR, so drivers attach at run time with no per-board vector table.
 */
#ifndef WB_IRQ_H
#define WB_IRQ_H

typedef void (*wb_isr_t)(void *arg);

/* Attach fn to NVIC line irq and enable the line. Returns 0, or -1 if irq is out of range. */
int wb_irq_connect(int irq, wb_isr_t fn, void *arg);

#endif
