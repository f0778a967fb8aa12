import Foundation
import Logging
import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster for this test process: `initdb` and `pg_ctl` (from PATH or Debian's
/// /usr/lib/postgresql/N/bin) in a temporary directory, on a free loopback port, run as an
/// unprivileged user (`nobody` when the tests run as root, since PostgreSQL refuses root), trust
/// authentication on loopback only; stopped when the process exits. Each log gets a database of its own.
actor TestPostgres {
    static let shared = TestPostgres()

    struct Cluster {
        var port: Int
        var directory: String
    }

    private var cluster: Result<Cluster, any Error>?
    private var databases = 0

    /// A new, empty database on the cluster (started on first use), with a running client, and the log on it.
    func makeLog() async throws -> PostgresEventLog {
        let cluster = try await started()
        databases += 1
        let name = "lockstep_test_\(databases)"
        _ = try await Self.run(Self.tool("psql"), ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "lockstep", "-d", "postgres", "-q", "-c",
                                             "CREATE DATABASE \(name)"], directory: cluster.directory)
        let client = PostgresClient(configuration: .init(host: "127.0.0.1", port: cluster.port, username: "lockstep", password: nil,
                                                         database: name, tls: .disable))
        // The client runs for the rest of the test process (the cluster stops at exit).
        Task { await client.run() }
        return try await PostgresEventLog.open(client: client)
    }

    private func started() async throws -> Cluster {
        if let cluster { return try cluster.get() }
        do {
            let started = try await Self.start()
            cluster = .success(started)
            return started
        } catch {
            cluster = .failure(error)
            throw error
        }
    }

    private static func start() async throws -> Cluster {
        let directory = temporaryDirectory() + "/postgres"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { _ = try await run("/bin/chown", ["-R", "nobody", directory], directory: directory, asRoot: true) }
        let data = directory + "/data"
        _ = try await run(tool("initdb"), ["-D", data, "-U", "lockstep", "--auth=trust", "-E", "UTF8", "--no-sync"], directory: directory)
        let port = try freePort()
        // Through system(3), not Process: the server pg_ctl leaves running inherits Foundation's
        // termination-watch descriptor, and the start would never be seen to end.
        let options = "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c max_connections=200"
        let start = "\(getuid() == 0 ? "/usr/sbin/runuser -u nobody -- " : "")\(tool("pg_ctl")) -D \(data) -w -l \(directory)/server.log -o '\(options)' start"
        guard system(start + " > \(directory)/pg_ctl.out 2>&1") == 0 else {
            throw PostgresUnavailable(description: "pg_ctl start failed: \((try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "")")
        }
        // Stopped when this process is gone, however it ends (exit, crash, a killed test run): a watchdog
        // shell polls for it once a second, then stops the cluster.
        let stop = "\(getuid() == 0 ? "/usr/sbin/runuser -u nobody -- " : "")\(tool("pg_ctl")) -D \(data) -m immediate stop"
        _ = system("(while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop)) > /dev/null 2>&1 &")
        return Cluster(port: port, directory: directory)
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
    static func run(_ tool: String, _ arguments: [String], directory: String, asRoot: Bool = false) async throws -> String {
        let (executable, all) = getuid() == 0 && !asRoot ? ("/usr/sbin/runuser", ["-u", "nobody", "--", tool] + arguments) : (tool, arguments)
        let output = try await ChildProcess(executable, all).wait(seconds: 120)
        guard output.status == 0 else {
            throw PostgresUnavailable(description: "\(tool) \(arguments.joined(separator: " ")) failed (\(output.status)): \(output.stderr.suffix(2_000))")
        }
        return output.stdout
    }

    /// A loopback port nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw PostgresUnavailable(description: "no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct PostgresUnavailable: Error, CustomStringConvertible {
    var description: String
}
