/* Measured call for QEMU. The TCG plugin (icount_plugin.c) is told the addresses of the two
 * marker nops; it counts the instructions executed strictly between them (the blx and all
 * of fn, including its return) and writes the count into icount_mailbox through its host
 * pointer, since plugin API v1 cannot write guest registers or memory otherwise. */
    .syntax unified
    .thumb
    .section .text.icount_call,"ax",%progbits
    .align 3
    .global icount_call
    .type icount_call, %function
    .thumb_func
@ int icount_call(call_fn fn, const void *const *a, void *const *b): returns fn(a, b)
icount_call:
    push {r4, lr}
    mov  ip, r0
    mov  r0, r1
    mov  r1, r2
    .global icount_mark_start
icount_mark_start:
    nop
    blx  ip
    .global icount_mark_stop
icount_mark_stop:
    nop
    pop  {r4, pc}
    .size icount_call, . - icount_call

    /* In the same section as the stop marker, so the plugin reaches it from the marker's host
     * address. Words: count low, count high, sequence number, magic "ICNT". */
    .align 3
    .global icount_mailbox
icount_mailbox:
    .word 0, 0, 0, 0
