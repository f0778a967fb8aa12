import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

// `lockstep history verify`: the walk on a server, a data directory, a database, archive segments or a
// bundle, with the signed checkpoints compared; and what it prints (`Verification`).
extension HistoryCommand {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the whole log: contiguity, hash chain, records, stream versions, recorded head, snapshot.",
            discussion: """
                On the server (--server, $LOCKSTEP_SERVER), or in the log itself: a data directory with --data \
                (read-only), or a PostgreSQL database with --store (nothing written). \
                Prints the head sequence and hash. Exits 1 naming the first bad position, 2 if the log cannot \
                be read (3 or 4 when the server cannot be reached or refuses).
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table
        @Option(help: "Also compare the log with the signed checkpoints kept in DIR/checkpoints.ndjson (needs --public-key).")
        var checkpoints: String?
        @Option(help: "The keys file checkpoints are verified with (`lockstep keys show`); also checks the log's own checkpoints.")
        var publicKey: String?
        @Option(help: "Verify a bundle (`history export --bundle`) instead: offline, no server, no database.")
        var bundle: String?
        @OptionGroup(title: "Archive segments, verified with the log as one history") var archive: ArchiveOptions
        var archives: [String] { archive.archives }

        func run() async throws {
            try await reportingFailures {
                let keys = try publicKey.map { path throws in
                    do { return try CheckpointKeys.load(path) } catch { throw CommandFailure(message: String(describing: error), exitCode: 2) }
                }
                if let bundle { return try await verifyBundle(bundle, keys: keys) }
                if checkpoints != nil && keys == nil { throw CommandFailure(message: "--checkpoints needs --public-key: the keys that signed them", exitCode: 64) }
                if !archives.isEmpty { return try await verifyArchived(keys: keys) }
                guard let location = try local.location(environment: false) else {
                    var verification: Verification?
                    try await server.run { lockstep in
                        var result = Verification(try await lockstep.verify())
                        // The server's answer is outside input: a base past its head is not a log.
                        guard result.base <= result.headSequence else {
                            throw CommandFailure(message: "the server answered a base (\(result.base)) past its head (\(result.headSequence))", exitCode: 1)
                        }
                        if let keys, result.ok {
                            // On an archived log the API serves events after the base only (not the base's own
                            // link): checkpoints up to the base have their signatures checked.
                            result.audit = try await Self.audit(keys: keys, directory: checkpoints, head: result.headSequence,
                                                                base: result.base == 0 ? 0 : min(result.base, .max - 1) + 1,
                                                                logCheckpoints: { try await Self.serverCheckpoints(lockstep, after: result.base, head: result.headSequence) },
                                                                chainHash: { sequence in
                                                                    guard sequence > 0 else { return nil }
                                                                    let page = try await lockstep.events(.with { $0.afterSequence = sequence - 1; $0.pageSize = 1 })
                                                                    return page.events.first.flatMap { $0.sequence == sequence ? [UInt8]($0.chainHash) : nil }
                                                                })
                        }
                        verification = result
                    }
                    try verification?.print(output)
                    return
                }
                try await withReadOnlyLog(location) { log in
                    var verification: Verification
                    do {
                        verification = Verification(try await HistoryVerifier.verify(log))
                    } catch EventLogError.corrupted(let position, let reason) {
                        // The same answer as the server's for a broken history: ok false, the code, where.
                        verification = Verification(problemCode: ErrorCode.logCorrupted.rawValue, problem: "the log is corrupted at sequence \(position): \(reason)")
                    }
                    if let keys, verification.ok {
                        let head = verification.headSequence
                        verification.audit = try await Self.audit(keys: keys, directory: checkpoints, head: head, base: verification.base,
                                                                  logCheckpoints: { try await Self.logCheckpoints(log) },
                                                                  chainHash: { sequence in try await log.chainHash(at: sequence)?.bytes })
                    }
                    try verification.print(output)
                }
            }
        }

        /// The checkpoints to compare (the log's own and those of `directory`), audited against the log.
        static func audit(keys: CheckpointKeys, directory: String?, head: UInt64, base: UInt64 = 0, logCheckpoints: () async throws -> [Checkpoint],
                          chainHash: (UInt64) async throws -> [UInt8]?) async throws -> CheckpointSummary {
            var all = try await logCheckpoints().map { (source: "log", checkpoint: $0) }
            let fromLog = all.count
            var findings: [CheckpointFinding] = []
            if let directory {
                do {
                    let loaded = try CheckpointFiles.load(directory: directory)
                    all += loaded.checkpoints
                    findings += loaded.malformed
                } catch {
                    throw CommandFailure(message: error.description, exitCode: 2)
                }
            }
            findings += try await CheckpointAudit.audit(all, keys: keys, head: head, base: base, chainHash: chainHash)
            let good = all.map(\.checkpoint.sequence).filter { sequence in !findings.contains { $0.sequence == sequence } }
            return CheckpointSummary(checked: all.count, inLog: fromLog, elsewhere: all.count - fromLog, newest: good.max() ?? 0, findings: findings)
        }

        /// The checkpoints recorded in the log (streams `checkpoint/SEQUENCE`).
        static func logCheckpoints(_ log: any EventLog) async throws -> [Checkpoint] {
            var found: [Checkpoint] = []
            if log is ArchivedHistory {
                // Segments are files read whole: one pass in order, not a look-up per checkpoint stream.
                var position: UInt64 = 0
                while true {
                    let page = try await log.read(after: position, limit: History.pageEventsMax)
                    guard let last = page.last else { return found }
                    for stored in page where stored.stream.hasPrefix("checkpoint/") {
                        if case .checkpoint(let recorded) = try EventRecordCodec.decodeAny(stored.record) { found.append(recorded.checkpoint) }
                    }
                    position = last.sequence
                }
            }
            var after = ""
            while true {
                let streams = try await log.streams(withPrefix: "checkpoint/", after: after, limit: 1_000)
                for stream in streams {
                    for stored in try await log.read(stream: stream, after: 0, limit: 2) {
                        if case .checkpoint(let recorded) = try EventRecordCodec.decodeAny(stored.record) { found.append(recorded.checkpoint) }
                    }
                }
                guard let last = streams.last else { break }
                after = last
            }
            return found
        }

        /// The checkpoints recorded in the log, read through the API (every event up to `head`, filtered).
        static func serverCheckpoints(_ lockstep: LockstepClient, after base: UInt64, head: UInt64) async throws -> [Checkpoint] {
            var found: [Checkpoint] = []
            try await eachEvent(lockstep, after: base, through: head) { envelope in
                guard envelope.record.stream.hasPrefix("checkpoint/") else { return }
                if case .checkpoint(let recorded) = try EventRecordCodec.domainRecord(envelope.record) { found.append(recorded.checkpoint) }
            }
            return found
        }

        /// The archive segments, each as a bundle (its chain, records and end checkpoint), then the
        /// segments and the live log (if given) as one history.
        func verifyArchived(keys: CheckpointKeys?) async throws {
            for path in archives {
                let bytes: [UInt8]
                do { bytes = try CheckpointFiles.read(path, limit: ArchiveSegment.fileBytesMax, what: "the archive segment") } catch {
                    throw CommandFailure(message: error.description, exitCode: 2)
                }
                let report = await HistoryBundle.verify(bytes, keys: keys, keysSource: publicKey ?? "")
                guard report.problems.isEmpty else {
                    throw CommandFailure(message: "the archive segment \(path) does not verify:\n" + report.problems.map { "  " + $0 }.joined(separator: "\n"), exitCode: 1)
                }
                guard report.isArchiveSegment else { throw CommandFailure(message: "\(path) is not an archive segment (written by `lockstep history archive`)", exitCode: 1) }
            }
            try await withArchivedHistory(archives, local: local) { history in
                var verification: Verification
                do {
                    verification = Verification(try await HistoryVerifier.verify(history, also: history.liveBase.map { [$0] } ?? []))
                } catch EventLogError.corrupted(let position, let reason) {
                    verification = Verification(problemCode: ErrorCode.logCorrupted.rawValue, problem: "the log is corrupted at sequence \(position): \(reason)")
                }
                verification.segments = history.segments.count
                if let keys, verification.ok {
                    verification.audit = try await Self.audit(keys: keys, directory: checkpoints, head: verification.headSequence,
                                                              logCheckpoints: { try await Self.logCheckpoints(history) },
                                                              chainHash: { sequence in try await history.chainHash(at: sequence)?.bytes })
                }
                try verification.print(output)
            }
        }

        func verifyBundle(_ path: String, keys: CheckpointKeys?) async throws {
            let bytes: [UInt8]
            do { bytes = try CheckpointFiles.read(path, limit: 1 << 30, what: "the bundle") } catch {
                throw CommandFailure(message: error.description, exitCode: 2)
            }
            var elsewhere: [(source: String, checkpoint: Checkpoint)] = []
            if let checkpoints {
                do {
                    let loaded = try CheckpointFiles.load(directory: checkpoints)
                    elsewhere = loaded.checkpoints
                    if let bad = loaded.malformed.first { throw CommandFailure(message: bad.description, exitCode: 1) }
                } catch let error as CheckpointError {
                    throw CommandFailure(message: error.description, exitCode: 2)
                }
            }
            let report = await HistoryBundle.verify(bytes, keys: keys, keysSource: publicKey ?? "", elsewhere: elsewhere)
            switch output {
            case .json:
                let object: [String: Any] = [
                    "ok": report.problems.isEmpty, "events": report.events, "head_sequence": report.headSequence, "head_chain_hash": report.headChainHash,
                    "digest": report.digest, "checkpoints": report.checkpoints, "newest_checkpoint": report.newestCheckpoint, "keys_from": report.keysFrom,
                    "problems": report.problems, "base_sequence": report.baseSequence, "archive_segment": report.isArchiveSegment,
                ]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                Swift.print(String(decoding: data, as: UTF8.self))
            case .table:
                if report.problems.isEmpty {
                    if report.baseSequence > 0 { Swift.print("ok: \(report.isArchiveSegment ? "archive segment" : "bundle") of \(counted(report.events, "event")), verified offline\nbase sequence: \(report.baseSequence)") }
                    else { Swift.print("ok: \(report.isArchiveSegment ? "archive segment" : "bundle") of \(counted(report.events, "event")), verified offline") }
                    Swift.print("""
                        head sequence: \(report.headSequence)
                        head hash: \(report.headChainHash)
                        state digest: \(report.digest.isEmpty ? "(known with the segments before it: history verify --archive)" : report.digest)
                        checkpoints: \(report.checkpoints) verified with keys from \(report.keysFrom); the newest vouches for sequence \(report.newestCheckpoint)
                        """)
                }
            }
            guard report.problems.isEmpty else {
                throw CommandFailure(message: "the bundle does not verify:\n" + report.problems.map { "  " + $0 }.joined(separator: "\n"), exitCode: 1)
            }
        }
    }
}

/// What `history verify` prints, the same whether the server verified or the data directory was read
/// (and in the demo): a table, or one JSON object with numbers as numbers and hashes in hex. A broken
/// history prints `ok: false` (JSON) or nothing on stdout (table), names the problem on stderr, exit 1.
struct Verification {
    var ok: Bool
    var events: UInt64 = 0
    var migrations: UInt64 = 0
    var plans: UInt64 = 0
    var headSequence: UInt64 = 0
    var headChainHash = ""
    var digest = ""
    var snapshotChecked: UInt64 = 0
    /// The event the walk started after: the live log's base when its first events were archived.
    var base: UInt64 = 0
    /// With --archive: the segments walked before the live log.
    var segments = 0
    var problemCode = ""
    var problem = ""
    /// With --public-key: what the checkpoints show.
    var audit: CheckpointSummary?

    init(_ report: VerificationReport) {
        ok = true
        events = report.events
        migrations = UInt64(report.migrations)
        plans = UInt64(report.plans)
        headSequence = report.head.sequence
        headChainHash = report.head.chainHash.hex
        digest = report.digest.hex
        snapshotChecked = report.snapshotChecked ?? 0
        base = report.base
    }

    init(_ response: Lockstep_V1_VerifyHistoryResponse) {
        ok = response.ok
        events = response.events
        migrations = response.migrations
        plans = response.plans
        headSequence = response.headSequence
        headChainHash = response.headChainHash.hexString
        digest = response.digest
        snapshotChecked = response.snapshotChecked
        base = response.baseSequence
        problemCode = response.problemCode
        problem = response.problem
    }

    init(problemCode: String, problem: String) {
        ok = false
        self.problemCode = problemCode
        self.problem = problem
    }

    /// The table lines (a verified history only).
    var table: [String] {
        var lines = ["ok: \(counted(events, "event")), \(counted(migrations, "migration")), \(counted(plans, "plan"))", "head sequence: \(headSequence)",
                     "head hash: \(headChainHash)", "state digest: \(digest)"]
        if snapshotChecked > 0 { lines.append("snapshot checked at: \(snapshotChecked)") }
        if segments > 0 { lines.append("archive segments: \(segments), then the live log") }
        if base > 0 {
            lines.append("base: \(base) (events 1 to \(base) were archived; verify them with --archive SEGMENT …)")
        }
        if let audit {
            lines.append("checkpoints: \(audit.checked) checked (\(audit.inLog) in the log, \(audit.elsewhere) kept elsewhere); the newest good one vouches for sequence \(audit.newest)")
        }
        return lines
    }

    var json: String {
        var object: [String: Any] = ["ok": ok]
        if ok {
            object.merge(["events": events, "migrations": migrations, "plans": plans, "head_sequence": headSequence,
                          "head_chain_hash": headChainHash, "digest": digest, "snapshot_checked": snapshotChecked]) { _, new in new }
            // (Only for an archived history: the same lines as ever otherwise.)
            if base > 0 { object["base_sequence"] = base }
            if segments > 0 { object["archive_segments"] = segments }
        } else {
            object.merge(["problem_code": problemCode, "problem": problem]) { _, new in new }
        }
        if let audit {
            object["ok"] = ok && audit.findings.isEmpty
            object["checkpoints"] = [
                "checked": audit.checked, "in_log": audit.inLog, "elsewhere": audit.elsewhere, "newest": audit.newest,
                "findings": audit.findings.map { ["kind": $0.kind.rawValue, "sequence": $0.sequence, "source": $0.source, "detail": $0.detail] as [String: Any] },
            ] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Prints it as `output` asks; a broken history is a `CommandFailure` (stderr, exit 1) after its JSON.
    func print(_ output: OutputFormat) throws {
        switch output {
        case .json: Swift.print(json)
        case .table: if ok { Swift.print(table.joined(separator: "\n")) }
        }
        if ok, let audit, !audit.findings.isEmpty {
            throw CommandFailure(message: "the checkpoints show the log was altered:\n" + audit.findings.map { "  " + $0.description }.joined(separator: "\n"), exitCode: 1)
        }
        guard ok else {
            let position = problemCode == ErrorCode.logCorrupted.rawValue ? problem.replacingOccurrences(of: "the log is corrupted at", with: "corrupted at") : problem
            throw CommandFailure(message: position, exitCode: 1)
        }
    }
}


/// What `history verify --public-key` found of the checkpoints.
struct CheckpointSummary {
    var checked: Int
    var inLog: Int
    var elsewhere: Int
    var newest: UInt64
    var findings: [CheckpointFinding]
}
