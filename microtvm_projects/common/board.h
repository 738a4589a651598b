/* What every board template provides to the common firmware (rpc.c, main.c, startup.c).
 * A board = one UART driver + one counter + its board_config.h; everything else is shared. */
#ifndef PATCHNET_BOARD_H
#define PATCHNET_BOARD_H

#include <stdint.h>
#include "board_config.h" /* per template: BOARD_NAME, BOARD_CPU_HZ, register bases */

/* What board_measure_call counts (sent in INFO/STATS so the host never calls instructions cycles). */
enum { COUNTER_NONE = 0, COUNTER_CYCLES = 1, COUNTER_INSTRUCTIONS = 2 };

/* Same signature as the generated entry point, so the model is measured without a wrapper:
 * tables of input / output pointers (NULL: the model's own tensors in its arena). */
typedef int (*call_fn)(const void *const *inputs, void *const *outputs);

void board_init(void);
void board_uart_putc(uint8_t c);
/* One received byte, or -1 after about timeout_ms with nothing received. */
int board_uart_getc(uint32_t timeout_ms);

/* Calls fn(a, b) and stores in *count what it cost: DWT cycles on silicon, executed
 * instructions under QEMU (the blx and everything fn executes). Returns fn's result. */
int board_measure_call(call_fn fn, const void *const *a, void *const *b, uint64_t *count);
/* COUNTER_* actually available (QEMU without the plugin has none). */
uint8_t board_counter_kind(void);

/* A loop of exactly 2*n+1 instructions (subs/bne, then bx lr), n >= 1 passed in r0 as a
 * pointer so it goes through board_measure_call like the model: measured, it gives 2n+2. */
int known_loop(const void *const *n, void *const *unused);

void board_reset(void) __attribute__((noreturn));

/* Profile builds (-DTVMGEN_PROFILE; PROFILE=1 in config.mk): model.c calls tvmgen_profile_mark()
 * before its first kernel and after each one, and the counter keeps, for the last measured call,
 * the count (board_measure_call's unit) from the call's start to each mark. Elsewhere the
 * functions below report no marks. */
void tvmgen_profile_mark(void);
/* Marks recorded in the last measured call (more than board_profile_capacity(): overflowed). */
uint32_t board_profile_marks(void);
uint32_t board_profile_capacity(void);
/* Count from the start of the last measured call to mark i (i < marks and < capacity). */
uint64_t board_profile_count(uint32_t i);
/* What one mark adds to the counts (bl + the hook): exact instructions on QEMU (2), cycles
 * calibrated on the board on silicon; 0 without a profile build. */
uint32_t board_profile_overhead(void);

#endif
