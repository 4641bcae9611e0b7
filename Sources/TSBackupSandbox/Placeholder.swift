enum PlaceholderTSBackupSandbox {}
