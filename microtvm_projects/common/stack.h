/* Peak stack by painting: the free RAM between .bss and the top of RAM is the stack; it is
 * filled with a pattern at reset and scanned for the deepest overwritten word. */
#ifndef PATCHNET_STACK_H
#define PATCHNET_STACK_H

#include <stdint.h>

#define STACK_PAINT 0xC5A5C5A5u
/* Bytes at the bottom of the stack made inaccessible by the MPU, so an overflow faults
 * (and is reported) instead of silently overwriting .bss (the model's arena). */
#define STACK_GUARD_BYTES 32u

void stack_paint_all(void);          /* reset: paint [limit, sp) */
void stack_guard_enable(void);       /* MPU region over the guard */
uint32_t stack_usable_bytes(void);   /* top - limit - guard */
/* Bytes between the top of RAM and the deepest word ever written. */
uint32_t stack_peak_bytes(void);
/* Repaint below the current frame; returns the sp it painted up to (for stack_used_below). */
uintptr_t stack_repaint_below_sp(void);
/* Bytes used below sp since stack_repaint_below_sp returned sp. */
uint32_t stack_used_below(uintptr_t sp);
/* 1 if the guard was reached (the stack needs more than the free RAM). */
int stack_overflowed(void);

#endif
