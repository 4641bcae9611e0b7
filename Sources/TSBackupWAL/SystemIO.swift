#if canImport(Glibc)
import Glibc
#endif

/// read(2) and write(2), and their positioned forms, through EINTR and short counts: the one
/// loop every file read and write of tsbackup and tsbackup-wal goes through. Each caller keeps
/// its own error, type and words: `failure` makes it from the failed call's errno code (read
/// at once, before anything else can change errno).
package enum SystemIO {
    /// An errno code, for callers that only need to know a call failed.
    package struct Errno: Error {
        package let code: Int32
        package init(code: Int32) { self.code = code }
    }

    /// One read into `buffer`, retried on EINTR: the bytes read, 0 at the end of the file.
    package static func readSome<Failure: Error>(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer,
                                                 failure: (_ code: Int32) -> Failure) throws(Failure) -> Int {
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let code = errno
            if code != EINTR { throw failure(code) }
        }
    }

    /// Fills `buffer` from the file's position, or from `offset` (pread, the position unchanged):
    /// the bytes read, fewer than the buffer holds only at the end of the file.
    package static func readFull<Failure: Error>(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64? = nil,
                                                 failure: (_ code: Int32) -> Failure) throws(Failure) -> Int {
        var filled = 0
        while filled < buffer.count {
            let start = buffer.baseAddress! + filled
            let count = buffer.count - filled
            let n = if let offset { pread(fd, start, count, off_t(offset) + off_t(filled)) } else { read(fd, start, count) }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw failure(code)
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    /// Writes all of `bytes` at the file's position, or at `offset` (pwrite), through short
    /// writes and EINTR. A write that takes nothing fails with EIO rather than trying forever.
    package static func writeAll<Failure: Error>(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64? = nil,
                                                 failure: (_ code: Int32) -> Failure) throws(Failure) {
        var done = 0
        while done < bytes.count {
            let start = bytes.baseAddress! + done
            let count = bytes.count - done
            let n = if let offset { pwrite(fd, start, count, off_t(offset) + off_t(done)) } else { write(fd, start, count) }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw failure(code)
            }
            if n == 0 { throw failure(EIO) }
            done += n
        }
    }
}
