#include "frontends/gguf/gguf.h"
