/* STM32F746ZG Nucleo-144. Registers: RM0385. */
#define BOARD_NAME "nucleo-f746zg"
#define BOARD_CPU_HZ 16000000u      /* HSI at reset, no PLL */
#define BOARD_UART_CLK_HZ 16000000u /* USART3SEL = PCLK1 = HCLK at reset */
#define BOARD_M7_CACHES 1
#define BOARD_RCC_GPIO_EN 0x40023830u  /* RCC_AHB1ENR */
#define BOARD_RCC_GPIO_BIT (1u << 3)   /* GPIODEN */
#define BOARD_RCC_UART_EN 0x40023840u  /* RCC_APB1ENR */
#define BOARD_RCC_UART_BIT (1u << 18)  /* USART3EN */
#define BOARD_GPIO_BASE 0x40020C00u    /* GPIOD */
#define BOARD_UART_BASE 0x40004800u    /* USART3 */
