// libFuzzer target: what tsbackup reads of an encrypted object before any key is involved: the
// header (ObjectFormat.parseHeader) and the segment arithmetic that turns the object's size, as
// the store reports it (S3's listing or Content-Length: a hostile store chooses it), into
// segments (ObjectFormat.Geometry). The AES-GCM part needs swift-crypto, which the fuzz build
// leaves out; the unit tests (EncryptionTests) cover tampering with segments.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEncryption(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = FuzzInput.data(bytes, count)
    var segmentSize: Int?
    do {
        let parsed = try ObjectFormat.parseHeader(data, name: "backups/20261127T120000Z/manifest.json")
        guard ObjectFormat.segmentSizeRange.contains(parsed.segmentSize), parsed.salt.count == ObjectFormat.saltSize else {
            FuzzInput.violated("a parsed header has a segment size or salt out of range")
        }
        // Round trip: the fields re-encode to exactly the bytes they were read from (the header
        // is authenticated as associated data, so no byte of it may be ignored).
        guard ObjectFormat.makeHeader(segmentSize: parsed.segmentSize, salt: parsed.salt) == Data(data.prefix(ObjectFormat.headerSize)) else {
            FuzzInput.violated("a parsed header does not re-encode to its own bytes")
        }
        segmentSize = parsed.segmentSize
    } catch {
        switch error {
        case .objectRejected(_, let problem) where [.truncated, .notEncrypted, .unsupportedFormat, .malformedHeader].contains(problem):
            break
        default:
            FuzzInput.violated("parseHeader threw \(error)")
        }
    }
    // The object's size and a segment size from the input's last 16 bytes.
    let tail = Array(data.suffix(16)) + [UInt8](repeating: 0, count: max(0, 16 - data.count))
    let sizeBits = tail[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    let seed = tail[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    let range = ObjectFormat.segmentSizeRange
    let size = segmentSize ?? range.lowerBound + Int(seed % UInt64(range.count))
    checkGeometry(segmentSize: size, ciphertextSize: Int64(bitPattern: sizeBits), target: Int64(bitPattern: seed))
    // From the plaintext side: every plaintext size up to 2^50 bytes maps to a ciphertext size
    // that maps back to it.
    let plain = Int64(bitPattern: sizeBits & ((1 << 50) - 1))
    let forward = ObjectFormat.Geometry(segmentSize: size, plaintextSize: plain)
    guard let back = ObjectFormat.Geometry(segmentSize: size, ciphertextSize: forward.ciphertextSize), back == forward else {
        FuzzInput.violated("the ciphertext size of \(plain) plaintext bytes (segments of \(size)) does not map back to it")
    }
    checkGeometry(segmentSize: size, ciphertextSize: forward.ciphertextSize, target: Int64(bitPattern: seed))
    return 0
}

/// What must hold for any size a store claims: refused, or segments that tile the object exactly.
private func checkGeometry(segmentSize: Int, ciphertextSize: Int64, target: Int64) {
    guard let geometry = ObjectFormat.Geometry(segmentSize: segmentSize, ciphertextSize: ciphertextSize) else { return }
    let header = Int64(ObjectFormat.headerSize), tag = Int64(ObjectFormat.tagSize)
    guard geometry.ciphertextSize == ciphertextSize, geometry.plaintextSize >= 0, geometry.segmentCount >= 1 else {
        FuzzInput.violated("geometry of \(ciphertextSize) bytes: \(geometry)")
    }
    let last = geometry.segmentCount - 1
    // The first segment starts after the header, the last ends at the object's end and holds
    // the plaintext's end; only the last may be short, and none but an empty object's is empty.
    guard geometry.ciphertextRange(ofSegment: 0).lowerBound == header,
          geometry.ciphertextRange(ofSegment: last).upperBound == ciphertextSize,
          geometry.plaintextRange(ofSegment: last).upperBound == geometry.plaintextSize,
          geometry.ciphertextRange(ofSegment: last).count == geometry.plaintextRange(ofSegment: last).count + Int(tag),
          last == 0 || geometry.plaintextRange(ofSegment: 0).count == segmentSize,
          geometry.plaintextSize == 0 || !geometry.plaintextRange(ofSegment: last).isEmpty else {
        FuzzInput.violated("segments of a \(ciphertextSize)-byte object do not tile it (\(geometry))")
    }
    // Upload parts: consecutive, from 0 to the end, each ending on a segment boundary (bounded
    // here so a huge claimed size does not make the harness itself slow).
    let perRange = max(1, target / geometry.stride)
    guard geometry.segmentCount / perRange < 4096 else { return }
    var next: Int64 = 0
    for part in geometry.segmentAlignedRanges(targetSize: target) {
        guard part.lowerBound == next, !part.isEmpty else { FuzzInput.violated("upload parts of \(geometry) are not consecutive") }
        next = part.upperBound
    }
    guard next == ciphertextSize else { FuzzInput.violated("upload parts of \(geometry) end at \(next)") }
}
