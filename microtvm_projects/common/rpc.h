/* Serial RPC, firmware side. Frame (both directions, little-endian):
 *   A5 5A | cmd u8 | seq u8 | len u16 | payload[len] | crc16 u16
 * crc16 = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over cmd..payload.
 * A response has cmd | 0x80, the request's seq, and payload = status u8 + data.
 *
 * The host gives each new request a fresh seq (starting at random) and re-sends a request it got
 * no good answer to with the SAME seq, byte for byte. The board keeps the last request's key
 * (cmd, seq, crc16) and, for RUN and CALIBRATE, its answer: a repeat of that request (a retry, or
 * a frame the link duplicated) gets the stored answer again instead of a second run (a run may
 * overwrite its input in the arena). Other commands are idempotent and simply run again.
 *
 * RUN and CALIBRATE first answer STATUS_STARTED (so the host knows the request arrived and
 * can wait long for the result). INFO opens a session; after a reset (power-up, a fault) every
 * command but PING and INFO answers STATUS_NO_SESSION, so a reset between two requests is an
 * error on the host, never data from an empty arena. A fault sends an unsolicited CMD_FAULT
 * frame, then the board resets. The host side is tvm_patchnet/micro/rpc.py. */
#ifndef PATCHNET_RPC_H
#define PATCHNET_RPC_H

/* 2: same seq per retry, replayed RUN/CALIBRATE answers, sessions. 3: several inputs and outputs
 * (SET_INPUT / GET_OUTPUT offsets address them one after the other; INFO gives their counts).
 * 4: PROFILE (per-kernel counts of the last run of a profile build; INFO byte 38 bit 0 = one). */
#define RPC_PROTO_VERSION 4
#define RPC_MAX_PAYLOAD 1024

enum {
    CMD_PING = 0x00,      /* echo the payload */
    CMD_INFO = 0x01,      /* board, sizes, counter kind, input/output counts; opens a session */
    CMD_SET_INPUT = 0x02, /* u32 offset (in the inputs one after the other) + bytes */
    CMD_RUN = 0x03,       /* u32 n -> stats body; runs the model in place n times */
    CMD_GET_OUTPUT = 0x04, /* u32 offset (in the outputs one after the other), u16 len -> bytes */
    CMD_STATS = 0x05,     /* -> stats body */
    CMD_CALIBRATE = 0x06, /* u32 n -> u64 count of known_loop(n) */
    CMD_PROFILE = 0x07,   /* u16 first -> u32 marks, u32 overhead per mark, u64 count per mark from first */
    CMD_FAULT = 0x7F,     /* device -> host only */
};

enum {
    STATUS_OK = 0,
    STATUS_CRC = 1,
    STATUS_BAD_CMD = 2,
    STATUS_BAD_ARG = 3,
    STATUS_MODEL = 4,      /* tvmgen_default_run returned non-zero */
    STATUS_NO_SESSION = 5, /* the board reset since the last INFO: input and output are gone */
    STATUS_STARTED = 0x80,
};

void rpc_serve(void) __attribute__((noreturn));

#endif
