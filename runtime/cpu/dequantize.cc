#include "runtime/cpu/dequantize.h"
