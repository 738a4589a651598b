/* MPS2 (QEMU mps2-an386 / mps2-an500): CMSDK APB UART0, which QEMU connects to -serial. */
#include "board.h"

#define UART_DATA    (*(volatile uint32_t *)(BOARD_UART_BASE + 0x00u))
#define UART_STATE   (*(volatile uint32_t *)(BOARD_UART_BASE + 0x04u)) /* bit0 TX full, bit1 RX full */
#define UART_CTRL    (*(volatile uint32_t *)(BOARD_UART_BASE + 0x08u)) /* bit0 TX enable, bit1 RX enable */
#define UART_BAUDDIV (*(volatile uint32_t *)(BOARD_UART_BASE + 0x10u))

void board_init(void)
{
    UART_BAUDDIV = BOARD_CPU_HZ / UART_BAUD; /* QEMU ignores the rate but wants a divider >= 16 */
    UART_CTRL = 3u;
    /* QEMU only re-polls its chardev after a DATA read: without this the first host byte
     * waits for an unrelated main-loop wake-up (up to ~1 s). */
    (void)UART_DATA;
}

void board_uart_putc(uint8_t c)
{
    while (UART_STATE & 1u)
        ;
    UART_DATA = c;
}

int board_uart_getc(uint32_t timeout_ms)
{
    /* QEMU with -icount shift=0 runs 1 instruction per virtual ns; a poll is ~5 instructions. */
    uint32_t spins = timeout_ms == 0xFFFFFFFFu ? 0 : timeout_ms * 200000u;
    while (!(UART_STATE & 2u))
        if (spins && --spins == 0)
            return -1;
    return (int)(UART_DATA & 0xFFu);
}
