/* QEMU mps2-an386: Cortex-M4F */
#define BOARD_NAME "qemu-m4"
#define BOARD_CPU_HZ 25000000u /* MPS2 SYSCLK; QEMU counts instructions, not cycles */
#define BOARD_UART_BASE 0x40004000u /* CMSDK UART0 = QEMU's first -serial */
