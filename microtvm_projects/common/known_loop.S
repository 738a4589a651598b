/* A loop whose executed-instruction count is known exactly, for checking the counter:
 * n iterations of subs+bne, then bx lr = 2n+1 instructions (n >= 1, in r0). */
    .syntax unified
    .thumb
    .section .text.known_loop,"ax",%progbits
    .global known_loop
    .type known_loop, %function
    .thumb_func
known_loop:
1:  subs r0, r0, #1
    bne  1b
    bx   lr
    .size known_loop, . - known_loop
