import Crypto
import Foundation

/// The secret named by `--encryption-key-file FILE` (or `TSBACKUP_ENCRYPTION_KEY_FILE`).
///
/// The file holds either
/// - a raw 256-bit key, written as exactly 64 hexadecimal digits, or as standard base64 of exactly
///   32 bytes (44 characters with its `=` padding); surrounding whitespace and newlines are ignored;
/// - or a passphrase: any other content, used byte for byte except that trailing line breaks
///   (`\n`, `\r\n`) are removed. It must be at least `minimumPassphraseLength` characters.
///
/// The file must not be readable or writable by group or others (like ssh and libpq, tsbackup
/// refuses it). Its content never appears in a description, log or error: `description`,
/// `debugDescription` and reflection show the path and the kind of secret only.
public struct EncryptionKeyFile: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The environment variable that names the key file when the option is absent.
    public static let environmentVariable = "TSBACKUP_ENCRYPTION_KEY_FILE"
    /// Passphrases shorter than this are refused.
    public static let minimumPassphraseLength = 12
    /// No key or passphrase is this large; a larger file is the wrong file.
    public static let maximumFileSize = 64 * 1024

    enum Material: Sendable {
        case rawKey(SymmetricKey)
        case passphrase([UInt8])
    }

    /// Where the key came from, for messages.
    public let path: String
    let material: Material

    /// Whether the file holds a raw key or a passphrase.
    public var kind: EncryptionError.KeyKind {
        switch material {
        case .rawKey: .rawKey
        case .passphrase: .passphrase
        }
    }

    public var description: String { "encryption key file \(path) (\(kind.rawValue))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["path": path, "kind": kind.rawValue]) }

    /// The key file named by the option, else by `TSBACKUP_ENCRYPTION_KEY_FILE`, else none.
    public static func resolve(option: String?, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(EncryptionError) -> EncryptionKeyFile? {
        if let option, !option.isEmpty { return try load(path: option) }
        if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty {
            return try load(path: fromEnvironment)
        }
        return nil
    }

    /// Reads and classifies the key file at `path`.
    public static func load(path: String) throws(EncryptionError) -> EncryptionKeyFile {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw .keyFileUnreadable(path: path, reason: String(cString: strerror(errno)))
        }
        let type = info.st_mode & S_IFMT
        guard type != S_IFDIR else { throw .keyFileUnreadable(path: path, reason: "it is a directory") }
        // Pipes (`<(pass show backup-key)`) have no meaningful permissions; files do.
        if type == S_IFREG, info.st_mode & (S_IRWXG | S_IRWXO) != 0 {
            throw .keyFileTooOpen(path: path, mode: UInt32(info.st_mode))
        }
        let bytes = try readBounded(path: path)
        return try EncryptionKeyFile(path: path, contents: bytes)
    }

    /// Classifies `contents` as a raw key or a passphrase (exposed for tests; `load` is the way in).
    init(path: String, contents: [UInt8]) throws(EncryptionError) {
        self.path = path
        if let key = Self.rawKey(in: contents) {
            material = .rawKey(SymmetricKey(data: key))
            return
        }
        var passphrase = contents
        while let last = passphrase.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") {
            passphrase.removeLast()
        }
        guard !passphrase.isEmpty else { throw .keyFileEmpty(path: path) }
        // Count characters when the passphrase is text, bytes otherwise.
        let length = String(validating: passphrase, as: UTF8.self)?.count ?? passphrase.count
        guard length >= Self.minimumPassphraseLength else {
            throw .passphraseTooShort(path: path, minimum: Self.minimumPassphraseLength)
        }
        material = .passphrase(passphrase)
    }

    /// 32 key bytes when `contents`, trimmed of whitespace, is 64 hex digits or base64 of 32 bytes.
    static func rawKey(in contents: [UInt8]) -> [UInt8]? {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        guard let first = contents.firstIndex(where: { !isSpace($0) }),
              let last = contents.lastIndex(where: { !isSpace($0) }) else { return nil }
        let text = Array(contents[first...last])
        if text.count == 64 {
            var key: [UInt8] = []
            key.reserveCapacity(32)
            var index = 0
            while index < 64 {
                guard let high = hexValue(text[index]), let low = hexValue(text[index + 1]) else { break }
                key.append(high << 4 | low)
                index += 2
            }
            if key.count == 32 { return key }
        }
        if text.count == 44, text.allSatisfy(isBase64),
           let decoded = Data(base64Encoded: Data(text)), decoded.count == 32 {
            return Array(decoded)
        }
        return nil
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func isBase64(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="):
            true
        default: false
        }
    }

    /// Reads at most `maximumFileSize` bytes; more is an error (and never echoed).
    private static func readBounded(path: String) throws(EncryptionError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .keyFileUnreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 1)
        // Wipe the scratch buffer, on every way out: it held key material.
        defer {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            buffer.deallocate()
        }
        while true {
            let n = try SystemIO.readSome(fd, into: buffer) { EncryptionError.keyFileUnreadable(path: path, reason: String(cString: strerror($0))) }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
            if bytes.count > maximumFileSize { throw .keyFileTooLarge(path: path, limit: maximumFileSize) }
        }
        return bytes
    }
}
