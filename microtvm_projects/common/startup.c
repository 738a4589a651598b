/* Cortex-M start-up shared by all boards: vector table (system exceptions only: the firmware
 * polls and enables no interrupt), .data copy, .bss zeroing, FPU enable, stack painting. */
#include <stdint.h>
#include "board.h"
#include "stack.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
extern const uint32_t vector_table[];
int main(void);
void fault_report(uint32_t exception); /* rpc.c: tells the host, then resets the board */

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_VTOR  (*(volatile uint32_t *)0xE000ED08u)

/* Any fault (notably the MPU stack guard) lands here. The faulting stack is unusable, so
 * move sp back to the top of RAM before running C, then report and reset. */
__attribute__((naked)) void fault_entry(void)
{
    __asm__ volatile(
        "ldr r0, =__stack_top \n"
        "msr msp, r0          \n"
        "mrs r0, ipsr         \n"
        "b fault_report       \n");
}

/* volatile accesses: gcc must not turn these loops into memcpy/memset calls before .data exists */
__attribute__((noreturn)) void Reset_Handler(void)
{
    volatile uint32_t *dst = __data_start;
    const volatile uint32_t *src = __data_load;
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end;)
        *dst++ = 0;
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access: the hard-float ABI uses FP registers */
    __asm__ volatile("dsb\n isb");
#endif
    SCB_VTOR = (uint32_t)vector_table; /* H7 boots with VTOR at flash, F4/F7 at the 0x0 alias */
    stack_paint_all();
    main();
    board_reset();
}

#define FAULT ((uint32_t)fault_entry)
__attribute__((section(".vectors"), used)) const uint32_t vector_table[16] = {
    (uint32_t)__stack_top, (uint32_t)Reset_Handler,
    FAULT, FAULT, FAULT, FAULT, FAULT, /* NMI, HardFault, MemManage, BusFault, UsageFault */
    0, 0, 0, 0, FAULT, FAULT, 0, FAULT, FAULT, /* SVC, DebugMon, PendSV, SysTick */
};

void board_reset(void)
{
    *(volatile uint32_t *)0xE000ED0Cu = 0x05FA0004u; /* AIRCR: VECTKEY | SYSRESETREQ */
    __asm__ volatile("dsb");
    for (;;)
        ;
}
