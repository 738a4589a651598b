/* Cycle counter on silicon: DWT CYCCNT (32-bit; a single run must stay below 2^32 cycles). */
#include "board.h"

#define DEMCR      (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL   (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR    (*(volatile uint32_t *)0xE0001FB0u)

void counter_init(void)
{
    DEMCR |= 1u << 24;      /* TRCENA: power the DWT */
    DWT_LAR = 0xC5ACCE55u;  /* Cortex-M7 locks DWT writes until unlocked; ignored on M4 */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;         /* CYCCNTENA */
}

int board_measure_call(call_fn fn, const void *const *a, void *const *b, uint64_t *count)
{
    uint32_t t0 = DWT_CYCCNT;
    int rc = fn(a, b);
    *count = (uint32_t)(DWT_CYCCNT - t0); /* includes the call and the two CYCCNT reads */
    return rc;
}

uint8_t board_counter_kind(void)
{
    return (DWT_CTRL & (1u << 25)) ? COUNTER_NONE : COUNTER_CYCLES; /* NOCYCCNT */
}
