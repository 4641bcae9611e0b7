import Foundation

extension RepositoryEncryption {
    /// How much of the file the helpers read at a time, whatever its size. One segment: pieces of
    /// 4 MiB measured twice the kernel time (fresh large buffers fault their pages in each time).
    static let fileChunkSize = 1 << 20

    /// Encrypts the file at `source` into a new file at `destination` (replaced if present), as the
    /// object stored under `name`, in bounded memory. Returns the encrypted size. On failure the
    /// destination is removed.
    @discardableResult
    public func encryptFile(at source: String, to destination: String, name: String) throws -> Int64 {
        var encryptor = makeStreamEncryptor(name: name)
        return try transform(from: source, to: destination,
                             update: { chunk throws(EncryptionError) in try encryptor.update(chunk) },
                             finish: { () throws(EncryptionError) in try encryptor.finish() })
    }

    /// Decrypts the encrypted file at `source`, stored under `name`, into a new file at
    /// `destination` (replaced if present), in bounded memory, checking every segment and that
    /// the object ends with its final segment. Returns the plaintext size. On failure the
    /// destination is removed, so no unauthenticated plaintext is left behind.
    @discardableResult
    public func decryptFile(at source: String, to destination: String, name: String) throws -> Int64 {
        var decryptor = makeStreamDecryptor(name: name)
        return try transform(from: source, to: destination,
                             update: { chunk throws(EncryptionError) in try decryptor.update(chunk) },
                             finish: { () throws(EncryptionError) in try decryptor.finish() })
    }

    private func transform(from source: String, to destination: String,
                           update: (Data) throws(EncryptionError) -> Data,
                           finish: () throws(EncryptionError) -> Data) throws -> Int64 {
        guard let input = FileHandle(forReadingAtPath: source) else { throw FileSystem.ioError("open \(source)") }
        defer { try? input.close() }
        guard FileManager.default.createFile(atPath: destination, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw FileSystem.ioError("create \(destination)")
        }
        do {
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: destination))
            defer { try? output.close() }
            var written: Int64 = 0
            while true {
                let chunk: Data
                do {
                    chunk = try input.read(upToCount: Self.fileChunkSize) ?? Data()
                } catch {
                    throw FileSystem.ioError("read \(source)", underlying: error)
                }
                let produced = chunk.isEmpty ? try finish() : try update(chunk)
                if !produced.isEmpty {
                    do {
                        try output.write(contentsOf: produced)
                    } catch {
                        throw FileSystem.ioError("write \(destination)", underlying: error)
                    }
                    written += Int64(produced.count)
                }
                if chunk.isEmpty { break }
            }
            // No fsync here: callers sync whole trees at once (FileSystem.syncTree), and scratch
            // copies for a restore need none.
            return written
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }
}
