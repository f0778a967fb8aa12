import LockstepPlan
import Foundation
import LockstepCore
import LockstepEngine
import LockstepService
import LockstepHTTP
import LockstepWebhooks
import PostgresNIO

// What `lockstep serve` is configured with: where the log lives, the listeners, authentication, TLS,
// limits, clocks, and (on PostgreSQL) this coordinator's part among several.
extension LockstepServer {
    /// Where the log lives.
    public enum Store: Sendable {
        /// The embedded default: a SQLite database file (`--data DIR` names its directory).
        case sqlite(path: String)
        /// PostgreSQL through `client`. `run` runs the client in the server's service group (first in,
        /// last out); a caller of `build` runs it itself for as long as the server runs.
        case postgres(PostgresClient, address: String)
    }

    public struct Options: Sendable {
        public var store: Store
        /// With `.postgres`: who this coordinator is among several on one database, the address its clients
        /// reach it at, and the leadership lease's TTL. Only the lease's holder writes and serves; the
        /// others wait as standbys and take over when it lapses (docs/operations.md).
        public var leadership = Leadership()
        /// The writer's epoch the log is fenced with (set by `run` for each term as the writer).
        var writerEpoch: Int64?
        /// Set by `run` while this coordinator is not the writer: it serves reads from a live state that
        /// tails the log, and refuses writes with `not_writer`, naming the writer this says.
        var replica: StandbyStatus?
        /// On a replica: how often the log is read without a notification, in milliseconds.
        public var replicaCatchUpMillis = 500
        public var httpHost: String
        public var httpPort: Int
        public var grpcHost: String
        public var grpcPort: Int
        /// No authentication, loopback only.
        public var dev: Bool
        /// Who may call (bearer tokens); required unless `dev`.
        public var auth: AuthConfig?
        /// PEM files of the server's certificate chain and private key: both listeners then speak TLS
        /// (HTTP/1.1 and h2 by ALPN on the JSON side).
        public var tls: (certificateChain: String, privateKey: String)?
        /// PEM file of the CAs client certificates must be signed by: mutual TLS on both listeners, and
        /// principals may be named by their certificate (`client_certificate_sha256`). Needs `tls`.
        public var tlsClientCA: String?
        /// Written once both listeners accept requests: `{"grpc": "HOST:PORT", "http": "http://HOST:PORT"}`.
        public var readyFile: String?
        /// Where browsers reach the JSON/HTTP listener when a proxy stands in front (`--public-url`):
        /// console sign-in links and webhook links are made under it, and under https the console's
        /// cookie is `Secure` (docs/console.md).
        package var publicURL: PublicURL?
        /// On PostgreSQL, while this coordinator writes: whether its leadership lease is still its own by its
        /// keeper's count (heartbeats are refused `not_writer` once it is not).
        package var leadershipHeld: (@Sendable () -> Bool)?
        public var limits = APILimits()
        /// The poll lane (`PollLane`): polls served from the event loops looking at the coordinator at
        /// once, and waiting for a place, in polls. Fixed for servers; tests make the line short to reach
        /// its overflow through the transports.
        package var pollLane = (running: 256, waitingMax: 131_072)
        /// The longest a graceful stop (SIGTERM, SIGINT) of `run` may take, in milliseconds, before the
        /// process exits with status 1 (`runWithStopBound`). Its stages run one after another: the gRPC
        /// port's connections get 5 s of grace, the JSON port's 5 s (8 s for the engine's backstop), the
        /// shutdown checkpoint's witness 5 s, the leadership lease's release 2 s.
        public var stopMillisMax: Int64 = 25_000
        /// A quota on the log's database file, in bytes: past it appends fail with `storage_full` (as on a
        /// full disk) while reads, polls and watches go on. nil: no quota.
        public var logBytesMax: Int64?
        /// Where notifications go (`--webhooks FILE`, docs/webhooks.md); delivered by the writer only.
        public var webhooks: WebhookConfig?
        /// Signed checkpoints (docs/history.md); nil: none (`--no-signing`, or `--dev`). The writer signs.
        public var signing: SigningOptions?
        /// How often the timers look for expired leases, passed deadlines and owed grants, in milliseconds.
        /// The least time between two runs of the timers (a change wakes them early, but not more often).
        public var timerTickMillis = 50
        /// The most time between two runs of the timers when nothing is due (the gauges are recorded then too).
        public var timerIdleMillisMax = 1_000
        /// The wall clock the server's clock starts from (recorded times; never before the log's last).
        public var wallClock: @Sendable () -> Instant = WallClock.now
        /// The monotonic clock every duration runs on (lease TTLs, schedule_to_start, recorded time's pace).
        /// Tests give their own, to move time without waiting for it.
        public var monotonicClock: MonotonicClock = systemMonotonicClock

        public init(databasePath: String, httpHost: String, httpPort: Int, grpcHost: String, grpcPort: Int, dev: Bool, auth: AuthConfig?,
                    readyFile: String?) {
            self.store = .sqlite(path: databasePath)
            self.httpHost = httpHost
            self.httpPort = httpPort
            self.grpcHost = grpcHost
            self.grpcPort = grpcPort
            self.dev = dev
            self.auth = auth
            self.readyFile = readyFile
        }
    }

    public struct Leadership: Sendable {
        /// This coordinator's name in the lease row; unique per process run.
        public var holder = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        /// Where clients reach this coordinator (gRPC `HOST:PORT`), recorded in the lease for the others to name.
        public var address = ""
        /// How long the lease lasts without renewal, in milliseconds; the writer renews it a third of it after its last renewal.
        public var ttlMillis: Int64 = 5_000
        public init() {}
    }

    public enum StartError: Error, CustomStringConvertible {
        case notLoopback(String)
        case noAuthorization
        case devWithConfig
        case quotaNeedsSQLite
        public var description: String {
            switch self {
            case .notLoopback(let host): "--dev serves without authentication and binds to loopback only; \(host) is not a loopback address"
            case .noAuthorization:
                "refusing to serve without an authorization config: pass --config FILE (docs/api.md, Authentication), or --dev for loopback without authentication"
            case .devWithConfig: "--dev and --config exclude each other: --dev means no authentication"
            case .quotaNeedsSQLite: "--log-bytes-max is a quota on the SQLite file; on PostgreSQL, quotas are the database's own"
            }
        }
    }
}
