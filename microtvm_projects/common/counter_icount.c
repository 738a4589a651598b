/* Executed-instruction counter on QEMU, through icount.S and the TCG plugin. */
#include "board.h"

#define ICOUNT_MAGIC 0x544E4349u /* "ICNT" little-endian */

extern const volatile uint32_t icount_mailbox[4];
int icount_call(call_fn fn, const void *const *a, void *const *b);

static uint8_t kind = 0xFF; /* unknown until the first measured call */

int board_measure_call(call_fn fn, const void *const *a, void *const *b, uint64_t *count)
{
    uint32_t seq = icount_mailbox[2];
    int rc = icount_call(fn, a, b);
    /* The plugin bumps seq on every stop marker: no bump = QEMU runs without the plugin. */
    if (icount_mailbox[3] == ICOUNT_MAGIC && icount_mailbox[2] == seq + 1u) {
        *count = icount_mailbox[0] | (uint64_t)icount_mailbox[1] << 32;
        kind = COUNTER_INSTRUCTIONS;
    } else {
        *count = 0;
        kind = COUNTER_NONE;
    }
    return rc;
}

uint8_t board_counter_kind(void)
{
    if (kind == 0xFF) {
        uint64_t c;
        board_measure_call(known_loop, (const void *const *)1, 0, &c);
    }
    return kind;
}

#ifdef TVMGEN_PROFILE
/* icount.S: word 0 marks seen, word 1 capacity, then one u64 per mark (written by the plugin). */
extern const volatile uint32_t icount_profile[];

uint32_t board_profile_marks(void) { return icount_profile[0]; }
uint32_t board_profile_capacity(void) { return icount_profile[1]; }
uint64_t board_profile_count(uint32_t i)
{
    return icount_profile[2 + 2 * i] | (uint64_t)icount_profile[3 + 2 * i] << 32;
}
uint32_t board_profile_overhead(void) { return 2; } /* bl tvmgen_profile_mark; bx lr */
#else
uint32_t board_profile_marks(void) { return 0; }
uint32_t board_profile_capacity(void) { return 0; }
uint64_t board_profile_count(uint32_t i) { return 0; }
uint32_t board_profile_overhead(void) { return 0; }
#endif
