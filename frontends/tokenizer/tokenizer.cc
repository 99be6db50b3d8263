#include "frontends/tokenizer/tokenizer.h"
