import Foundation
import Logging
import LockstepPostgres
import LockstepStore
import PostgresNIO
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster for this test process: `initdb` and `pg_ctl` (from PATH or Debian's
/// /usr/lib/postgresql/N/bin) in a temporary directory, on a free loopback port, run as an
/// unprivileged user (`nobody` when the tests run as root, since PostgreSQL refuses root), trust
/// authentication on loopback only; stopped when the process exits. Each log gets a database of its own.
public actor TestPostgres {
    public static let shared = TestPostgres()

    struct Cluster {
        var port: Int
        var directory: String
        var data: String
    }

    private var cluster: Result<Cluster, any Error>?
    private var starting: Task<Cluster, any Error>?
    private var databases = 0

    /// A cluster of its own (started on first use), for a test that crashes it; most tests share `shared`.
    public init() {}

    /// A new, empty database on the cluster (started on first use), with a running client, and the log on it.
    public func makeLog(options: PostgresEventLog.Options = .init()) async throws -> PostgresEventLog {
        let (_, client) = try await makeClient()
        return try await PostgresEventLog.open(client: client, options: options)
    }

    /// The log in `database` (created if need be), on a running client.
    public func openLog(_ database: String) async throws -> PostgresEventLog {
        try await PostgresEventLog.open(client: client(database, port: started().port))
    }

    /// A new, empty database and a running client on it (running for the rest of the test process).
    public func makeClient(parameters: [(String, String)] = PostgresEventLog.sessionParameters()) async throws
        -> (database: String, client: PostgresClient) {
        let cluster = try await started()
        let name = try await makeDatabase()
        return (name, client(name, port: cluster.port, parameters: parameters))
    }

    /// A new, empty database on the cluster (started on first use): its name.
    public func makeDatabase() async throws -> String {
        _ = try await started()
        databases += 1
        let name = "lockstep_test_\(databases)"
        try await psql("postgres", "CREATE DATABASE \(name)")
        if let scope = MadeDatabases.current {
            scope.add(name, on: self)
        } else {
            Issue.record("\(name) was made outside a test carrying .dropsPostgresDatabases: it would be kept to the end of the run")
        }
        return name
    }

    /// Drops `database`, ending the connections still on it (`DropsPostgresDatabases`).
    func drop(_ database: String) async throws {
        try await psql("postgres", "DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
    }

    /// The address `lockstep --store` takes for `database` (trust authentication: no password).
    public func url(_ database: String) async throws -> String {
        "postgres://lockstep@127.0.0.1:\(try await started().port)/\(database)?sslmode=disable"
    }

    /// The cluster's loopback port.
    public func port() async throws -> Int { try await started().port }

    /// A running client on `database` through `port` (a proxy in front of the cluster, say), its
    /// connections started with `parameters` (the log's session settings unless told otherwise).
    public func client(_ database: String, port: Int,
                       parameters: [(String, String)] = PostgresEventLog.sessionParameters()) -> PostgresClient {
        // Few connections, closed soon when idle: many tests' clients share the cluster's max_connections.
        var configuration = PostgresClient.Configuration(host: "127.0.0.1", port: port, username: "lockstep", password: nil, database: database, tls: .disable)
        configuration.options.maximumConnections = 4
        configuration.options.connectionIdleTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = parameters
        let client = PostgresClient(configuration: configuration)
        Task { await client.run() }
        return client
    }

    /// Runs `sql` on `database` with psql and returns its unaligned output.
    @discardableResult
    public func psql(_ database: String, _ sql: String) async throws -> String {
        let cluster = try await started()
        return try await Self.run(Self.tool("psql"), ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "lockstep", "-d", database, "-qAt",
                                                      "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    /// Waits (5 s at most) until a session of `database` is inside `pg_sleep`: a test's transaction holding
    /// its locks, or a trigger's pause, has got there.
    public func waitForASessionInPgSleep(_ database: String) async throws {
        var polls = 0
        while try await psql(database, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()") == "0\n" {
            polls += 1
            guard polls < 250 else { throw PostgresUnavailable(description: "no session of \(database) reached pg_sleep within 5 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Stops the cluster at once (`pg_ctl stop -m immediate`: a crash, as far as the database is concerned).
    public func crash() async throws {
        let cluster = try await started()
        try Self.pgctl("-D \(cluster.data) -m immediate stop", cluster)
    }

    /// Starts the cluster again after `crash` (recovery replays its WAL), on the same port.
    public func restart() async throws {
        let cluster = try await started()
        try Self.pgctl("-D \(cluster.data) -w -l \(cluster.directory)/server.log -o '\(Self.serverOptions(cluster.port, cluster.directory))' start", cluster)
    }

    /// Stops every process of the cluster (SIGSTOP to the postmaster and its children): connections stay
    /// open and nothing answers, as with a database host that hangs. `thaw` undoes it.
    public func freeze() async throws { try signalAll(SIGSTOP, try await started()) }

    /// Lets a frozen cluster go on (SIGCONT).
    public func thaw() async throws { try signalAll(SIGCONT, try await started()) }

    /// Sends `signal` to the cluster's postmaster (the first line of postmaster.pid) and to every process
    /// whose parent it is (the backends, and the background workers).
    private func signalAll(_ signal: Int32, _ cluster: Cluster) throws {
        let pidFile = try String(contentsOfFile: cluster.data + "/postmaster.pid", encoding: .utf8)
        guard let line = pidFile.split(separator: "\n").first, let postmaster = Int32(line) else {
            throw PostgresUnavailable(description: "postmaster.pid names no process: \(pidFile.prefix(100))")
        }
        // The postmaster first, so no backend is forked after the scan and left running.
        kill(postmaster, signal)
        var pids: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // After the command's closing parenthesis: the state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == postmaster { pids.append(pid) }
        }
        for pid in pids { kill(pid, signal) }
    }

    /// The cluster, started by the first caller; callers arriving while it starts wait for that start
    /// (the actor is re-entered at the await: without this, each would start a cluster of its own).
    private func started() async throws -> Cluster {
        if let cluster { return try cluster.get() }
        if let starting { return try await starting.value }
        let start = Task { try await Self.start() }
        starting = start
        do {
            let started = try await start.value
            cluster = .success(started)
            return started
        } catch {
            cluster = .failure(error)
            throw error
        }
    }

    private static func start() async throws -> Cluster {
        let parent = temporaryDirectory(removedAtExit: false)
        let directory = parent + "/postgres"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { _ = try await run("/bin/chown", ["-R", "nobody", directory], asRoot: true) }
        let data = directory + "/data"
        _ = try await run(tool("initdb"), ["-D", data, "-U", "lockstep", "--auth=trust", "-E", "UTF8", "--no-sync"])
        let port = try freePort()
        let cluster = Cluster(port: port, directory: directory, data: data)
        try pgctl("-D \(data) -w -l \(directory)/server.log -o '\(serverOptions(port, directory))' start", cluster)
        // Stopped when this process is gone, however it ends (exit, crash, a killed test run): a watchdog
        // shell polls for it once a second, then stops the cluster and removes its files (unless
        // LOCKSTEP_KEEP_TEST_FILES is set).
        // A cluster a test froze (`freeze`) is let go first: a stopped process cannot be stopped.
        let thaw = "pm=$(head -1 \(data)/postmaster.pid); kill -CONT $pm; pkill -CONT -P $pm; "
        let stop = thaw + "\(getuid() == 0 ? "/usr/sbin/runuser -u nobody -- " : "")\(tool("pg_ctl")) -D \(data) -m immediate stop"
        let remove = keepTestFiles ? "" : "; rm -rf \(parent)"
        _ = system("(while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop)\(remove)) > /dev/null 2>&1 &")
        return cluster
    }

    /// The WAL kept small (32 MB, PostgreSQL's least): a `CREATE DATABASE` writes its 7 MB template into
    /// the WAL, and with the default 1 GB the suites' WAL reached 225 MB before a checkpoint recycled it.
    static func serverOptions(_ port: Int, _ directory: String) -> String {
        "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c max_connections=300 -c max_wal_size=32MB -c min_wal_size=32MB"
    }

    /// Runs `pg_ctl ARGUMENTS` through system(3), not Process: the server pg_ctl leaves running inherits
    /// Foundation's termination-watch descriptor, and a start would never be seen to end.
    static func pgctl(_ arguments: String, _ cluster: Cluster) throws {
        let command = "\(getuid() == 0 ? "/usr/sbin/runuser -u nobody -- " : "")\(tool("pg_ctl")) \(arguments)"
        guard system(command + " > \(cluster.directory)/pg_ctl.out 2>&1") == 0 else {
            throw PostgresUnavailable(description: "pg_ctl \(arguments) failed: \((try? String(contentsOfFile: cluster.directory + "/server.log", encoding: .utf8))?.suffix(2_000) ?? "")")
        }
    }

    /// `name` from PATH, else from the newest /usr/lib/postgresql/N/bin.
    static func tool(_ name: String) -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) where FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/\(name)") {
            return "/usr/lib/postgresql/\(version)/bin/\(name)"
        }
        return name
    }

    /// Runs `tool` (as `nobody` when this process is root, unless `asRoot`) and returns its output; throws when it fails.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], asRoot: Bool = false) async throws -> String {
        let (executable, all) = getuid() == 0 && !asRoot ? ("/usr/sbin/runuser", ["-u", "nobody", "--", tool] + arguments) : (tool, arguments)
        let output = try await ChildProcess(executable, all).wait(seconds: 120)
        guard output.status == 0 else {
            throw PostgresUnavailable(description: "\(tool) \(arguments.joined(separator: " ")) failed (\(output.status)): \(output.stderr.suffix(2_000))")
        }
        return output.stdout
    }

    /// A loopback port nothing listens on now, kept from every other bind(0) on the machine for the next
    /// 60 s: it is left with a connection in TIME_WAIT on it, which an explicit bind with SO_REUSEADDR (our
    /// servers, PostgreSQL, the test proxies) may reuse and the kernel's choice of a free port may not. A
    /// port merely found free and closed could be handed to the next test's server before its own starts
    /// (or restarts) on it.
    public static func freePort() throws -> Int {
        func loopback(_ port: UInt16) -> sockaddr_in {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            return address
        }
        func withSockaddr<R>(_ address: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>, inout socklen_t) -> R) -> R {
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, &length) }
            }
        }
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client); close(listener) }
        var one: Int32 = 1
        var address = loopback(0)
        let listening = listener >= 0 && client >= 0
            && setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0
            && withSockaddr(&address) { bind(listener, $0, $1) == 0 && getsockname(listener, $0, &$1) == 0 } && listen(listener, 1) == 0
        guard listening else { throw PostgresUnavailable(description: "no free loopback port") }
        var target = address
        guard withSockaddr(&target, { pointer, length in connect(client, pointer, length) == 0 }) else {
            throw PostgresUnavailable(description: "cannot connect to a loopback port of its own")
        }
        // The accepted side closes first: its half, on the port, waits in TIME_WAIT.
        let accepted = accept(listener, nil, nil)
        guard accepted >= 0 else { throw PostgresUnavailable(description: "cannot accept on a loopback port of its own") }
        close(accepted)
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

public struct PostgresUnavailable: Error, CustomStringConvertible {
    public var description: String
}
