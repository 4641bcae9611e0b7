// libzstd (Debian: libzstd-dev), used to compress WAL segments in-process.
// ZSTD_STATIC_LINKING_ONLY: for ZSTD_c_stableInBuffer (wal-push compresses a mapped segment in
// place). An experimental parameter set through the stable ZSTD_CCtx_setParameter; a libzstd that
// does not know it answers an error, and wal-push then lets zstd copy its input as before.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

// zstd.h names it with a macro for an enum constant, which Swift does not import.
static inline ZSTD_cParameter tsbackup_ZSTD_c_stableInBuffer(void) { return ZSTD_c_stableInBuffer; }
