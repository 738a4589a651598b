/* Stack painting and the MPU stack guard (see stack.h). No interrupts are enabled, so
 * nothing but the current call chain ever writes below sp: painting there is safe. */
#include "stack.h"

extern uint32_t __stack_limit[], __stack_top[]; /* link.ld */

#define MPU_TYPE  (*(volatile uint32_t *)0xE000ED90u)
#define MPU_CTRL  (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR   (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR  (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR  (*(volatile uint32_t *)0xE000EDA0u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)

static uintptr_t lifetime_low; /* deepest stack address seen by any scan so far */

static inline uintptr_t current_sp(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static uint32_t *bottom(void) /* first word above the guard */
{
    return (uint32_t *)((uintptr_t)__stack_limit + STACK_GUARD_BYTES);
}

/* Paints [from, sp of the caller). In asm, naked and leaf: C code may push registers after
 * reading sp (gcc did), and painting would then overwrite its own saved registers. */
__attribute__((naked)) static void paint_to_sp(uint32_t *from)
{
    __asm__ volatile(
        "    ldr  r1, =0xC5A5C5A5 \n" /* STACK_PAINT */
        "    mov  r2, sp          \n"
        "1:  cmp  r0, r2          \n"
        "    bhs  2f              \n"
        "    str  r1, [r0], #4    \n"
        "    b    1b              \n"
        "2:  bx   lr              \n"
        "    .ltorg               \n");
}

void stack_paint_all(void)
{
    paint_to_sp(__stack_limit);
    lifetime_low = (uintptr_t)__stack_top;
}

void stack_guard_enable(void)
{
    if (((MPU_TYPE >> 8) & 0xFFu) == 0)
        return; /* no MPU: painting still reports the overflow afterwards */
    MPU_RNR = 0;
    MPU_RBAR = (uintptr_t)__stack_limit; /* 32-byte aligned by link.ld */
    /* XN | AP=000 (no access) | SIZE=4 (2^(4+1) = 32 bytes) | ENABLE */
    MPU_RASR = (1u << 28) | (4u << 1) | 1u;
    SCB_SHCSR |= 1u << 16;   /* MemManage faults go to their own handler, not HardFault */
    MPU_CTRL = (1u << 2) | 1u; /* PRIVDEFENA: default map everywhere else | ENABLE */
    __asm__ volatile("dsb\n isb" ::: "memory");
}

uint32_t stack_usable_bytes(void)
{
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)bottom());
}

static uintptr_t deepest(void)
{
    uint32_t *p = bottom();
    uintptr_t sp = current_sp();
    while ((uintptr_t)p < sp && *p == STACK_PAINT)
        p++;
    return (uintptr_t)p;
}

uint32_t stack_peak_bytes(void)
{
    uintptr_t d = deepest();
    if (d < lifetime_low)
        lifetime_low = d;
    return (uint32_t)((uintptr_t)__stack_top - lifetime_low);
}

uintptr_t stack_repaint_below_sp(void)
{
    (void)stack_peak_bytes(); /* keep the lifetime peak before repainting over it */
    paint_to_sp((uint32_t *)lifetime_low);
    return current_sp();
}

uint32_t stack_used_below(uintptr_t sp)
{
    uintptr_t d = deepest();
    return d < sp ? (uint32_t)(sp - d) : 0;
}

int stack_overflowed(void)
{
    return *bottom() != STACK_PAINT;
}
