# Build rules shared by every board. The project Makefile sets BOARD, CPU_FLAGS, BOARD_SRCS
# (and QEMU_PLUGIN=1 for emulated boards), then includes this file.
# Outputs: build/fw.elf, build/fw.bin, build/fw.map, and build/libicount.so (QEMU only).
# PROFILE=1 builds everything with -DTVMGEN_PROFILE: model.c marks each kernel call (rpc.h PROFILE).
-include config.mk   # written by generate_project: OPT, UART_BAUD, STACK_MIN, EXTRA_CFLAGS, PROFILE, MODEL_SRCS

CROSS     ?= arm-none-eabi-
CC        := $(CROSS)gcc
OBJCOPY   := $(CROSS)objcopy
HOSTCC    ?= gcc
OPT       ?= -O2
UART_BAUD ?= 115200
STACK_MIN ?= 4096
BUILD     := build
PROFILE   ?= 0

SRCS := common/startup.c common/main.c common/rpc.c common/stack.c common/known_loop.S \
        $(BOARD_SRCS) $(MODEL_SRCS)
OBJS := $(patsubst %,$(BUILD)/%.o,$(SRCS))

CFLAGS  := $(CPU_FLAGS) $(OPT) -g -std=gnu11 -Wall -Werror -ffunction-sections -fdata-sections \
           -Iboard -Icommon -Icodegen -DUART_BAUD=$(UART_BAUD) -MMD -MP $(EXTRA_CFLAGS)
ifeq ($(PROFILE),1)
CFLAGS  += -DTVMGEN_PROFILE
endif
LDFLAGS := $(CPU_FLAGS) -nostartfiles --specs=nano.specs -Lboard -Tcommon/link.ld \
           -Wl,--gc-sections -Wl,--defsym=__stack_min=$(STACK_MIN) -Wl,-Map=$(BUILD)/fw.map \
           -Wl,--no-warn-rwx-segments -Wl,--print-memory-usage
LDLIBS  := -lm  # floor() of a float32 -> int8 QUANTIZE kernel at a model's input

TARGETS := $(BUILD)/fw.elf $(BUILD)/fw.bin
ifeq ($(QEMU_PLUGIN),1)
TARGETS += $(BUILD)/libicount.so
endif

all: $(TARGETS)

$(BUILD)/%.c.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.S.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/fw.elf: $(OBJS) common/link.ld board/memory.ld
	$(CC) $(LDFLAGS) $(OBJS) $(LDLIBS) -o $@

$(BUILD)/fw.bin: $(BUILD)/fw.elf
	$(OBJCOPY) -O binary $< $@

# The TCG plugin runs inside qemu-system-arm, so it is built for the host.
$(BUILD)/libicount.so: common/icount_plugin.c common/qemu_plugin_v1.h
	@mkdir -p $(dir $@)
	$(HOSTCC) -shared -fPIC -O2 -Wall -Werror -o $@ $<

clean:
	rm -rf $(BUILD)

.PHONY: all clean
-include $(OBJS:.o=.d)
