import Crypto
import Foundation
import Testing
import _CryptoExtras
@testable import TSBackup

private func testData(seed: UInt64, count: Int) -> Data {
    var bytes = SplitMix(seed: seed)
    return bytes.data(count)
}

private let hexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
private let otherHexKey = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
private let cheapScrypt = RepositoryEncryption.ScryptCost(n: 1 << 10, r: 8, p: 1)
/// Small segments so multi-segment cases stay small; the format is the same at any segment size.
private let smallSegment = 4096

private func keyFile(_ text: String, path: String = "/test/key") throws -> EncryptionKeyFile {
    try EncryptionKeyFile(path: path, contents: Array(text.utf8))
}

private func repository(_ key: String = hexKey, segmentSize: Int = smallSegment) throws -> RepositoryEncryption {
    try RepositoryEncryption.create(keyFile: keyFile(key), scryptCost: cheapScrypt, segmentSize: segmentSize).0
}

/// A private temporary directory, removed by the caller.
private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "tsbackup-encryption-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private func writeKeyFile(_ text: String, in directory: String, mode: Int = 0o600) throws -> String {
    let path = directory + "/key-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
    return path
}

private func flip(_ data: Data, at offset: Int) -> Data {
    var copy = data
    copy[copy.startIndex + offset] ^= 0x01
    return copy
}

@Suite("client-side encryption: format, keys, tampering")
struct EncryptionTests {
    let rejectedA = EncryptionError.objectRejected(name: "backups/a/dump/toc.dat", problem: .authenticationFailed)

    // MARK: Round trips

    @Test(arguments: [0, 1, smallSegment - 1, smallSegment, smallSegment + 1, 3 * smallSegment, 3 * smallSegment + 5])
    func roundTripsEverySize(size: Int) throws {
        let encryption = try repository()
        var bytes = SplitMix(seed: UInt64(size))
        let plaintext = bytes.data(size)
        let name = "backups/x/dump/\(size).dat"

        let whole = try encryption.encrypt(plaintext, name: name)
        #expect(Int64(whole.count) == encryption.encryptedSize(plaintextSize: Int64(size)))
        #expect(try encryption.decrypt(whole, name: name) == plaintext)
        // Same size as the expected segment count: one 16-byte tag per segment, at least one.
        let segments = max(1, (size + smallSegment - 1) / smallSegment)
        #expect(whole.count == RepositoryEncryption.headerSize + size + 16 * segments)

        // The streaming encryptor, fed in odd pieces, yields the same format.
        var stream = encryption.makeStreamEncryptor(name: name)
        var streamed = Data()
        var offset = 0
        while offset < size {
            let piece = min(size - offset, 1000 + offset % 3)
            streamed.append(try stream.update(plaintext.subdata(in: offset..<(offset + piece))))
            offset += piece
        }
        streamed.append(try stream.finish())
        #expect(streamed.count == whole.count)
        #expect(try encryption.decrypt(streamed, name: name) == plaintext)

        // The streaming decryptor, fed in odd pieces, checks the final segment.
        var decryptor = encryption.makeStreamDecryptor(name: name)
        var decrypted = Data()
        offset = 0
        while offset < whole.count {
            let piece = min(whole.count - offset, 777)
            decrypted.append(try decryptor.update(whole.subdata(in: offset..<(offset + piece))))
            offset += piece
        }
        decrypted.append(try decryptor.finish())
        #expect(decrypted == plaintext)

        // Pieces of other shapes: all at once, exactly one segment (plaintext) or one stride
        // (ciphertext) at a time, and one more byte than that.
        for piece in [Int.max, smallSegment, smallSegment + 1] {
            var encryptor = encryption.makeStreamEncryptor(name: name)
            var sealed = Data()
            for start in stride(from: 0, to: size, by: min(piece, max(size, 1))) {
                sealed.append(try encryptor.update(plaintext.subdata(in: start..<min(size, start + piece))))
            }
            sealed.append(try encryptor.finish())
            #expect(try encryption.decrypt(sealed, name: name) == plaintext)
        }
        for piece in [Int.max, smallSegment + 16, smallSegment + 17, 44] {
            var decryptor = encryption.makeStreamDecryptor(name: name)
            var opened = Data()
            for start in stride(from: 0, to: whole.count, by: min(piece, whole.count)) {
                opened.append(try decryptor.update(whole.subdata(in: start..<min(whole.count, start + piece))))
            }
            opened.append(try decryptor.finish())
            #expect(opened == plaintext, "pieces of \(piece)")
        }
    }

    @Test func exactlyOneDefaultSegment() throws {
        let encryption = try repository(segmentSize: RepositoryEncryption.defaultSegmentSize)
        var bytes = SplitMix(seed: 7)
        let plaintext = bytes.data(1 << 20)
        let sealed = try encryption.encrypt(plaintext, name: "one")
        #expect(sealed.count == 44 + (1 << 20) + 16)
        #expect(try encryption.decrypt(sealed, name: "one") == plaintext)
    }

    @Test func everyEncryptionIsFresh() throws {
        let encryption = try repository()
        let plaintext = Data("same bytes".utf8)
        // A random salt per object: the same plaintext under the same name never repeats.
        #expect(try encryption.encrypt(plaintext, name: "n") != encryption.encrypt(plaintext, name: "n"))
    }

    // MARK: Ranges

    @Test func arbitraryRangesMatchTheWholeEncryption() throws {
        let encryption = try repository()
        var bytes = SplitMix(seed: 42)
        let size = 5 * smallSegment + 123
        let plaintext = bytes.data(size)
        let encryptor = encryption.makeEncryptor(name: "backups/r/dump/1.dat", plaintextSize: Int64(size))
        var reads: [Range<Int64>] = []
        func reader(_ range: Range<Int64>) -> Data {
            reads.append(range)
            return plaintext.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
        }
        let whole = try encryptor.ciphertext(in: 0..<encryptor.ciphertextSize, reader: reader)
        #expect(Int64(whole.count) == encryptor.ciphertextSize)
        #expect(try encryption.decrypt(whole, name: "backups/r/dump/1.dat") == plaintext)

        // Random ranges, including ones inside the header, across segment and tag boundaries.
        for _ in 0..<200 {
            let low = bytes.int(0..<encryptor.ciphertextSize)
            let high = bytes.int(low..<(encryptor.ciphertextSize + 1))
            let piece = try encryptor.ciphertext(in: low..<high, reader: reader)
            #expect(piece == whole.subdata(in: Int(low)..<Int(high)))
        }
        // A random partition reassembles to the whole.
        var cuts: [Int64] = [0, encryptor.ciphertextSize]
        for _ in 0..<9 { cuts.append(bytes.int(0..<encryptor.ciphertextSize)) }
        cuts.sort()
        var reassembled = Data()
        for (low, high) in zip(cuts, cuts.dropFirst()) {
            reassembled.append(try encryptor.ciphertext(in: low..<high, reader: reader))
        }
        #expect(reassembled == whole)
        // The reader is only ever asked for plaintext inside the object.
        #expect(reads.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= Int64(size) })
    }

    @Test func asyncReaderAndShortReadIsRefused() async throws {
        let encryption = try repository()
        let plaintext = testData(seed: 3, count: 2 * smallSegment + 9)
        let encryptor = encryption.makeEncryptor(name: "obj", plaintextSize: Int64(plaintext.count))
        let whole = try await encryptor.ciphertext(in: 0..<encryptor.ciphertextSize, asyncReader: { range in
            plaintext.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
        })
        #expect(try encryption.decrypt(whole, name: "obj") == plaintext)
        // A file that shrank under us is an error, never a short object.
        #expect(throws: EncryptionError.plaintextReadMismatch(name: "obj", expected: smallSegment, got: 10)) {
            _ = try encryptor.ciphertext(in: 100..<200) { _ in Data(count: 10) }
        }
    }

    @Test func segmentAlignedPartsUploadAndDownloadInParallel() async throws {
        let encryption = try repository()
        var bytes = SplitMix(seed: 11)
        let size = 10 * smallSegment + 1
        let plaintext = bytes.data(size)
        let name = "backups/p/dump/big.dat"
        let encryptor = encryption.makeEncryptor(name: name, plaintextSize: Int64(size))
        let parts = encryptor.segmentAlignedRanges(targetSize: 3 * Int64(smallSegment + 16) + 100)
        #expect(parts.count == 4)  // 11 segments, 3 per part
        #expect(parts.first?.lowerBound == 0 && parts.last?.upperBound == encryptor.ciphertextSize)
        #expect(zip(parts, parts.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })

        // "Upload": encrypt parts concurrently, each reading only its own plaintext.
        let uploaded = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for (i, part) in parts.enumerated() {
                group.addTask {
                    (i, try encryptor.ciphertext(in: part) { range in
                        plaintext.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
                    })
                }
            }
            var pieces: [Int: Data] = [:]
            for try await (i, data) in group { pieces[i] = data }
            return parts.indices.reduce(into: Data()) { $0.append(pieces[$1]!) }
        }

        // "Download": decrypt aligned ranges concurrently from the stored object.
        let decryptor = try encryption.makeDecryptor(name: name, header: uploaded.prefix(RepositoryEncryption.headerSize),
                                                     ciphertextSize: Int64(uploaded.count))
        #expect(decryptor.plaintextSize == Int64(size))
        let downloads = decryptor.segmentAlignedRanges(targetSize: 2 * Int64(smallSegment + 16))
        let restored = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for (i, range) in downloads.enumerated() {
                group.addTask {
                    let expected = try decryptor.plaintextRange(ofCiphertext: range)
                    let plain = try decryptor.plaintext(ciphertextOffset: range.lowerBound,
                                                        uploaded.subdata(in: Int(range.lowerBound)..<Int(range.upperBound)))
                    #expect(Int64(plain.count) == Int64(expected.count))
                    return (i, plain)
                }
            }
            var pieces: [Int: Data] = [:]
            for try await (i, data) in group { pieces[i] = data }
            return downloads.indices.reduce(into: Data()) { $0.append(pieces[$1]!) }
        }
        #expect(restored == plaintext)

        // A range that does not start on a segment is refused, not guessed.
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .misalignedRange)) {
            _ = try decryptor.plaintext(ciphertextOffset: 50, uploaded.subdata(in: 50..<100))
        }
    }

    // MARK: Tampering

    @Test func flippedBytesAnywhereAreDetected() throws {
        let encryption = try repository()
        let name = "backups/a/dump/toc.dat"
        let plaintext = testData(seed: 5, count: 2 * smallSegment + 100)
        let sealed = try encryption.encrypt(plaintext, name: name)
        let tagOfSegment0 = 44 + smallSegment
        let offsets = [11, 13, 43, 44, 44 + 17, tagOfSegment0, tagOfSegment0 + 15, sealed.count - 17, sealed.count - 1]
        for offset in offsets {
            #expect(throws: rejectedA, "flip at \(offset)") { _ = try encryption.decrypt(flip(sealed, at: offset), name: name) }
        }
        // Header fields: magic, version, segment size.
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .notEncrypted)) {
            _ = try encryption.decrypt(flip(sealed, at: 0), name: name)
        }
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .unsupportedFormat)) {
            _ = try encryption.decrypt(flip(sealed, at: 6), name: name)
        }
        // Segment size 4096 -> 12288, a plausible geometry for this length: the header is authenticated.
        var resized = sealed
        resized[10] = 0x30
        #expect(throws: rejectedA) { _ = try encryption.decrypt(resized, name: name) }
        // Segment size 0: refused before any buffer is sized by it.
        resized[10] = 0
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .malformedHeader)) {
            _ = try encryption.decrypt(resized, name: name)
        }
        // The ranged decryptor checks the header it is given against the data's header.
        let decryptor = try encryption.makeDecryptor(name: name, header: sealed, ciphertextSize: Int64(sealed.count))
        #expect(throws: rejectedA) { _ = try decryptor.plaintext(ciphertextOffset: 0, flip(sealed, at: 20)) }
    }

    @Test func droppingTheFinalSegmentIsDetected() throws {
        let encryption = try repository()
        let name = "backups/a/dump/toc.dat"
        for size in [3 * smallSegment, 3 * smallSegment + 50] {
            let sealed = try encryption.encrypt(testData(seed: 9, count: size), name: name)
            // Cut at the end of segment 1: what is left is a well-formed run of two full segments.
            let cut = sealed.prefix(44 + 2 * (smallSegment + 16))
            #expect(throws: rejectedA) { _ = try encryption.decrypt(cut, name: name) }
            var stream = encryption.makeStreamDecryptor(name: name)
            _ = try stream.update(cut)
            #expect(throws: rejectedA) { _ = try stream.finish() }
            // A cut inside a segment leaves a length no object has.
            #expect(throws: EncryptionError.objectRejected(name: name, problem: .truncated)) {
                _ = try encryption.decrypt(sealed.prefix(44 + 2 * (smallSegment + 16) + 7), name: name)
            }
            // Only the header: no final segment at all.
            var headerOnly = encryption.makeStreamDecryptor(name: name)
            _ = try headerOnly.update(sealed.prefix(44))
            #expect(throws: EncryptionError.objectRejected(name: name, problem: .truncated)) { _ = try headerOnly.finish() }
        }
    }

    @Test func reorderedSegmentsAreDetected() throws {
        let encryption = try repository()
        let name = "backups/a/dump/toc.dat"
        let sealed = try encryption.encrypt(testData(seed: 10, count: 3 * smallSegment), name: name)
        let stride = smallSegment + 16
        let s0 = sealed.subdata(in: 44..<(44 + stride)), s1 = sealed.subdata(in: (44 + stride)..<(44 + 2 * stride))
        var swapped = sealed.prefix(44)
        swapped.append(s1)
        swapped.append(s0)
        swapped.append(sealed.suffix(from: 44 + 2 * stride))
        #expect(swapped.count == sealed.count)
        #expect(throws: rejectedA) { _ = try encryption.decrypt(swapped, name: name) }
    }

    @Test func segmentsSwappedBetweenObjectsAreDetected() throws {
        let encryption = try repository()
        let nameA = "backups/a/dump/toc.dat", nameB = "backups/a/dump/1234.dat"
        let a = try encryption.encrypt(testData(seed: 1, count: 2 * smallSegment), name: nameA)
        let b = try encryption.encrypt(testData(seed: 2, count: 2 * smallSegment), name: nameB)
        // B's first segment at A's first segment's place.
        var mixed = a
        mixed.replaceSubrange(44..<(44 + smallSegment + 16), with: b.subdata(in: 44..<(44 + smallSegment + 16)))
        #expect(throws: rejectedA) { _ = try encryption.decrypt(mixed, name: nameA) }
        // Even between two encryptions of the same object under the same name.
        let a2 = try encryption.encrypt(testData(seed: 1, count: 2 * smallSegment), name: nameA)
        var mixed2 = a
        mixed2.replaceSubrange(44..<(44 + smallSegment + 16), with: a2.subdata(in: 44..<(44 + smallSegment + 16)))
        #expect(throws: rejectedA) { _ = try encryption.decrypt(mixed2, name: nameA) }
    }

    @Test func anObjectUnderAnotherNameIsRefused() throws {
        let encryption = try repository()
        // What an attacker with write access to the bucket could try: put a roles.sql where a
        // backup's roles.sql was, or one backup's manifest in place of another's.
        let sealed = try encryption.encrypt(Data("CREATE ROLE x;".utf8), name: "backups/b/roles.sql")
        #expect(throws: EncryptionError.objectRejected(name: "backups/a/roles.sql", problem: .authenticationFailed)) {
            _ = try encryption.decrypt(sealed, name: "backups/a/roles.sql")
        }
        #expect(try encryption.decrypt(sealed, name: "backups/b/roles.sql") == Data("CREATE ROLE x;".utf8))
    }

    @Test func anotherKeyCannotDecryptOrForge() throws {
        let mine = try repository(hexKey)
        let theirs = try repository(otherHexKey)
        let sealed = try mine.encrypt(Data("manifest".utf8), name: "backups/a/manifest.json")
        #expect(throws: EncryptionError.objectRejected(name: "backups/a/manifest.json", problem: .authenticationFailed)) {
            _ = try theirs.decrypt(sealed, name: "backups/a/manifest.json")
        }
        // The same key file in two repositories still yields unrelated master keys (per-repository salt).
        let again = try repository(hexKey)
        #expect(throws: EncryptionError.objectRejected(name: "backups/a/manifest.json", problem: .authenticationFailed)) {
            _ = try again.decrypt(sealed, name: "backups/a/manifest.json")
        }
        // Plaintext is refused where ciphertext belongs.
        #expect(throws: EncryptionError.objectRejected(name: "m", problem: .notEncrypted)) {
            _ = try mine.decrypt(Data(String(repeating: "{\"backup\": 1}", count: 10).utf8), name: "m")
        }
    }

    // MARK: Keys and parameters

    @Test func passphraseRepositoryOpensWithTheSamePassphraseOnly() throws {
        let (created, parameters) = try RepositoryEncryption.create(keyFile: keyFile("correct horse battery staple\n"), scryptCost: cheapScrypt)
        #expect(parameters.kdf == .init(name: "scrypt", n: 1024, r: 8, p: 1))
        #expect(parameters.segmentSize == RepositoryEncryption.defaultSegmentSize)
        // The parameters survive the marker's JSON.
        let json = try JSONEncoder().encode(parameters)
        let keys = try #require(JSONSerialization.jsonObject(with: json) as? [String: Any]).keys.sorted()
        #expect(keys == ["algorithm", "checksum", "kdf", "key_check", "salt", "segment_size", "version"])
        let decoded = try JSONDecoder().decode(RepositoryEncryption.Parameters.self, from: json)
        #expect(decoded == parameters)
        // The trailing newline is not part of the passphrase.
        let opened = try RepositoryEncryption.open(keyFile: keyFile("correct horse battery staple"), parameters: decoded)
        let sealed = try created.encrypt(Data("roles".utf8), name: "backups/a/roles.sql")
        #expect(try opened.decrypt(sealed, name: "backups/a/roles.sql") == Data("roles".utf8))

        #expect(throws: EncryptionError.wrongKey) {
            _ = try RepositoryEncryption.open(keyFile: keyFile("correct horse battery stapl3"), parameters: decoded)
        }
        #expect(throws: EncryptionError.keyKindMismatch(repositoryUses: .passphrase, keyFileHolds: .rawKey)) {
            _ = try RepositoryEncryption.open(keyFile: keyFile(hexKey), parameters: decoded)
        }
        #expect(EncryptionError.wrongKey.tsbackupError.kind == .permission)
        #expect(EncryptionError.wrongKey.tsbackupError.exitCode == 3)
        #expect(EncryptionError.keyRequired.tsbackupError.exitCode == 3)
    }

    @Test func rawKeyRepositoryOpensWithTheSameKeyOnly() throws {
        let (created, parameters) = try RepositoryEncryption.create(keyFile: keyFile(hexKey))
        #expect(parameters.kdf == .init(name: "hkdf-sha256"))
        // The same 32 bytes in base64 are the same key.
        let base64 = Data(EncryptionKeyFile.rawKey(in: Array(hexKey.utf8))!).base64EncodedString()
        let opened = try RepositoryEncryption.open(keyFile: keyFile(base64 + "\n"), parameters: parameters)
        let sealed = try created.encrypt(Data(), name: "e")
        #expect(try opened.decrypt(sealed, name: "e") == Data())
        #expect(throws: EncryptionError.wrongKey) { _ = try RepositoryEncryption.open(keyFile: keyFile(otherHexKey), parameters: parameters) }
        #expect(throws: EncryptionError.keyKindMismatch(repositoryUses: .rawKey, keyFileHolds: .passphrase)) {
            _ = try RepositoryEncryption.open(keyFile: keyFile("a long enough passphrase"), parameters: parameters)
        }
    }

    @Test func keyAndMarkerMustAgreeOnEncryption() throws {
        let file = try keyFile(hexKey)
        let (created, parameters) = try RepositoryEncryption.create(keyFile: file)
        #expect(try RepositoryEncryption.forExistingRepository(keyFile: nil, parameters: nil) == nil)
        #expect(throws: EncryptionError.keyRequired) { _ = try RepositoryEncryption.forExistingRepository(keyFile: nil, parameters: parameters) }
        #expect(throws: EncryptionError.repositoryNotEncrypted) { _ = try RepositoryEncryption.forExistingRepository(keyFile: file, parameters: nil) }
        #expect(throws: EncryptionError.wrongKey) {
            _ = try RepositoryEncryption.forExistingRepository(keyFile: keyFile(otherHexKey), parameters: parameters)
        }
        let opened = try #require(try RepositoryEncryption.forExistingRepository(keyFile: file, parameters: parameters))
        #expect(try opened.decrypt(created.encrypt(Data("x".utf8), name: "x"), name: "x") == Data("x".utf8))
        #expect(EncryptionError.repositoryNotEncrypted.tsbackupError.exitCode == 5)
    }

    @Test func corruptParametersAreToldApartFromAWrongKey() throws {
        let file = try keyFile("a long enough passphrase")
        let (_, good) = try RepositoryEncryption.create(keyFile: file, scryptCost: cheapScrypt)
        func resealed(_ change: (inout RepositoryEncryption.Parameters) -> Void) -> RepositoryEncryption.Parameters {
            var p = good
            change(&p)
            p.checksum = p.computedChecksum
            return p
        }
        func isCorrupt(_ p: RepositoryEncryption.Parameters) -> Bool {
            do { _ = try RepositoryEncryption.open(keyFile: file, parameters: p); return false } catch {
                if case .corruptParameters = error { return true }
                return false
            }
        }
        func isUnsupported(_ p: RepositoryEncryption.Parameters) -> Bool {
            do { _ = try RepositoryEncryption.open(keyFile: file, parameters: p); return false } catch {
                if case .unsupportedParameters = error { return true }
                return false
            }
        }
        // Damage (one changed character anywhere) is reported as damage, with the right key too.
        var salt = good; salt.salt = String(salt.salt.reversed())
        var check = good; check.keyCheck = (check.keyCheck.hasPrefix("A") ? "B" : "A") + check.keyCheck.dropFirst()
        var sum = good; sum.checksum = String(sum.checksum.reversed())
        var size = good; size.segmentSize += 1
        for p in [salt, check, sum, size] { #expect(isCorrupt(p)) }
        // Well-formed but unknown or hostile settings are refused before any key derivation.
        var future = good; future.version = 2
        #expect(isUnsupported(future))
        #expect(isUnsupported(resealed { $0.algorithm = "rot13" }))
        #expect(isUnsupported(resealed { $0.kdf.name = "argon2id" }))
        #expect(isUnsupported(resealed { $0.kdf.n = 1 << 30 }))
        #expect(isUnsupported(resealed { $0.kdf.n = 3000 }))
        #expect(isCorrupt(resealed { $0.salt = "not base64!" }))
        // A recomputed checksum over changed costs: the key check (keyed) still refuses it.
        #expect(throws: EncryptionError.wrongKey) {
            _ = try RepositoryEncryption.open(keyFile: file, parameters: resealed { $0.kdf.n = 2048 })
        }
        #expect(throws: EncryptionError.wrongKey) {
            _ = try RepositoryEncryption.open(keyFile: file, parameters: resealed { $0.segmentSize = 8192 })
        }
        // The untouched parameters still open.
        _ = try RepositoryEncryption.open(keyFile: file, parameters: good)
        #expect(EncryptionError.corruptParameters(reason: "x").tsbackupError.exitCode == 1)
    }

    @Test func keyFileForms() throws {
        #expect(try keyFile(hexKey).kind == .rawKey)
        #expect(try keyFile(hexKey.uppercased() + "\r\n").kind == .rawKey)
        #expect(try keyFile(Data(repeating: 7, count: 32).base64EncodedString()).kind == .rawKey)
        // 63 hex digits, or base64 of 31 bytes, are passphrases.
        #expect(try keyFile(String(hexKey.dropLast())).kind == .passphrase)
        #expect(try keyFile(Data(repeating: 7, count: 31).base64EncodedString()).kind == .passphrase)
        #expect(try keyFile("twelve chars").kind == .passphrase)
        // A passphrase keeps inner and leading spaces; only trailing line breaks go.
        let a = try RepositoryEncryption.create(keyFile: keyFile(" padded passphrase\n\n"), scryptCost: cheapScrypt)
        _ = try RepositoryEncryption.open(keyFile: keyFile(" padded passphrase"), parameters: a.1)
        #expect(throws: EncryptionError.wrongKey) {
            _ = try RepositoryEncryption.open(keyFile: keyFile("padded passphrase"), parameters: a.1)
        }

        #expect(throws: EncryptionError.keyFileEmpty(path: "/test/key")) { _ = try keyFile("") }
        #expect(throws: EncryptionError.keyFileEmpty(path: "/test/key")) { _ = try keyFile("\n\r\n") }
        #expect(throws: EncryptionError.passphraseTooShort(path: "/test/key", minimum: 12)) { _ = try keyFile("hunter2\n") }
        #expect(EncryptionError.passphraseTooShort(path: "/k", minimum: 12).tsbackupError.exitCode == 64)
    }

    @Test func keyFilesOnDisk() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = try writeKeyFile(hexKey + "\n", in: directory)
        #expect(try EncryptionKeyFile.load(path: good).kind == .rawKey)

        let open = try writeKeyFile(hexKey, in: directory, mode: 0o644)
        #expect(throws: EncryptionError.keyFileTooOpen(path: open, mode: UInt32(0o100644))) { _ = try EncryptionKeyFile.load(path: open) }
        #expect(EncryptionError.keyFileTooOpen(path: open, mode: 0o100644).tsbackupError.message.contains("chmod 600"))
        let groupWritable = try writeKeyFile(hexKey, in: directory, mode: 0o620)
        #expect(throws: (any Error).self) { _ = try EncryptionKeyFile.load(path: groupWritable) }

        do {
            _ = try EncryptionKeyFile.load(path: directory + "/missing")
            Issue.record("a missing key file loaded")
        } catch {
            guard case .keyFileUnreadable(let path, _) = error else {
                Issue.record("\(error)")
                return
            }
            #expect(path == directory + "/missing")
            #expect(error.tsbackupError.exitCode == 3)
        }
        let huge = try writeKeyFile(String(repeating: "x", count: 70_000), in: directory)
        #expect(throws: EncryptionError.keyFileTooLarge(path: huge, limit: 65_536)) { _ = try EncryptionKeyFile.load(path: huge) }

        // The option wins over the environment; the environment is used without the option.
        let passphrase = try writeKeyFile("a long enough passphrase", in: directory)
        #expect(try EncryptionKeyFile.resolve(option: good, environment: ["TSBACKUP_ENCRYPTION_KEY_FILE": passphrase])?.kind == .rawKey)
        #expect(try EncryptionKeyFile.resolve(option: nil, environment: ["TSBACKUP_ENCRYPTION_KEY_FILE": passphrase])?.kind == .passphrase)
        #expect(try EncryptionKeyFile.resolve(option: nil, environment: [:]) == nil)
    }

    @Test func secretsNeverAppearInDescriptionsOrErrors() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let secret = "my very secret passphrase 42"
        let path = try writeKeyFile(secret + "\n", in: directory)
        let file = try EncryptionKeyFile.load(path: path)
        let (encryption, parameters) = try RepositoryEncryption.create(keyFile: file, scryptCost: cheapScrypt)
        let masterHex = encryption.masterKey.withUnsafeBytes { Data($0).map { String(format: "%02x", $0) }.joined() }
        let masterBase64 = encryption.masterKey.withUnsafeBytes { Data($0).base64EncodedString() }

        var texts = [String(describing: file), String(reflecting: file), String(describing: encryption), String(reflecting: encryption)]
        var dumped = ""
        dump(file, to: &dumped)
        dump(encryption, to: &dumped)
        texts.append(dumped)
        let paramsJSON = String(decoding: try JSONEncoder().encode(parameters), as: UTF8.self)
        texts.append(paramsJSON)
        // Every error a wrong or short key can raise.
        let shortPath = try writeKeyFile("short secret", in: directory)  // 12 chars: accepted
        _ = try EncryptionKeyFile.load(path: shortPath)
        let tooShort = try writeKeyFile("s3cr3t!", in: directory)
        do { _ = try EncryptionKeyFile.load(path: tooShort) } catch { texts.append("\(error)") }
        let wrong = try writeKeyFile("the wrong passphrase entirely", in: directory)
        do { _ = try RepositoryEncryption.open(keyFile: EncryptionKeyFile.load(path: wrong), parameters: parameters) } catch {
            texts.append("\(error)")
        }
        let hexPath = try writeKeyFile(hexKey, in: directory)
        do { _ = try RepositoryEncryption.open(keyFile: EncryptionKeyFile.load(path: hexPath), parameters: parameters) } catch {
            texts.append("\(error)")
        }
        #expect(texts.count == 9)
        for text in texts {
            #expect(!text.contains(secret))
            #expect(!text.contains("the wrong passphrase"))
            #expect(!text.contains("s3cr3t"))
            #expect(!text.lowercased().contains(hexKey))
            #expect(!text.contains(masterHex) && !text.contains(masterBase64))
        }
        // The errors name the file, so the user knows which one to fix.
        #expect(texts[6].contains(tooShort))
        #expect(texts[7].contains("encryption key") && texts[8].contains("raw key"))
    }

    @Test func everyErrorIsOneParagraphWithAnExitCode() {
        let problems: [EncryptionError.ObjectProblem] = [.truncated, .notEncrypted, .unsupportedFormat, .malformedHeader,
                                                         .authenticationFailed, .misalignedRange]
        let errors: [EncryptionError] = [
            .keyFileUnreadable(path: "/k", reason: "No such file or directory"), .keyFileTooOpen(path: "/k", mode: 0o100644),
            .keyFileEmpty(path: "/k"), .passphraseTooShort(path: "/k", minimum: 12), .keyFileTooLarge(path: "/k", limit: 65536),
            .keyRequired, .repositoryNotEncrypted, .keyKindMismatch(repositoryUses: .rawKey, keyFileHolds: .passphrase), .wrongKey,
            .corruptParameters(reason: "r"), .unsupportedParameters(reason: "r"),
            .plaintextReadMismatch(name: "n", expected: 2, got: 1), .keyDerivationFailed,
        ] + problems.map { .objectRejected(name: "backups/a/roles.sql", problem: $0) }
        for error in errors {
            let message = error.tsbackupError.message
            #expect(!message.contains("\n") && !message.contains("  ") && message.hasSuffix("."), "\(message)")
            #expect(error.tsbackupError.exitCode != 0)
        }
        // A refused object is named, so the user knows which one.
        for problem in problems {
            #expect(EncryptionError.objectRejected(name: "backups/a/roles.sql", problem: problem).description.contains("backups/a/roles.sql"))
        }
    }

    // MARK: KDF

    @Test func scryptMatchesRFC7914Vectors() throws {
        // RFC 7914 section 12 (the first vector's empty password is not representable here).
        let v2 = try KDF.Scrypt.deriveKey(from: Array("password".utf8), salt: Array("NaCl".utf8), outputByteCount: 64,
                                          rounds: 1024, blockSize: 8, parallelism: 16)
        #expect(v2.withUnsafeBytes { Data($0) } == hexData("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d9"
                                                            + "2e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"))
        // Through tsbackup's own derivation path (the first 32 bytes of the 64-byte vector).
        let v3 = try RepositoryEncryption.deriveMasterKey(.passphrase(Array("pleaseletmein".utf8)),
                                                          kdf: .init(name: "scrypt", n: 16384, r: 8, p: 1),
                                                          salt: Array("SodiumChloride".utf8))
        #expect(v3.withUnsafeBytes { Data($0) } == hexData("7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"))
    }

    @Test func hkdfMatchesRFC5869Vector() {
        // RFC 5869 A.1, as used for raw keys and per-object keys.
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: hexData("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")),
                                         salt: hexData("000102030405060708090a0b0c"), info: hexData("f0f1f2f3f4f5f6f7f8f9"), outputByteCount: 42)
        #expect(key.withUnsafeBytes { Data($0) } == hexData("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"))
    }

    // MARK: Files

    @Test func filesRoundTripAndTamperedFilesLeaveNothing() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let encryption = try repository(segmentSize: RepositoryEncryption.defaultSegmentSize)
        let plaintext = testData(seed: 99, count: 9 * (1 << 20) + 333)  // many 1 MiB reads, a short last segment
        let source = directory + "/plain", sealed = directory + "/sealed", restored = directory + "/restored"
        _ = FileManager.default.createFile(atPath: source, contents: plaintext)
        let name = "backups/f/dump/3.dat"

        let written = try encryption.encryptFile(at: source, to: sealed, name: name)
        #expect(written == encryption.encryptedSize(plaintextSize: Int64(plaintext.count)))
        let sealedData = try Data(contentsOf: URL(fileURLWithPath: sealed))
        #expect(Int64(sealedData.count) == written)
        // Same format as the in-memory path.
        #expect(try encryption.decrypt(sealedData, name: name) == plaintext)
        #expect(try encryption.decryptFile(at: sealed, to: restored, name: name) == Int64(plaintext.count))
        #expect(try Data(contentsOf: URL(fileURLWithPath: restored)) == plaintext)

        // A flipped byte late in the file: refused, and the partly written output is removed.
        let tampered = directory + "/tampered"
        _ = FileManager.default.createFile(atPath: tampered, contents: flip(sealedData, at: sealedData.count - 100))
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .authenticationFailed)) {
            try encryption.decryptFile(at: tampered, to: restored, name: name)
        }
        #expect(!FileManager.default.fileExists(atPath: restored))
        // Dropping the final segment: refused at the end.
        let truncated = directory + "/truncated"
        _ = FileManager.default.createFile(atPath: truncated, contents: sealedData.prefix(44 + 9 * ((1 << 20) + 16)))
        #expect(throws: EncryptionError.objectRejected(name: name, problem: .authenticationFailed)) {
            try encryption.decryptFile(at: truncated, to: restored, name: name)
        }
        #expect(!FileManager.default.fileExists(atPath: restored))
        // An empty file encrypts to a header and one tag.
        let empty = directory + "/empty"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        #expect(try encryption.encryptFile(at: empty, to: sealed, name: "e") == 60)
        #expect(try encryption.decryptFile(at: sealed, to: restored, name: "e") == 0)
    }
}

private func hexData(_ hex: String) -> Data {
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return Data(bytes)
}
