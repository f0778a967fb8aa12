import Crypto
import Foundation
import LockstepCore
import LockstepStore
import LockstepWire

// History bundles (issue 21, docs/history.md, "Bundles"): the events as stored, the checkpoints and the
// public keys in one file anyone can verify offline, with no server and no database; ops/verify-bundle
// checks the same file in Python.
//
// NDJSON, one object per line:
//   {"body_sha256": HEX, "events": N, "head_chain_hash": HEX, "head_sequence": N, "lockstep_bundle": 1}   first
//     (body_sha256: the SHA-256 of every byte after this line's newline, so no byte of the body can change)
//   {"key": {"key_id", "public_key" (base64), "valid_from_ms", "valid_until_ms"?}}      zero or more
//   {"event": {"sequence", "chain_hash" (hex), "record" (base64 of the stored bytes)}}  every event, 1 to N
//   {"checkpoint": {"sequence", "chain_hash", "signed_at_ms", "key_id", "signature", "source"}}
// The chain: hash(n) = SHA-256(hash(n-1) || big-endian uint64 n || record bytes), hash(0) = 32 zero bytes.

public enum HistoryBundle {
    public static let format = 1

    /// Writes the bundle of `log` (its checkpoint events included) to `path`, with the checkpoints of
    /// `checkpointsDirectory` and `keys`: from the log's base (`EventLog.base()`; genesis unless events
    /// were archived) to `end` (default: the head). Stops at the first damaged event (the log must verify).
    ///
    /// An archive segment (`HistoryArchive`) is a bundle with `endCheckpoint`, the signed checkpoint of
    /// its last event, and the header field `archive_segment`; its base is in `base_sequence` and
    /// `base_chain_hash` whenever it does not start at genesis. The file is created (never over another),
    /// written and synced before this returns, its directory too.
    public static func write(_ log: any EventLog, to path: String, checkpointsDirectory: String?, keys: CheckpointKeys?,
                             through end: LogHead? = nil, endCheckpoint: Checkpoint? = nil) async throws -> (events: UInt64, checkpoints: Int) {
        let head: LogHead
        if let end { head = end } else { head = try await log.head() }
        let base = try await log.baseHead()
        // The body first, to a file beside the bundle, hashed as it is written; then the header and the body.
        let bodyPath = path + ".body-\(getpid())"
        guard FileManager.default.createFile(atPath: bodyPath, contents: nil), let out = FileHandle(forWritingAtPath: bodyPath) else {
            throw CheckpointError("cannot write \(bodyPath)")
        }
        defer { try? FileManager.default.removeItem(atPath: bodyPath) }
        var digest = SHA256()
        func line(_ object: [String: Any]) throws {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) + Data("\n".utf8)
            digest.update(data: data)
            try out.write(contentsOf: data)
        }
        for key in keys?.keys ?? [] { try line(["key": key.json]) }
        var checkpoints: [(source: String, checkpoint: Checkpoint)] = []
        var position = base.sequence
        var previous = base.chainHash
        while position < head.sequence {
            let page = try await log.read(after: position, limit: Int(min(UInt64(History.pageEventsMax), head.sequence - position)))
            guard !page.isEmpty else { break }
            for stored in page where stored.sequence <= head.sequence {
                guard previous.next(sequence: stored.sequence, record: stored.record) == stored.chainHash else {
                    throw EventLogError.corrupted(position: stored.sequence, reason: "the chain breaks here; a bundle is written only of a log that verifies")
                }
                previous = stored.chainHash
                try line(["event": ["sequence": stored.sequence, "chain_hash": stored.chainHash.hex, "record": Data(stored.record).base64EncodedString()]])
                if stored.stream.hasPrefix("checkpoint/"), case .checkpoint(let recorded) = try EventRecordCodec.decodeAny(stored.record) {
                    checkpoints.append(("log", recorded.checkpoint))
                }
            }
            position = page.last?.sequence ?? head.sequence
        }
        guard position == head.sequence, previous == head.chainHash else {
            throw EventLogError.corrupted(position: position + 1, reason: "the log ends at \(position), not at the bundle's end \(head.sequence) with its hash")
        }
        if let checkpointsDirectory {
            let loaded = try CheckpointFiles.load(directory: checkpointsDirectory)
            // Those for the events this bundle holds (older ones vouch for archived events, newer ones for later events).
            checkpoints += loaded.checkpoints.filter { end == nil || (base.sequence < $0.checkpoint.sequence && $0.checkpoint.sequence <= head.sequence) }
                .map { (CheckpointFiles.fileName, $0.checkpoint) }
        }
        if let endCheckpoint { checkpoints.append((endSource, endCheckpoint)) }
        for (source, checkpoint) in checkpoints {
            guard var object = try JSONSerialization.jsonObject(with: Data(CheckpointFiles.line(checkpoint).utf8)) as? [String: Any] else { continue }
            object["source"] = source
            try line(["checkpoint": object])
        }
        try out.close()
        var header: [String: Any] = [
            "lockstep_bundle": format, "head_sequence": head.sequence, "head_chain_hash": head.chainHash.hex, "events": head.sequence - base.sequence,
            "body_sha256": Array(digest.finalize()).hexString,
        ]
        if base.sequence > 0 {
            header["base_sequence"] = base.sequence
            header["base_chain_hash"] = base.chainHash.hex
        }
        if endCheckpoint != nil { header["archive_segment"] = 1 }
        let headerLine = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes]) + Data("\n".utf8)
        try writeDurably(path, header: [UInt8](headerLine), bodyFrom: bodyPath)
        return (head.sequence - base.sequence, checkpoints.count)
    }

    /// The `source` of an archive segment's end checkpoint.
    public static let endSource = "archive_end"

    /// Creates `path` (never over an existing file) holding `header` then the bytes of `bodyPath`, copied
    /// in chunks, and syncs the file and its directory.
    static func writeDurably(_ path: String, header: [UInt8], bodyFrom bodyPath: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw CheckpointError(errno == EEXIST ? "\(path) exists; a bundle is never written over a file" : "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var closed = false
        defer { if !closed { close(descriptor) } }
        func put(_ bytes: UnsafeRawBufferPointer) throws {
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                guard written > 0 else { throw CheckpointError("cannot write \(path): \(String(cString: strerror(errno)))") }
                offset += written
            }
        }
        do {
            try header.withUnsafeBytes { try put($0) }
            guard let body = FileHandle(forReadingAtPath: bodyPath) else { throw CheckpointError("cannot read \(bodyPath)") }
            defer { try? body.close() }
            while let chunk = try body.read(upToCount: 1 << 20), !chunk.isEmpty {
                try chunk.withUnsafeBytes { try put($0) }
            }
            guard fsync(descriptor) == 0 else { throw CheckpointError("cannot sync \(path): \(String(cString: strerror(errno)))") }
            closed = true
            guard close(descriptor) == 0 else { throw CheckpointError("cannot close \(path): \(String(cString: strerror(errno)))") }
        } catch {
            // A bundle cut short is never left behind to be taken for a whole one.
            unlink(path)
            throw error
        }
        CheckpointFiles.syncDirectory(of: path)
    }

    /// A bundle's first line, every field checked: compact JSON with sorted keys (one text for one
    /// header), format 1, the head, the base, `events` = head − base, `archive_segment` absent or 1.
    public struct Header: Sendable {
        public var head: LogHead
        public var base: LogHead
        public var bodySHA256: String
        public var isArchiveSegment: Bool

        public init?(_ line: some Collection<UInt8>) {
            let text = String(decoding: line, as: UTF8.self)
            guard let header = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                  let canonical = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes]),
                  String(decoding: canonical, as: UTF8.self) == text,
                  let bodyHash = header["body_sha256"] as? String, [UInt8](hex: bodyHash)?.count == 32,
                  (header["lockstep_bundle"] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) == HistoryBundle.format,
                  let headSequence = (header["head_sequence"] as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }),
                  let headText = header["head_chain_hash"] as? String, let headBytes = [UInt8](hex: headText), let headHash = ChainHash(bytes: headBytes),
                  let base = HistoryBundle.base(of: header), base.sequence <= headSequence,
                  (header["events"] as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }) == headSequence - base.sequence
            else { return nil }
            let segment = header["archive_segment"]
            guard segment == nil || (segment as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) == 1 else { return nil }
            guard Set(header.keys).isSubset(of: ["body_sha256", "lockstep_bundle", "head_sequence", "head_chain_hash", "events", "base_sequence",
                                                 "base_chain_hash", "archive_segment"]) else { return nil }
            self.head = LogHead(sequence: headSequence, chainHash: headHash)
            self.base = base
            self.bodySHA256 = bodyHash
            self.isArchiveSegment = segment != nil
        }
    }

    /// The base a bundle's header names: the event before its first (genesis when it names none).
    /// Nil when the fields are malformed, or present for a base of 0.
    static func base(of header: [String: Any]) -> LogHead? {
        guard let sequence = header["base_sequence"] else { return header["base_chain_hash"] == nil ? .genesis : nil }
        guard let sequence = (sequence as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }), sequence > 0,
              let text = header["base_chain_hash"] as? String, let bytes = [UInt8](hex: text), let hash = ChainHash(bytes: bytes) else { return nil }
        return LogHead(sequence: sequence, chainHash: hash)
    }

    /// What verifying a bundle found.
    public struct Report: Sendable {
        /// Events it holds (after its base).
        public var events: UInt64 = 0
        /// The event before its first (0: it starts at genesis) and that event's chain hash.
        public var baseSequence: UInt64 = 0
        public var baseChainHash = ""
        /// Whether it is an archive segment (`lockstep history archive`), which must end at a signed checkpoint.
        public var isArchiveSegment = false
        public var headSequence: UInt64 = 0
        public var headChainHash = ""
        public var digest = ""
        public var checkpoints = 0
        /// The newest sequence a checkpoint that verified vouches for.
        public var newestCheckpoint: UInt64 = 0
        /// Where the keys came from: "bundle" or the file given.
        public var keysFrom = ""
        /// Problems: the chain, the records, the head, the checkpoints. Empty: it verifies.
        public var problems: [String] = []
    }

    /// Verifies a bundle's bytes: the chain from the first event, each record decoded and folded in order
    /// (as a replay checks it), the head it claims, and every checkpoint (its signature with `keys`, or
    /// with the bundle's own keys when nil; that it vouches for an event the bundle holds, with its hash).
    /// `elsewhere`: checkpoints kept outside the bundle (a trusted directory), checked against it too.
    public static func verify(_ bytes: [UInt8], keys trusted: CheckpointKeys?, keysSource: String = "",
                              elsewhere: [(source: String, checkpoint: Checkpoint)] = []) async -> Report {
        var report = Report()
        // The header, then the body its body_sha256 covers: every byte after the header's newline.
        guard let newline = bytes.firstIndex(of: 0x0A) else {
            report.problems.append("not a Lockstep bundle (its first line is not a bundle header of format \(format))")
            return report
        }
        let body = bytes[(newline + 1)...]
        let lines = [Substring(String(decoding: bytes[..<newline], as: UTF8.self))] + String(decoding: body, as: UTF8.self).split(separator: "\n")
        guard let header = Header(bytes[..<newline]), header.bodySHA256 == Array(SHA256.hash(data: Array(body))).hexString else {
            report.problems.append("not a Lockstep bundle, or altered: its first line is not a bundle header of format \(format) whose body_sha256 is the SHA-256 of the rest (it was altered)")
            return report
        }
        let headSequence = header.head.sequence
        let headHash = header.head.chainHash.hex
        let base = header.base
        report.headSequence = headSequence
        report.headChainHash = headHash
        report.baseSequence = base.sequence
        report.baseChainHash = base.chainHash.hex
        report.isArchiveSegment = header.isArchiveSegment
        var bundleKeys: [CheckpointKeys.Key] = []
        var checkpoints: [(source: String, checkpoint: Checkpoint)] = []
        // The bundle's lines for the log's own checkpoints, which must be exactly those its events hold.
        var logLines: [Checkpoint] = []
        var chain = base.chainHash
        var last = base.sequence
        var state = LogState()
        var hashes: [UInt64: [UInt8]] = [base.sequence: base.chainHash.bytes]
        for (index, line) in lines.dropFirst().enumerated() {
            let where_ = "line \(index + 2)"
            let object: [String: Any]
            do throws(StrictJSON.Refusal) { object = try StrictJSON.object(line.utf8) } catch {
                report.problems.append("\(where_) \(error)")
                continue
            }
            if let key = object["key"] as? [String: Any] {
                do {
                    let parsed = try CheckpointKeys.parse(Array((try JSONSerialization.data(withJSONObject: ["keys": [key]])))).keys
                    guard bundleKeys.count <= CheckpointKeys.keysMax else { continue }
                    for key in parsed where !bundleKeys.contains(key) { bundleKeys.append(key) }
                    if bundleKeys.count > CheckpointKeys.keysMax { report.problems.append("\(where_): more than \(CheckpointKeys.keysMax) keys") }
                } catch {
                    report.problems.append("\(where_): \(error)")
                }
            } else if let event = object["event"] as? [String: Any] {
                guard report.problems.isEmpty || !report.problems.last!.hasPrefix("the chain") else { continue }
                guard let sequence = (event["sequence"] as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }),
                      let recordText = event["record"] as? String, let record = Data(base64Encoded: recordText),
                      let hashText = event["chain_hash"] as? String, let claimed = [UInt8](hex: hashText)
                else {
                    report.problems.append("\(where_): an event line needs sequence, chain_hash and record")
                    continue
                }
                guard sequence == last + 1 else {
                    report.problems.append("the chain: event \(sequence) at \(where_) does not follow event \(last)")
                    break
                }
                let bytes = [UInt8](record)
                chain = chain.next(sequence: sequence, record: bytes)
                guard chain.bytes == claimed else {
                    report.problems.append("the chain: event \(sequence)'s record does not hash to its chain hash: it was altered")
                    break
                }
                last = sequence
                report.events = sequence - base.sequence
                hashes[sequence] = claimed
                guard let stored = ChainHash(bytes: claimed) else { continue }
                if base.sequence > 0 {
                    // A segment after the first: its streams go on from the earlier segments' state, which it does
                    // not hold, so the order of its streams is checked when the segments are replayed as one
                    // history (`history verify --archive`); here each record must decode.
                    do {
                        if case .checkpoint(let recorded) = try EventRecordCodec.decodeAny(bytes) { checkpoints.append(("log", recorded.checkpoint)) }
                    } catch {
                        report.problems.append("event \(sequence): \(error)")
                        break
                    }
                    continue
                }
                do {
                    // The bundle holds no rows: the record's own stream and version stand for them, and are
                    // checked against the state folded so far, as a replay checks them.
                    let decoded = try EventRecordCodec.decodeAny(bytes)
                    let row = StoredEvent(sequence: sequence, stream: decoded.stream, streamVersion: decoded.streamVersion, record: bytes, chainHash: stored)
                    let recordValue = try History.check(row, against: state)
                    state.evolve(recordValue, sequence: sequence)
                    if case .checkpoint(let recorded) = recordValue { checkpoints.append(("log", recorded.checkpoint)) }
                } catch {
                    report.problems.append("event \(sequence): \(error)")
                    break
                }
            } else if let checkpoint = object["checkpoint"] as? [String: Any] {
                let source = (checkpoint["source"] as? String) ?? "bundle"
                guard let data = try? JSONSerialization.data(withJSONObject: checkpoint) else { continue }
                switch CheckpointFiles.parse(line: Substring(String(decoding: data, as: UTF8.self))) {
                case .success(let parsed):
                    // The log's own were read from its events above; the others came from outside it.
                    if source == "log" { logLines.append(parsed) } else { checkpoints.append((source, parsed)) }
                case .failure(let error): report.problems.append("\(where_): \(error)")
                }
            } else {
                report.problems.append("\(where_): neither a key, an event nor a checkpoint")
            }
        }
        let fromEvents = checkpoints.filter { $0.source == "log" }.map(\.checkpoint)
        if Set(logLines) != Set(fromEvents) || logLines.count != fromEvents.count {
            report.problems.append("the bundle's checkpoint lines marked \"log\" are not the checkpoints its events hold")
        }
        checkpoints += elsewhere
        if last != headSequence { report.problems.append("the bundle says its head is event \(headSequence), but it holds events up to \(last)") }
        else if chain.hex != headHash { report.problems.append("the bundle's head hash is not its last event's chain hash") }
        // (The state of a segment after the first is known only with the segments before it.)
        report.digest = base.sequence == 0 ? state.digest.hex : ""
        let keys: CheckpointKeys
        if bundleKeys.count > CheckpointKeys.keysMax { bundleKeys = [] }
        if let trusted {
            keys = trusted
            report.keysFrom = keysSource
        } else {
            keys = CheckpointKeys(keys: bundleKeys)
            report.keysFrom = "the bundle itself"
        }
        report.checkpoints = checkpoints.count
        let findings = await CheckpointAudit.audit(checkpoints, keys: keys, head: last, base: base.sequence) { hashes[$0] }
        report.problems += findings.map(\.description)
        let bad = Set(findings.map(\.sequence))
        report.newestCheckpoint = checkpoints.map(\.checkpoint.sequence).filter { !bad.contains($0) }.max() ?? 0
        if report.isArchiveSegment, report.newestCheckpoint != headSequence || last != headSequence {
            report.problems.append("an archive segment ends at a signed checkpoint of its last event (\(headSequence)); this one's newest verified checkpoint vouches for \(report.newestCheckpoint)")
        }
        return report
    }
}
