/* Measured call for QEMU. The TCG plugin (icount_plugin.c) is told the addresses of the two
 * marker nops; it counts the instructions executed strictly between them (the blx and all
 * of fn, including its return) and writes the count into icount_mailbox through its host
 * pointer, since plugin API v1 cannot write guest registers or memory otherwise.
 *
 * Profile build (-DTVMGEN_PROFILE): model.c calls tvmgen_profile_mark() before its first kernel
 * and after each one. The hook is one instruction (bx lr, the plugin's third marker), so a mark
 * costs exactly 2 instructions with the caller's bl, and it changes no register but lr. At each
 * hit the plugin writes the count since the start marker into icount_profile (same section, so
 * reached from the marker's host address): word 0 = marks seen in the last measured call, word 1
 * = capacity, then one u64 per mark. */
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

#ifdef TVMGEN_PROFILE
#ifndef ICOUNT_PROFILE_MARKS
#define ICOUNT_PROFILE_MARKS 512
#endif
    .global tvmgen_profile_mark
    .type tvmgen_profile_mark, %function
    .thumb_func
tvmgen_profile_mark:
    bx   lr
    .size tvmgen_profile_mark, . - tvmgen_profile_mark

    .align 3
    .global icount_profile
icount_profile:
    .word 0, ICOUNT_PROFILE_MARKS
    .space 8 * ICOUNT_PROFILE_MARKS
#endif
