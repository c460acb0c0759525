/*
 * Board facts for the board-independent core. Every value comes from the generated board_gen.h,
 * which the build writes from the board's device tree (dts/<board>.dts); nothing is restated here.
 */
#ifndef WB_BOARD_H
#define WB_BOARD_H

#include "board_gen.h"

#endif
