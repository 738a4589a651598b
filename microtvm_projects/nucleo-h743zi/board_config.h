/* STM32H743ZI Nucleo-144. Registers: RM0433. */
#define BOARD_NAME "nucleo-h743zi"
#define BOARD_CPU_HZ 64000000u      /* HSI at reset, no PLL; LDO supply as the board ships */
#define BOARD_UART_CLK_HZ 64000000u /* USART234578SEL = rcc_pclk1 = 64 MHz at reset */
#define BOARD_M7_CACHES 1
#define BOARD_RCC_GPIO_EN 0x580244E0u  /* RCC_AHB4ENR */
#define BOARD_RCC_GPIO_BIT (1u << 3)   /* GPIODEN */
#define BOARD_RCC_UART_EN 0x580244E8u  /* RCC_APB1LENR */
#define BOARD_RCC_UART_BIT (1u << 18)  /* USART3EN */
#define BOARD_GPIO_BASE 0x58020C00u    /* GPIOD */
#define BOARD_UART_BASE 0x40004800u    /* USART3 */
