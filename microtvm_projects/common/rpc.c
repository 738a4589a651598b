/* Serial RPC, firmware side: framing, CRC and the command handlers (protocol in rpc.h). */
#include <string.h>
#include "board.h"
#include "model.h"
#include "rpc.h"
#include "stack.h"

#define SYNC0 0xA5
#define SYNC1 0x5A
#define BYTE_TIMEOUT_MS 200 /* a frame stalled longer than this is dropped (host retries) */
#define FOREVER 0xFFFFFFFFu

extern uint32_t __data_start[], __data_end[], __bss_start[], __bss_end[], __ram_start[], __ram_end[];
extern uint32_t __stack_limit[];

/* The model's inputs and outputs live in its arena (model.h): SET_INPUT and GET_OUTPUT use them
 * in place, so the firmware holds no copy. Their offsets address the inputs (outputs) one after
 * the other, in order, wherever each one sits in the arena. A run may overwrite the inputs: the
 * host sends them again before each run it wants an output of. */
static uint8_t rx[4 + RPC_MAX_PAYLOAD + 2]; /* cmd seq len payload crc */
static const uint32_t input_sizes[TVMGEN_NUM_INPUTS] = TVMGEN_INPUT_SIZES;
static const uint32_t output_sizes[TVMGEN_NUM_OUTPUTS] = TVMGEN_OUTPUT_SIZES;

static struct {
    uint32_t runs, run_stack;
    int32_t rc;
    uint64_t total, min, max;
} last;

/* The last request's key and, for RUN/CALIBRATE, its answer (rpc.h): a repeat of the request
 * gets this answer again instead of a second run. .bss, so a reset forgets it. */
#define REPLY_BYTES 60 /* the largest stored answer: RUN's stats body */
static struct {
    uint16_t crc;
    uint8_t cmd, seq;
    uint8_t stored, status, len; /* stored: data[0..len) and status answer the request */
    uint8_t data[REPLY_BYTES];
} reply;

static uint8_t session_open; /* set by INFO; a reset clears it (STATUS_NO_SESSION) */

#define PROFILE_PER_FRAME 64 /* u64 counts per PROFILE answer (520 B on the stack) */

static uint16_t crc16(uint16_t crc, const uint8_t *p, uint32_t n)
{
    while (n--) {
        crc ^= (uint16_t)(*p++ << 8);
        for (int i = 0; i < 8; i++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void write_bytes(const uint8_t *p, uint32_t n)
{
    while (n--)
        board_uart_putc(*p++);
}

/* Byte off of the inputs (outputs: out = 1) one after the other: its address in the arena, and
 * in *n the bytes of at most *n that follow it in the same tensor (0 past the last one). */
static uint8_t *io_bytes(int out, uint32_t off, uint32_t *n)
{
    const uint32_t *sizes = out ? output_sizes : input_sizes;
    int count = out ? TVMGEN_NUM_OUTPUTS : TVMGEN_NUM_INPUTS;
    for (int i = 0; i < count; off -= sizes[i++]) {
        if (off < sizes[i]) {
            *n = *n < sizes[i] - off ? *n : sizes[i] - off;
            return (uint8_t *)(out ? tvmgen_default_output(i) : tvmgen_default_input(i)) + off;
        }
    }
    *n = 0;
    return 0;
}

/* Byte off of an answer's data (of data, or of the outputs when data is NULL) and in *k how many
 * bytes follow it contiguously, up to byte end. */
static const uint8_t *data_at(const uint8_t *data, uint32_t off, uint32_t end, uint32_t *k)
{
    *k = end - off;
    return data ? data + off : io_bytes(1, off, k);
}

/* Response = header + status + data (sent in place: outputs can be large). data NULL: the n
 * bytes of the outputs from byte first (GET_OUTPUT). */
static void send_from(uint8_t cmd, uint8_t seq, uint8_t status, const uint8_t *data, uint32_t first, uint32_t n)
{
    uint8_t hdr[7] = {SYNC0, SYNC1, cmd, seq, 0, 0, status};
    put16(hdr + 4, n + 1);
    uint16_t crc = crc16(0xFFFF, hdr + 2, 5);
    uint32_t k;
    for (uint32_t i = first; i < first + n; i += k)
        crc = crc16(crc, data_at(data, i, first + n, &k), k);
    uint8_t tail[2];
    put16(tail, crc);
    write_bytes(hdr, sizeof hdr);
    for (uint32_t i = first; i < first + n; i += k)
        write_bytes(data_at(data, i, first + n, &k), k);
    write_bytes(tail, 2);
}

/* A response with n bytes of data (data may be NULL when n is 0). */
static void send(uint8_t cmd, uint8_t seq, uint8_t status, const uint8_t *data, uint32_t n)
{
    send_from(cmd, seq, status, data, 0, n);
}

/* Waits for a whole frame in rx. Returns the payload length, or -1 on a CRC error. */
static int recv_frame(void)
{
    for (;;) {
        int c = board_uart_getc(FOREVER);
        if (c != SYNC0)
            continue;
        while ((c = board_uart_getc(BYTE_TIMEOUT_MS)) == SYNC0)
            ;
        if (c != SYNC1)
            continue;
        uint32_t i = 0, want = 4;
        while (i < want) {
            if ((c = board_uart_getc(BYTE_TIMEOUT_MS)) < 0)
                break;
            rx[i++] = (uint8_t)c;
            if (i == 4) {
                uint32_t len = rx[2] | rx[3] << 8;
                if (len > RPC_MAX_PAYLOAD)
                    break; /* not a frame of ours: resync on the next SYNC */
                want = 4 + len + 2;
            }
        }
        if (i < want)
            continue;
        uint32_t len = want - 6;
        uint16_t got = (uint16_t)(rx[4 + len] | rx[5 + len] << 8);
        return crc16(0xFFFF, rx, 4 + len) == got ? (int)len : -1;
    }
}

static void stats_body(uint8_t *b) /* 60 bytes with the rc, parsed by rpc.py STATS_FMT */
{
    b[0] = board_counter_kind();
    b[1] = (uint8_t)stack_overflowed();
    put16(b + 2, 0);
    put32(b + 4, last.runs);
    put64(b + 8, last.total);
    put64(b + 16, last.min);
    put64(b + 24, last.max);
    put32(b + 32, stack_peak_bytes());
    put32(b + 36, last.run_stack);
    put32(b + 40, stack_usable_bytes());
    put32(b + 44, TVMGEN_ARENA_BYTES);
    put32(b + 48, (uint32_t)((uintptr_t)__data_end - (uintptr_t)__data_start));
    put32(b + 52, (uint32_t)((uintptr_t)__bss_end - (uintptr_t)__bss_start));
    put32(b + 56, (uint32_t)last.rc);
}

/* Stores the answer to the current request for repeats, then sends it. */
static void send_stored(uint8_t status, uint32_t n)
{
    reply.stored = 1;
    reply.status = status;
    reply.len = (uint8_t)n;
    send(reply.cmd | 0x80, reply.seq, status, reply.data, n);
}

static void do_run(uint8_t seq, uint32_t n)
{
    send(CMD_RUN | 0x80, seq, STATUS_STARTED, 0, 0);
    uintptr_t sp0 = stack_repaint_below_sp();
    last.runs = 0;
    last.total = last.max = 0;
    last.min = ~(uint64_t)0;
    last.rc = 0;
    while (last.runs < n && last.rc == 0) {
        uint64_t c = 0;
        last.rc = board_measure_call(tvmgen_default_run, 0, 0, &c); /* in place */
        last.runs++;
        last.total += c;
        last.min = c < last.min ? c : last.min;
        last.max = c > last.max ? c : last.max;
    }
    last.run_stack = stack_used_below(sp0);
    stats_body(reply.data);
    send_stored(last.rc ? STATUS_MODEL : STATUS_OK, REPLY_BYTES);
}

static void do_info(uint8_t seq)
{
    static const char name[] = BOARD_NAME;
    uint8_t b[40 + sizeof name - 1];
    b[0] = RPC_PROTO_VERSION;
    b[1] = board_counter_kind();
    put16(b + 2, RPC_MAX_PAYLOAD);
    put32(b + 4, TVMGEN_INPUT_BYTES);
    put32(b + 8, TVMGEN_OUTPUT_BYTES);
    put32(b + 12, TVMGEN_ARENA_BYTES);
    put32(b + 16, BOARD_CPU_HZ);
    put32(b + 20, (uint32_t)((uintptr_t)__ram_end - (uintptr_t)__ram_start));
    put32(b + 24, (uint32_t)((uintptr_t)__data_end - (uintptr_t)__data_start));
    put32(b + 28, (uint32_t)((uintptr_t)__bss_end - (uintptr_t)__bss_start));
    put32(b + 32, stack_usable_bytes());
    b[36] = TVMGEN_NUM_INPUTS;
    b[37] = TVMGEN_NUM_OUTPUTS;
#ifdef TVMGEN_PROFILE
    b[38] = 1; /* flags: bit 0 = profile build (model.c marks its kernel calls) */
#else
    b[38] = 0;
#endif
    b[39] = 0;
    memcpy(b + 40, name, sizeof name - 1);
    send(CMD_INFO | 0x80, seq, STATUS_OK, b, sizeof b);
}

static void handle(uint8_t cmd, uint8_t seq, const uint8_t *p, uint32_t len)
{
    uint8_t r = cmd | 0x80;
    if (cmd >= CMD_SET_INPUT && cmd <= CMD_PROFILE && !session_open) {
        send(r, seq, STATUS_NO_SESSION, 0, 0);
        return;
    }
    switch (cmd) {
    case CMD_PING:
        send(r, seq, STATUS_OK, p, len);
        return;
    case CMD_INFO:
        session_open = 1;
        do_info(seq);
        return;
    case CMD_SET_INPUT: {
        uint32_t off = len >= 4 ? get32(p) : ~0u, n = len - 4, k;
        if (len < 4 || off > TVMGEN_INPUT_BYTES || n > TVMGEN_INPUT_BYTES - off)
            break;
        for (p += 4; n; off += k, p += k, n -= k) { /* across inputs */
            k = n;
            uint8_t *dst = io_bytes(0, off, &k);
            memcpy(dst, p, k);
        }
        send(r, seq, STATUS_OK, 0, 0);
        return;
    }
    case CMD_RUN:
        if (len != 4 || get32(p) == 0)
            break;
        do_run(seq, get32(p));
        return;
    case CMD_GET_OUTPUT: {
        uint32_t off = len == 6 ? get32(p) : ~0u, n = len == 6 ? (uint32_t)(p[4] | p[5] << 8) : 0;
        if (off > TVMGEN_OUTPUT_BYTES || n > TVMGEN_OUTPUT_BYTES - off || n > RPC_MAX_PAYLOAD - 1)
            break;
        send_from(r, seq, STATUS_OK, 0, off, n);
        return;
    }
    case CMD_STATS: {
        uint8_t s[REPLY_BYTES];
        stats_body(s);
        send(r, seq, STATUS_OK, s, sizeof s);
        return;
    }
    case CMD_CALIBRATE: {
        if (len != 4 || get32(p) == 0)
            break;
        send(r, seq, STATUS_STARTED, 0, 0);
        uint64_t c = 0;
        board_measure_call(known_loop, (const void *const *)(uintptr_t)get32(p), 0, &c);
        put64(reply.data, c);
        send_stored(STATUS_OK, 8);
        return;
    }
    case CMD_PROFILE: { /* the marks of the last measured call (a run, or CALIBRATE: none) */
        uint32_t first = len == 2 ? (uint32_t)(p[0] | p[1] << 8) : ~0u, marks = board_profile_marks();
        uint32_t have = marks < board_profile_capacity() ? marks : board_profile_capacity();
        if (first > have)
            break;
        uint8_t b[8 + 8 * PROFILE_PER_FRAME];
        uint32_t n = have - first < PROFILE_PER_FRAME ? have - first : PROFILE_PER_FRAME;
        put32(b, marks);
        put32(b + 4, board_profile_overhead());
        for (uint32_t i = 0; i < n; i++)
            put64(b + 8 + 8 * i, board_profile_count(first + i));
        send(r, seq, STATUS_OK, b, 8 + 8 * n);
        return;
    }
    default:
        send(r, seq, STATUS_BAD_CMD, 0, 0);
        return;
    }
    send(r, seq, STATUS_BAD_ARG, 0, 0);
}

void rpc_serve(void)
{
    for (;;) {
        int len = recv_frame();
        if (len < 0) {
            send(rx[0] | 0x80, rx[1], STATUS_CRC, 0, 0); /* NAK: the host resends at once */
            continue;
        }
        uint16_t crc = (uint16_t)(rx[4 + len] | rx[5 + len] << 8);
        if (reply.stored && rx[0] == reply.cmd && rx[1] == reply.seq && crc == reply.crc) {
            send(reply.cmd | 0x80, reply.seq, reply.status, reply.data, reply.len); /* a repeat */
            continue;
        }
        reply.cmd = rx[0];
        reply.seq = rx[1];
        reply.crc = crc;
        reply.stored = 0;
        handle(rx[0], rx[1], rx + 4, (uint32_t)len);
    }
}

/* Called by fault_entry (startup.c) on a fresh stack. guard = the MPU stack guard was hit
 * (MemManage with a stacking error, or a data access inside the guard). */
void fault_report(uint32_t exception)
{
    uint32_t cfsr = *(volatile uint32_t *)0xE000ED28u, hfsr = *(volatile uint32_t *)0xE000ED2Cu;
    uint32_t mmfar = *(volatile uint32_t *)0xE000ED34u, lim = (uint32_t)(uintptr_t)__stack_limit;
    int guard = (cfsr & (1u << 4)) || ((cfsr & (1u << 7)) && mmfar - lim < STACK_GUARD_BYTES);
    uint8_t b[24];
    put32(b, exception & 0x1FFu);
    put32(b + 4, cfsr);
    put32(b + 8, hfsr);
    put32(b + 12, mmfar);
    put32(b + 16, (uint32_t)guard);
    put32(b + 20, stack_usable_bytes());
    send(CMD_FAULT, 0, STATUS_OK, b, sizeof b);
    board_reset();
}
