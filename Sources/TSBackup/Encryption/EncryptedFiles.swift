import Foundation

extension RepositoryEncryption {
    /// Encrypts the file at `source` into a new file at `destination` (replaced if present), as the
    /// object stored under `name`, one segment at a time (memory stays a few MiB whatever the
    /// size). Returns the encrypted size, `encryptedSize(plaintextSize:)` of the file's size. A
    /// file that shrinks or grows meanwhile is an error. On failure the destination is removed.
    @discardableResult
    public func encryptFile(at source: String, to destination: String, name: String) throws -> Int64 {
        try transform(from: source, to: destination) { input, output in
            let size = try Self.size(of: input, path: source)
            let encryptor = makeEncryptor(name: name, plaintextSize: size)
            let stride = Int64(segmentSize + ObjectFormat.tagSize)
            var nextPlaintext: Int64 = 0
            for range in encryptor.segmentAlignedRanges(targetSize: stride) {
                let sealed = try encryptor.ciphertext(in: range) { plain in
                    // Ranges come in order, so the file is read front to back once.
                    precondition(plain.lowerBound == nextPlaintext, "segment ranges out of order")
                    nextPlaintext = plain.upperBound
                    return try Self.read(input, count: plain.count, path: source)
                }
                try Self.write(output, sealed, path: destination)
            }
            guard try Self.read(input, count: 1, path: source).isEmpty else {
                throw EncryptionError.plaintextReadMismatch(name: name, expected: Int(size), got: Int(size) + 1)
            }
            return encryptor.ciphertextSize
        }
    }

    /// Decrypts the encrypted file at `source`, stored under `name`, into a new file at
    /// `destination` (replaced if present), one segment at a time, checking every segment and that
    /// the object ends with its final segment (the file's size decides which one that is).
    /// Returns the plaintext size. On failure the destination is removed, so no unauthenticated
    /// plaintext is left behind.
    @discardableResult
    public func decryptFile(at source: String, to destination: String, name: String) throws -> Int64 {
        try transform(from: source, to: destination) { input, output in
            let size = try Self.size(of: input, path: source)
            // A copy: what `read` returns is overwritten by the next read.
            let header = Data([UInt8](try Self.read(input, count: Int(min(size, Int64(ObjectFormat.headerSize))), path: source)))
            let decryptor = try makeDecryptor(name: name, header: header, ciphertextSize: size)
            let stride = Int64(decryptor.segmentSize + ObjectFormat.tagSize)
            for range in decryptor.segmentAlignedRanges(targetSize: stride) {
                // The header was read already; a range may start right after it.
                let start = max(range.lowerBound, Int64(ObjectFormat.headerSize))
                let sealed = try Self.read(input, count: Int(range.upperBound - start), path: source)
                guard sealed.count == Int(range.upperBound - start) else {
                    throw EncryptionError.objectRejected(name: name, problem: .truncated)
                }
                try Self.write(output, try decryptor.plaintext(ciphertextOffset: start, sealed), path: destination)
            }
            return decryptor.plaintextSize
        }
    }

    /// Opens `source`, creates `destination` (mode 600), runs `body`, and removes the destination
    /// if anything fails. No fsync: callers sync whole trees at once (`FileSystem.syncTree`), and
    /// scratch copies for a restore need none.
    private func transform(from source: String, to destination: String,
                           body: (RawFile, RawFile) throws -> Int64) throws -> Int64 {
        let input = try RawFile(path: source, flags: O_RDONLY)
        defer { input.close() }
        let output: RawFile
        do {
            output = try RawFile(path: destination, flags: O_WRONLY | O_CREAT | O_TRUNC)
        } catch {
            throw FileSystem.ioError("create \(destination)")
        }
        do {
            defer { output.close() }
            return try body(input, output)
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }

    private static func size(of file: RawFile, path: String) throws -> Int64 {
        var info = stat()
        guard fstat(file.fd, &info) == 0 else { throw FileSystem.ioError("read \(path)") }
        return Int64(info.st_size)
    }

    /// Up to `count` bytes; fewer only at the end of the file. The bytes live in the file's
    /// reused buffer and are valid until the next read: a fresh megabyte buffer per read costs
    /// page faults that measured more than the encryption itself.
    private static func read(_ file: RawFile, count: Int, path: String) throws -> Data {
        guard count > 0 else { return Data() }
        let buffer = file.buffer(count)
        let done = try SystemIO.readFull(file.fd, into: UnsafeMutableRawBufferPointer(start: buffer, count: count)) {
            FileSystem.ioError("read \(path)", code: $0)
        }
        return Data(bytesNoCopy: buffer, count: done, deallocator: .none)
    }

    private static func write(_ file: RawFile, _ data: Data, path: String) throws {
        try data.withUnsafeBytes { try FileSystem.writeAll(file.fd, $0, path: path) }
    }
}

/// A file descriptor opened by the file helpers, with one read buffer reused for every read.
/// Used by one call on one thread, never shared.
private final class RawFile {
    let fd: Int32
    private var storage: UnsafeMutableRawPointer?
    private var capacity = 0

    init(path: String, flags: Int32) throws {
        fd = open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystem.ioError("open \(path)") }
    }

    /// A buffer of at least `count` bytes, reused while large enough.
    func buffer(_ count: Int) -> UnsafeMutableRawPointer {
        if let storage, capacity >= count { return storage }
        storage?.deallocate()
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
        storage = fresh
        capacity = count
        return fresh
    }

    func close() {
        _ = Foundation.close(fd)
        storage?.deallocate()
        storage = nil
    }
}
