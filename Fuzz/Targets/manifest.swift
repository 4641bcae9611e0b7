// libFuzzer target: a stored manifest, as a repository hands it to tsbackup (after decryption,
// when the repository is encrypted). Covers the checksum wrapper (ManifestChecksum), the
// choice of manifest kind and the three decoders (RepositoryEntry.decoding), the file-name
// confinement every reader applies (EntryPath), and what `list`/`show` compute from a manifest.
import Foundation
@testable import TSBackupFuzzed

private struct IDOnly: Decodable { var id: String }

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    // The fuzz build's SHA-256 must be the real one, or no stored manifest would pass its checksum.
    guard FileSystem.sha256(of: Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" else {
        FuzzInput.violated("the fuzz build's SHA-256 is wrong")
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let stored = FuzzInput.data(bytes, count)
    // Decode under the id the manifest claims, so a decodable manifest goes all the way through.
    var id = "20261127T120000Z"
    switch ManifestChecksum.open(stored) {
    case .checked(let content), .legacy(let content):
        if let claimed = try? JSONOutput.decode(IDOnly.self, from: content) { id = claimed.id }
    case .corrupt:
        break
    }
    let entry = RepositoryEntry.decoding(id: id, manifest: stored, location: "/repo/backups/\(id)")
    if entry.state != .incomplete, entry.problem != nil { FuzzInput.violated("a usable entry with a problem") }
    _ = entry.kind
    _ = entry.error
    for file in entry.files { _ = EntryPath.problem(file.path) }
    try? EntryPath.confine(entry.files, entry: id)
    if let manifest = entry.manifest { exercise(manifest) }
    if let export = entry.hypertable { exercise(export) }
    if let base = entry.base { exercise(base) }
    return 0
}

/// What readers compute from a decoded manifest, and the repository's re-store of it (a failed
/// or re-committed entry is stored again): the stored text must always pass its own checksum.
private func exercise<Manifest: EntryManifest>(_ manifest: Manifest) {
    _ = manifest.totalFileBytes
    if let backup = manifest as? BackupManifest {
        _ = backup.totalRows
        _ = backup.summary
        _ = backup.completionLine
        _ = backup.renderReport()
    } else if let export = manifest as? HypertableManifest {
        _ = export.summary as BackupManifest.Summary
        _ = export.completionLine
        _ = export.renderReport()
    } else if let base = manifest as? BaseBackupManifest {
        _ = base.summary
        _ = base.renderReport()
    }
    guard let restored = try? ManifestChecksum.stored(manifest) else { FuzzInput.violated("a decoded manifest does not encode") }
    guard case .checked = ManifestChecksum.open(restored) else { FuzzInput.violated("a re-stored manifest fails its own checksum") }
}
