import Testing
import TSBackup

/// The automatic archive format: custom for many small tables, directory where data is heavy or
/// tables are few (``BackupManifest/FormatChoice``).
@Suite("backup format choice")
struct FormatChoiceTests {
    @Test("thousands of small chunks get one custom-format file")
    func manySmallChunks() {
        // The 5,023-chunk benchmark point: one 8 kB page per chunk.
        let choice = BackupManifest.FormatChoice.automatic(tables: 5_050, tableBytes: 5_050 * 8_192, jobs: 2)
        #expect(choice.format == .custom)
        #expect(choice.chosenBy == "auto")
        #expect(choice.reason.contains("5050 tables averaging"))
        #expect((choice.estimatedCustomSeconds ?? .infinity) < (choice.estimatedDirectorySeconds ?? 0))
    }

    @Test("heavy data in few chunks keeps the parallel directory format")
    func dataHeavy() {
        // The data-heavy benchmark point: about 300 MB of heap in a few dozen tables.
        let choice = BackupManifest.FormatChoice.automatic(tables: 45, tableBytes: 300_000_000, jobs: 2)
        #expect(choice.format == .directory)
        #expect(choice.reason.contains("2 parallel jobs"), "\(choice.reason)")
        // A few megabytes in a few tables are enough to keep the parallel format.
        #expect(BackupManifest.FormatChoice.automatic(tables: 20, tableBytes: 10_000_000, jobs: 2).format == .directory)
    }

    @Test("many chunks that each hold much data keep the directory format")
    func manyLargeChunks() {
        let choice = BackupManifest.FormatChoice.automatic(tables: 5_000, tableBytes: 5_000 * 10_000_000, jobs: 2)
        #expect(choice.format == .directory)
        #expect(choice.reason.contains("parallel jobs"))
        // With a single job the directory format gains nothing from parallelism.
        #expect(BackupManifest.FormatChoice.automatic(tables: 5_000, tableBytes: 5_000 * 10_000_000, jobs: 1).format == .custom)
    }

    @Test("a small database (few tables, little data) gets one custom-format file")
    func smallDatabase() {
        // The benchmark's 26-chunk point: 58 tables, about 80 kB.
        let small = BackupManifest.FormatChoice.automatic(tables: 58, tableBytes: 80_000, jobs: 2)
        #expect(small.format == .custom)
        #expect(small.reason.contains("58 tables averaging"), "\(small.reason)")
        #expect(BackupManifest.FormatChoice.automatic(tables: 1, tableBytes: 8_192, jobs: 2).format == .custom)
        #expect(BackupManifest.FormatChoice.automatic(tables: 0, tableBytes: 0, jobs: 2).format == .custom)
    }

    @Test("the user's --format is recorded as theirs")
    func userChoice() {
        let choice = BackupManifest.FormatChoice.user(.directory, tables: 5_000, tableBytes: 1)
        #expect(choice.format == .directory)
        #expect(choice.chosenBy == "user")
        #expect(choice.estimatedCustomSeconds == nil)
    }
}
