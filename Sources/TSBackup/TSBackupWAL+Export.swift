// The WAL archive's core (format, names, marker, local store) lives in TSBackupWAL so that
// `tsbackup-wal` can link it alone; every user of TSBackup sees it as part of the library.
@_exported import TSBackupWAL
