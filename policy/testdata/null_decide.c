/* Fault: decide is NULL. */
#include "fixture.h"
FIXTURE_TABLE("null_decide", 0)
