// libzstd (Debian: libzstd-dev), used to compress WAL segments in-process.
#include <zstd.h>
