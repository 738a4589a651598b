/* QEMU mps2-an500: Cortex-M7 with double-precision FPU */
#define BOARD_NAME "qemu-m7"
#define BOARD_CPU_HZ 25000000u /* MPS2 SYSCLK; QEMU counts instructions, not cycles */
#define BOARD_UART_BASE 0x40004000u /* CMSDK UART0 = QEMU's first -serial */
