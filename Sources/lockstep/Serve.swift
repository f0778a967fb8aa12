import LockstepPlan
import ArgumentParser
import Foundation
import LockstepEngine
import LockstepPostgres
import LockstepServer
import LockstepHTTP
import LockstepWebhooks
import LockstepService
import Logging
import PostgresNIO

/// `lockstep serve`: the coordinator and its API.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the coordinator on a data directory (SQLite) or a PostgreSQL database and serve the API (see docs/api.md).",
        discussion: """
            Refuses to start without an authorization config; `--dev` serves without authentication, on \
            loopback only, and says so. Port 0 picks a free port: the bound addresses are written to \
            --ready-file as JSON ({"grpc": "HOST:PORT", "http": "http://HOST:PORT", "console": "http://HOST:PORT/ui"}, \
            and under --dev "console_sign_in") once both accept \
            requests. SIGTERM or SIGINT stops it gracefully. The log is --data DIR (SQLite), or --store \
            postgres://USER@HOST:PORT/DB (or $LOCKSTEP_STORE) with the password from $LOCKSTEP_STORE_PASSWORD or \
            a file (docs/operations.md).
            """)

    @OptionGroup var storage: StoreOptions
    @Flag(help: "Development mode: no authentication, loopback only.") var dev = false
    @Option(help: "The authorization config (JSON: principals, roles, token hashes).") var config: String?
    @Option(help: "Where the JSON/HTTP API listens (HOST:PORT; port 0 picks a free port).") var httpListen = "127.0.0.1:8080"
    @Option(help: "Where the gRPC API listens (HOST:PORT; port 0 picks a free port).") var grpcListen = "127.0.0.1:9090"
    @Option(help: "Write the bound addresses here as JSON once the server accepts requests.") var readyFile: String?
    @Option(help: "Where browsers reach --http-listen through a proxy (https://HOST[:PORT]): console and webhook links are made under it; with https the console's cookie is Secure.")
    var publicURL: String?
    @Option(help: "PEM certificate chain: serve both listeners over TLS (with --tls-key).") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?
    @Option(help: "PEM CA certificates client certificates must be signed by: mutual TLS (needs --tls-cert).") var tlsClientCa: String?
    @Option(help: ArgumentHelp("Most polls one principal may have parked at once (benchmarks).", visibility: .hidden))
    var parkedPollsPerPrincipal: Int?
    @Option(help: ArgumentHelp("Most polls parked at once, 1...1000000 (default 10000; benchmarks).", visibility: .hidden))
    var parkedPollsMax: Int?
    @Option(help: "Most connections open at once on both listeners (default 4096; lowered to fit the open-file limit).")
    var connectionsMax: Int?
    @Option(help: "Most connections open at once from one peer address (default 512).")
    var connectionsPerPeerMax: Int?
    @Option(help: "Most HTTP/2 streams one peer address may reset in 10 s over all its connections (default 1000).")
    var streamResetsPerPeerMax: Int?
    @Option(help: "Close a connection with nothing in progress after this many milliseconds (default 60000).")
    var idleTimeoutMs: Int64?
    @Option(help: "Refuse (408) a request body not received within this many milliseconds of its head (default 10000).")
    var requestBodyTimeoutMs: Int64?
    @Option(help: "Cut a stream whose reader has taken nothing for this many milliseconds (default 30000).")
    var stalledReaderTimeoutMs: Int64?
    @Option(help: "After SIGTERM or SIGINT, exit with status 1 if the graceful stop has not ended within this many milliseconds (default 25000).")
    var stopTimeoutMs: Int64?
    @Option(help: "With --store: this coordinator's name among several on one database (default HOSTNAME-PID).")
    var coordinatorId: String?
    @Option(help: "With --store: the gRPC address clients reach this coordinator at, recorded for the others to name (default --grpc-listen).")
    var advertise: String?
    @Option(help: "With --store: how long the writer's leadership lease lasts without renewal, in milliseconds (500...600000; default 5000).")
    var leadershipTtlMs: Int64?
    @Option(help: "A quota on the log's database file, in bytes: past it appends fail with storage_full and /readyz answers 503; reads go on.")
    var logBytesMax: Int64?
    @Option(help: "Webhooks to notify (YAML: URL, events, format, signing secret, retries; docs/webhooks.md).")
    var webhooks: String?
    @Option(help: "The Ed25519 key checkpoints are signed with (`lockstep keys generate`; docs/history.md). Required unless --no-signing or --dev.")
    var signingKey: String?
    @Flag(help: "Serve without signed checkpoints (say so explicitly: a missing key is otherwise an error).")
    var noSigning = false
    @Option(help: "With --signing-key: also append each checkpoint to DIR/checkpoints.ndjson (another disk, a mounted bucket).")
    var checkpointDir: String?
    @Option(help: "With --signing-key: also POST each checkpoint to this URL (a witness).")
    var checkpointWitness: String?
    @Option(help: "With --signing-key: a checkpoint every this many events (1...1000000; default 1000).")
    var checkpointEveryEvents: UInt64?
    @Option(help: "With --signing-key: a checkpoint at least this often while events are appended (1s...1d; default 60s).")
    var checkpointEvery: DurationArgument?

    func run() async throws {
        let (host, port) = try Self.hostAndPort(httpListen, "--http-listen")
        let (grpcHost, grpcPort) = try Self.hostAndPort(grpcListen, "--grpc-listen")
        var auth: AuthConfig?
        if let config {
            let bytes: [UInt8]
            switch BoundedFile.read(config, limit: AuthConfig.fileBytesMax, what: "--config") {
            case .success(let read): bytes = read
            case .failure(let problem): throw ValidationError("\(problem)")
            }
            do {
                auth = try AuthConfig(json: bytes)
            } catch {
                FileHandle.standardError.write(Data("error: \(config): \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        var tls: (String, String)?
        switch (tlsCert, tlsKey) {
        case (nil, nil): tls = nil
        case (let cert?, let key?):
            for file in [cert, key] where !FileManager.default.isReadableFile(atPath: file) { throw ValidationError("cannot read \(file)") }
            tls = (cert, key)
        default: throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard let location = try storage.location(environment: true) else {
            throw ValidationError("name the log: --data DIR (SQLite) or --store postgres://USER@HOST:PORT/DB (or $LOCKSTEP_STORE)")
        }
        do {
            var options = LockstepServer.Options(databasePath: location.databasePath ?? "", httpHost: host, httpPort: port, grpcHost: grpcHost,
                                                 grpcPort: grpcPort, dev: dev, auth: auth, readyFile: readyFile)
            switch location {
            case .sqlite(let directory):
                guard coordinatorId == nil, advertise == nil, leadershipTtlMs == nil else {
                    throw ValidationError("--coordinator-id, --advertise and --leadership-ttl-ms are for several coordinators on one PostgreSQL database (--store)")
                }
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            case .postgres(let address, let password):
                if let coordinatorId {
                    guard !coordinatorId.isEmpty, coordinatorId.utf8.count <= 128, coordinatorId.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
                        throw ValidationError("--coordinator-id must be 1...128 bytes without spaces or control characters")
                    }
                    options.leadership.holder = coordinatorId
                }
                if let advertise {
                    _ = try Self.hostAndPort(advertise, "--advertise")
                    options.leadership.address = advertise
                } else {
                    options.leadership.address = grpcListen
                }
                if let leadershipTtlMs {
                    guard (500...600_000).contains(leadershipTtlMs) else { throw ValidationError("--leadership-ttl-ms must be 500...600000, not \(leadershipTtlMs)") }
                    options.leadership.ttlMillis = leadershipTtlMs
                }
                var logger = Logger(label: "lockstep.postgres")
                logger.logLevel = .warning
                var configuration = address.configuration(password: password)
                configuration.options.additionalStartupParameters += [
                    ("idle_in_transaction_session_timeout", "\(PostgresLeadership.idleInTransactionMillis(ttlMillis: options.leadership.ttlMillis))"),
                ]
                options.store = .postgres(PostgresClient(configuration: configuration, backgroundLogger: logger),
                                          address: address.description)
            }
            options.tls = tls.map { (certificateChain: $0.0, privateKey: $0.1) }
            if let publicURL {
                guard !dev else { throw ValidationError("--public-url is for a server behind a proxy; --dev serves loopback only") }
                do {
                    options.publicURL = try PublicURL(parsing: publicURL)
                } catch {
                    throw ValidationError("--public-url \(publicURL.prefix(100)): \(error)")
                }
                guard tls == nil || options.publicURL?.isHTTPS == true else {
                    throw ValidationError("--public-url \(publicURL.prefix(100)) is http:// but the listener speaks TLS: its console cookie is Secure, which a browser on http:// does not keep; name the https:// address")
                }
            }
            if let tlsClientCa {
                guard tls != nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
                guard FileManager.default.isReadableFile(atPath: tlsClientCa) else { throw ValidationError("cannot read \(tlsClientCa)") }
                options.tlsClientCA = tlsClientCa
            }
            if let parkedPollsMax {
                guard (1...1_000_000).contains(parkedPollsMax) else { throw ValidationError("--parked-polls-max must be 1...1000000, not \(parkedPollsMax)") }
                options.limits.parkedPollsMax = parkedPollsMax
                options.limits.parkedPollsPerPrincipalMax = min(options.limits.parkedPollsPerPrincipalMax, parkedPollsMax)
            }
            if let parkedPollsPerPrincipal {
                guard (1...options.limits.parkedPollsMax).contains(parkedPollsPerPrincipal) else {
                    throw ValidationError("--parked-polls-per-principal must be 1...\(options.limits.parkedPollsMax)")
                }
                options.limits.parkedPollsPerPrincipalMax = parkedPollsPerPrincipal
            }
            try applyLimits(&options.limits)
            if let stopTimeoutMs {
                guard (1_000...3_600_000).contains(stopTimeoutMs) else { throw ValidationError("--stop-timeout-ms must be 1000...3600000, not \(stopTimeoutMs)") }
                options.stopMillisMax = stopTimeoutMs
            }
            options.signing = try signing()
            if let webhooks {
                do {
                    options.webhooks = try WebhookConfig.load(path: webhooks)
                } catch {
                    FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
                    throw ExitCode(2)
                }
            }
            if let logBytesMax {
                guard logBytesMax >= 65_536 else { throw ValidationError("--log-bytes-max must be at least 65536, not \(logBytesMax)") }
                options.logBytesMax = logBytesMax
            }
            // The process's metrics backend is bootstrapped here, in main, once: the server's own
            // instruments and what its libraries record land in the same `/metrics`.
            let metrics = ServerMetrics()
            metrics.bootstrapProcess()
            try await LockstepServer.run(options, metrics: metrics)
        } catch let error as LockstepServer.StartError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// The connection and stream limits from the flags, each checked against its range.
    func applyLimits(_ limits: inout APILimits) throws {
        func checked<T: BinaryInteger>(_ value: T?, _ flag: String, _ range: ClosedRange<T>) throws -> T? {
            guard let value else { return nil }
            guard range.contains(value) else { throw ValidationError("\(flag) must be \(range.lowerBound)...\(range.upperBound), not \(value)") }
            return value
        }
        if let value = try checked(connectionsMax, "--connections-max", 1...1_000_000) { limits.connectionsMax = value }
        if let value = try checked(connectionsPerPeerMax, "--connections-per-peer-max", 1...1_000_000) { limits.connectionsPerPeerMax = value }
        if let value = try checked(streamResetsPerPeerMax, "--stream-resets-per-peer-max", 1...1_000_000) { limits.streamResetsPerPeerMax = value }
        if let value = try checked(idleTimeoutMs, "--idle-timeout-ms", 100...86_400_000) { limits.connectionIdleMillisMax = value }
        if let value = try checked(requestBodyTimeoutMs, "--request-body-timeout-ms", 100...3_600_000) { limits.requestBodyMillisMax = value }
        if let value = try checked(stalledReaderTimeoutMs, "--stalled-reader-timeout-ms", 100...3_600_000) { limits.stalledReaderMillisMax = value }
    }

    static func hostAndPort(_ value: String, _ option: String) throws -> (String, Int) {
        guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]), (0...65_535).contains(port) else {
            throw ValidationError("\(option) must be HOST:PORT with a port 0...65535, not \(value)")
        }
        return (String(value[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
    }

    /// The checkpoint signing the flags ask for: a key (read now; unreadable is an error), explicitly
    /// none, or none under --dev. Never a silent unsigned mode.
    func signing() throws -> SigningOptions? {
        let extras = checkpointDir != nil || checkpointWitness != nil || checkpointEveryEvents != nil || checkpointEvery != nil
        guard let signingKey else {
            // (Without an authorization config the server refuses to start anyway, and says why.)
            if noSigning || dev || config == nil {
                if extras { throw ValidationError("--checkpoint-dir, --checkpoint-witness and --checkpoint-every* need --signing-key") }
                return nil
            }
            throw ValidationError("""
                refusing to serve without signed checkpoints: pass --signing-key FILE (make one with `lockstep keys generate`), \
                or --no-signing to serve without them (docs/history.md)
                """)
        }
        if noSigning { throw ValidationError("--signing-key and --no-signing exclude each other") }
        var signing: SigningOptions
        do {
            signing = SigningOptions(signer: try CheckpointSigner(file: signingKey))
        } catch {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
        if let checkpointDir {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: checkpointDir, isDirectory: &isDirectory), isDirectory.boolValue,
                  FileManager.default.isWritableFile(atPath: checkpointDir)
            else { throw ValidationError("--checkpoint-dir \(checkpointDir) must be a directory this process can write") }
            signing.directory = checkpointDir
        }
        if let checkpointWitness {
            guard let url = URL(string: checkpointWitness), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil else {
                throw ValidationError("--checkpoint-witness must be an http:// or https:// URL")
            }
            signing.witness = url
        }
        if let checkpointEveryEvents {
            guard (1...1_000_000).contains(checkpointEveryEvents) else { throw ValidationError("--checkpoint-every-events must be 1...1000000") }
            signing.everyEvents = checkpointEveryEvents
        }
        if let checkpointEvery {
            guard (1_000...86_400_000).contains(checkpointEvery.millis) else { throw ValidationError("--checkpoint-every must be from 1s to 1d") }
            signing.everyMillis = checkpointEvery.millis
        }
        return signing
    }
}