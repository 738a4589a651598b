/* STM32 Nucleo-144: USART3 on PD8 (TX) / PD9 (RX), wired to the ST-LINK virtual COM port.
 * Registers written by hand (no HAL): STM32_USART_V1 = F4 layout, otherwise F7/H7 layout.
 * Clocks stay at their reset values (HSI, no PLL): BOARD_CPU_HZ in board_config.h. */
#include "board.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define GPIO_MODER(g) REG((g) + 0x00u)
#define GPIO_AFRH(g)  REG((g) + 0x24u)

#if defined(STM32_USART_V1)
#define USART_SR  REG(BOARD_UART_BASE + 0x00u)
#define USART_DR  REG(BOARD_UART_BASE + 0x04u)
#define USART_BRR REG(BOARD_UART_BASE + 0x08u)
#define USART_CR1 REG(BOARD_UART_BASE + 0x0Cu)
#define CR1_ENABLE ((1u << 13) | (1u << 3) | (1u << 2)) /* UE | TE | RE */
#define ISR USART_SR
#define RDR USART_DR
#define TDR USART_DR
#define CLEAR_OVERRUN() ((void)USART_SR, (void)USART_DR) /* read SR then DR clears ORE */
#else
#define USART_CR1 REG(BOARD_UART_BASE + 0x00u)
#define USART_BRR REG(BOARD_UART_BASE + 0x0Cu)
#define ISR       REG(BOARD_UART_BASE + 0x1Cu)
#define USART_ICR REG(BOARD_UART_BASE + 0x20u)
#define RDR       REG(BOARD_UART_BASE + 0x24u)
#define TDR       REG(BOARD_UART_BASE + 0x28u)
#define CR1_ENABLE ((1u << 0) | (1u << 3) | (1u << 2)) /* UE | TE | RE */
#define CLEAR_OVERRUN() (USART_ICR = 1u << 3)      /* ORECF */
#endif
#define ISR_ORE  (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TXE  (1u << 7)

void counter_init(void); /* counter_dwt.c */

#if defined(BOARD_M7_CACHES)
/* I- and D-cache on, as any benchmark on a Cortex-M7 would run (no DMA here: no coherency issue). */
static void caches_enable(void)
{
    __asm__ volatile("dsb\n isb");
    REG(0xE000EF50u) = 0; /* ICIALLU */
    __asm__ volatile("dsb\n isb");
    REG(0xE000ED14u) |= 1u << 17; /* CCR.IC */
    REG(0xE000ED84u) = 0;         /* CSSELR: L1 data cache */
    __asm__ volatile("dsb");
    uint32_t ccsidr = REG(0xE000ED80u);
    uint32_t sets = (ccsidr >> 13) & 0x7FFFu, ways = (ccsidr >> 3) & 0x3FFu;
    do {
        uint32_t w = ways;
        do
            REG(0xE000EF60u) = (sets << 5) | (w << 30); /* DCISW: invalidate by set/way */
        while (w--);
    } while (sets--);
    __asm__ volatile("dsb");
    REG(0xE000ED14u) |= 1u << 16; /* CCR.DC */
    __asm__ volatile("dsb\n isb");
}
#endif

void board_init(void)
{
#if defined(BOARD_M7_CACHES)
    caches_enable();
#endif
    REG(BOARD_RCC_GPIO_EN) |= BOARD_RCC_GPIO_BIT;
    REG(BOARD_RCC_UART_EN) |= BOARD_RCC_UART_BIT;
    (void)REG(BOARD_RCC_UART_EN); /* the clock needs a bus cycle before the peripheral is usable */
    /* PD8/PD9: alternate function 7 (USART3) */
    GPIO_MODER(BOARD_GPIO_BASE) = (GPIO_MODER(BOARD_GPIO_BASE) & ~(0xFu << 16)) | (0xAu << 16);
    GPIO_AFRH(BOARD_GPIO_BASE) = (GPIO_AFRH(BOARD_GPIO_BASE) & ~0xFFu) | 0x77u;
    USART_BRR = (BOARD_UART_CLK_HZ + UART_BAUD / 2) / UART_BAUD; /* oversampling by 16 */
    USART_CR1 = CR1_ENABLE;
    counter_init();
}

void board_uart_putc(uint8_t c)
{
    while (!(ISR & ISR_TXE))
        ;
    TDR = c;
}

int board_uart_getc(uint32_t timeout_ms)
{
    uint32_t spins = timeout_ms == 0xFFFFFFFFu ? 0 : timeout_ms * (BOARD_CPU_HZ / 10000u);
    for (;;) {
        uint32_t isr = ISR;
        if (isr & ISR_RXNE)
            return (int)(RDR & 0xFFu);
        if (isr & ISR_ORE)
            CLEAR_OVERRUN(); /* bytes lost while busy: the frame fails its CRC and is resent */
        if (spins && --spins == 0)
            return -1;
    }
}
