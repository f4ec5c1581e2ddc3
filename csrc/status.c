/* Status strings and the ABI version. */
#include "internal.h"

int32_t lf_abi_version(void) { return LF_ABI_VERSION; }

const char *lf_status_string(lf_status status)
{
    switch (status) {
    case LF_OK: return "ok";
    case LF_E_NULL: return "a required pointer is NULL";
    case LF_E_INVALID_SIZE: return "invalid size (< 1, > LF_MAX_DIM, or layers do not chain)";
    case LF_E_TOO_LARGE: return "sizes overflow the address space";
    case LF_E_NO_MEMORY: return "out of memory";
    case LF_E_WORKSPACE: return "workspace smaller than lf_workspace_size()";
    case LF_E_NONFINITE: return "input contains NaN or Inf";
    case LF_E_BATCH_MISMATCH: return "batch index or state does not match";
    case LF_E_ISA_UNAVAILABLE: return "instruction set not supported by this CPU";
    case LF_E_STRIDE: return "stride too small: rows would overlap";
    case LF_E_BAD_LAYER: return "unknown layer kind, activation or flag, or a misplaced layer";
    case LF_E_BAD_ID: return "an id is outside [0, vocabulary)";
    case LF_E_BAD_LENGTH: return "a length is outside [0, steps]";
    case LF_E_INPUT_KIND: return "ids given to a float model, or floats to an id model";
    }
    return "unknown status";
}
