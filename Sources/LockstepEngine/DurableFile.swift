import Foundation

/// A small file replaced whole, so that after a crash or a power cut it holds either the old bytes or
/// the new ones, never an empty or partial file: the bytes go to a temporary file beside it, which is
/// synced, renamed over it, and the directory synced (the rename itself then survives).
package enum DurableFile {
    /// Replaces `path` with `bytes`; nil on success, else what failed (the old file is left as it was).
    package static func replace(_ path: String, with bytes: [UInt8]) -> String? {
        // Its own name (two writers in one process, or a file a crash left, are never written into).
        let temporary = path + ".tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return "cannot create \(temporary): \(String(cString: strerror(errno)))" }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            written += count
        }
        var synced = written == bytes.count
        while synced, fsync(descriptor) != 0 {
            if errno != EINTR { synced = false }
        }
        close(descriptor)
        guard synced else {
            unlink(temporary)
            return "cannot write \(temporary) (\(written) of \(bytes.count) bytes written, or not synced)"
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            return "cannot rename \(temporary) to \(path): \(reason)"
        }
        CheckpointFiles.syncDirectory(of: path)
        return nil
    }
}
