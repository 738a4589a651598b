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

#ifdef TVMGEN_PROFILE
#ifndef DWT_PROFILE_MARKS
#define DWT_PROFILE_MARKS 512
#endif
static uint32_t marks, t_start, t_mark[DWT_PROFILE_MARKS];

void tvmgen_profile_mark(void)
{
    uint32_t t = DWT_CYCCNT;
    if (marks < DWT_PROFILE_MARKS)
        t_mark[marks] = t;
    marks++;
}

uint32_t board_profile_marks(void) { return marks; }
uint32_t board_profile_capacity(void) { return DWT_PROFILE_MARKS; }
uint64_t board_profile_count(uint32_t i) { return (uint32_t)(t_mark[i] - t_start); }

/* Cycles between two marks back to back: what each mark adds (the call, the read, the store). */
uint32_t board_profile_overhead(void)
{
    uint32_t saved_marks = marks, saved[2] = {t_mark[0], t_mark[1]};
    marks = 0;
    tvmgen_profile_mark();
    tvmgen_profile_mark();
    uint32_t d = t_mark[1] - t_mark[0];
    marks = saved_marks;
    t_mark[0] = saved[0];
    t_mark[1] = saved[1];
    return d;
}
#define PROFILE_BEGIN(t) (marks = 0, t_start = (t))
#else
uint32_t board_profile_marks(void) { return 0; }
uint32_t board_profile_capacity(void) { return 0; }
uint64_t board_profile_count(uint32_t i) { return 0; }
uint32_t board_profile_overhead(void) { return 0; }
#define PROFILE_BEGIN(t) ((void)(t))
#endif

int board_measure_call(call_fn fn, const void *const *a, void *const *b, uint64_t *count)
{
    uint32_t t0 = DWT_CYCCNT;
    PROFILE_BEGIN(t0);
    int rc = fn(a, b);
    *count = (uint32_t)(DWT_CYCCNT - t0); /* includes the call and the two CYCCNT reads */
    return rc;
}

uint8_t board_counter_kind(void)
{
    return (DWT_CTRL & (1u << 25)) ? COUNTER_NONE : COUNTER_CYCLES; /* NOCYCCNT */
}
