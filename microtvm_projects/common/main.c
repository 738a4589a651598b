#include "board.h"
#include "rpc.h"
#include "stack.h"

int main(void)
{
    board_init();
    stack_guard_enable();
    rpc_serve();
}
