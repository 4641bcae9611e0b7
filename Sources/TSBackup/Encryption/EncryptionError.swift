/// What went wrong with a key file, a repository's encryption parameters or an encrypted object.
///
/// Callers branch on the case, never on the text. No case carries secret material: a key file is
/// named by its path only, never by its content. `tsbackupError` turns each case into the
/// one-paragraph, exit-coded error the command line prints.
public enum EncryptionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Why an encrypted object was refused.
    public enum ObjectProblem: String, Sendable, Equatable {
        /// Shorter than a header, or its size cannot be a whole number of segments.
        case truncated
        /// The header's magic bytes are wrong: not a tsbackup-encrypted object.
        case notEncrypted
        /// A format version or algorithm this build does not know.
        case unsupportedFormat
        /// A header field is out of range (segment size).
        case malformedHeader
        /// A segment failed to authenticate: altered, reordered, swapped from another object,
        /// stored under another name, the final segment missing, or a different key.
        case authenticationFailed
        /// A ranged decryption was asked for a range that does not start and end on segments.
        case misalignedRange
    }

    /// The key file could not be read (missing, a directory, no permission).
    case keyFileUnreadable(path: String, reason: String)
    /// The key file is readable or writable by group or others.
    case keyFileTooOpen(path: String, mode: UInt32)
    /// The key file is empty (after trimming the trailing newline).
    case keyFileEmpty(path: String)
    /// The key file holds a passphrase shorter than `minimum` characters.
    case passphraseTooShort(path: String, minimum: Int)
    /// The key file is larger than any key or passphrase (a wrong file was named).
    case keyFileTooLarge(path: String, limit: Int)
    /// The repository is encrypted and no key file was given.
    case keyRequired
    /// A key file was given but the repository is not encrypted (refused, so that replacing an
    /// encrypted repository's marker with a plain one cannot switch encryption off).
    case repositoryNotEncrypted
    /// The key file holds a passphrase but the repository was created with a raw key, or the
    /// other way round.
    case keyKindMismatch(repositoryUses: KeyKind, keyFileHolds: KeyKind)
    /// The key check did not authenticate: the key or passphrase is not this repository's.
    case wrongKey
    /// The stored encryption parameters are damaged (checksum mismatch, bad field).
    case corruptParameters(reason: String)
    /// The stored encryption parameters name a version, algorithm or KDF this build does not know,
    /// or KDF costs outside the accepted bounds.
    case unsupportedParameters(reason: String)
    /// An encrypted object (named by its logical name in the repository) was refused.
    case objectRejected(name: String, problem: ObjectProblem)
    /// The plaintext reader returned a different number of bytes than asked for.
    case plaintextReadMismatch(name: String, expected: Int, got: Int)
    /// The key derivation function failed inside the crypto library.
    case keyDerivationFailed

    /// The kind of secret a key file holds.
    public enum KeyKind: String, Sendable, Equatable, Codable {
        case rawKey = "raw key"
        case passphrase
    }

    public var description: String { tsbackupError.message }

    /// The user-facing error: wrong or missing keys are `permission` (exit 3), damaged data is
    /// `failed` (exit 1), an unusable key file's content is `usage` (exit 64).
    public var tsbackupError: TSBackupError {
        switch self {
        case let .keyFileUnreadable(path, reason):
            return TSBackupError(.permission, """
                Cannot read the encryption key file \(path): \(reason). Check the path given with \
                --encryption-key-file or TSBACKUP_ENCRYPTION_KEY_FILE and that this user can read it.
                """)
        case let .keyFileTooOpen(path, mode):
            return TSBackupError(.permission, """
                The encryption key file \(path) has mode \(String(mode & 0o777, radix: 8)) and can be read or \
                changed by group or others; tsbackup refuses to use it. Run chmod 600 \(path) (or 400) and \
                try again.
                """)
        case let .keyFileEmpty(path):
            return TSBackupError(.usage, """
                The encryption key file \(path) is empty. Put a passphrase of at least \
                \(EncryptionKeyFile.minimumPassphraseLength) characters or a 32-byte key (64 hex digits or \
                base64) in it.
                """)
        case let .passphraseTooShort(path, minimum):
            return TSBackupError(.usage, """
                The passphrase in the encryption key file \(path) is shorter than \(minimum) characters, too \
                weak to protect backups. Use a longer passphrase or a random 32-byte key (for example \
                `openssl rand -hex 32 > \(path)`).
                """)
        case let .keyFileTooLarge(path, limit):
            return TSBackupError(.usage, """
                The encryption key file \(path) is larger than \(limit) bytes, so it is not a key or \
                passphrase. Check that --encryption-key-file names the right file.
                """)
        case .keyRequired:
            return TSBackupError(.permission, """
                This repository is encrypted and no key was given. Pass the key file it was created with \
                through --encryption-key-file FILE or TSBACKUP_ENCRYPTION_KEY_FILE.
                """)
        case .repositoryNotEncrypted:
            return TSBackupError(.precondition, """
                An encryption key file was given, but this repository is not encrypted (its marker has no \
                encryption parameters). If the repository was created encrypted, its marker was replaced: do \
                not trust it. Otherwise run the command without --encryption-key-file and \
                TSBACKUP_ENCRYPTION_KEY_FILE; a repository's encryption is decided when it is first written.
                """)
        case let .keyKindMismatch(repositoryUses, keyFileHolds):
            return TSBackupError(.permission, """
                This repository was encrypted with a \(repositoryUses.rawValue), but the encryption key file \
                holds a \(keyFileHolds.rawValue), so it cannot be the right key. Pass the key file the \
                repository was created with.
                """)
        case .wrongKey:
            return TSBackupError(.permission, """
                The encryption key does not open this repository: its key check did not authenticate, so the \
                key file holds a different key or passphrase than the one the repository was created with. \
                Pass the right key file through --encryption-key-file or TSBACKUP_ENCRYPTION_KEY_FILE; \
                nothing was read or changed.
                """)
        case let .corruptParameters(reason):
            return TSBackupError(.failed, """
                The repository's encryption parameters are damaged (\(reason)), so no key can be checked \
                against them. Restore the repository marker file from a copy; nothing was read or changed.
                """)
        case let .unsupportedParameters(reason):
            return TSBackupError(.failed, """
                The repository's encryption parameters are not supported by this tsbackup (\(reason)). Use \
                the tsbackup version that created the repository, or check the marker file for damage.
                """)
        case let .objectRejected(name, problem):
            let what: String
            switch problem {
            case .truncated: what = "is truncated (its size is not a whole number of encrypted segments)"
            case .notEncrypted: what = "is not an encrypted tsbackup object"
            case .unsupportedFormat: what = "uses an encryption format version this tsbackup does not know"
            case .malformedHeader: what = "has a damaged encryption header"
            case .authenticationFailed:
                what = "failed authentication: it was altered, truncated, reordered, copied from another object "
                    + "or written without this repository's key"
            case .misalignedRange: what = "was read in a range that does not fall on encrypted segment boundaries"
            }
            return TSBackupError(.failed, """
                The repository object \(name) \(what). It was not used. Run tsbackup verify on the backup \
                that holds it and take another backup if it is damaged.
                """)
        case let .plaintextReadMismatch(name, expected, got):
            return TSBackupError(.failed, """
                Reading \(name) to encrypt it returned \(got) bytes where \(expected) were expected; the file \
                changed or shrank while it was being stored. Run the backup again.
                """)
        case .keyDerivationFailed:
            return TSBackupError(.failed, """
                Deriving the encryption key from the passphrase failed inside the crypto library (out of \
                memory?). Free memory and try again.
                """)
        }
    }
}
