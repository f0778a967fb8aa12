import Glibc
import LockstepTestSupport
import Testing

/// `TestPostgres.freePort()` hands out a port held by a connection in TIME_WAIT: a plain bind of it is
/// refused (the kernel's choice for bind(0) skips such a port too; that is not checked here), while the
/// process it is meant for binds it as our servers and PostgreSQL do.
@Suite struct LoopbackPortTests {
    /// Binds 127.0.0.1:`port`, with SO_REUSEADDR or without, and listens; the errno when it cannot.
    static func bindAndListen(_ port: Int, reuse: Bool) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var one: Int32 = 1
        if reuse { _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        return bound && listen(fd, 1) == 0 ? nil : errno
    }

    @Test func aFreePortIsHeldFromOtherBindsButTakenBySO_REUSEADDR() throws {
        let port = try TestPostgres.freePort()
        #expect(port > 0)
        // A connection in TIME_WAIT holds it: a plain bind is refused for 60 s (and bind(0), which the
        // kernel checks the same way, skips it; with net.ipv4.ip_autobind_reuse at its default, 0) ...
        #expect(Self.bindAndListen(port, reuse: false) == EADDRINUSE)
        // ... and a server binding it with SO_REUSEADDR, as ours and PostgreSQL do, listens on it.
        #expect(Self.bindAndListen(port, reuse: true) == nil)
        // Two ports handed out in a row are two ports.
        #expect(try TestPostgres.freePort() != port)
    }
}
