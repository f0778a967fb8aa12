import NIOSSL
import PostgresNIO

/// Where a log on PostgreSQL lives: `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=MODE]` (also
/// `postgresql://`). The password is never part of it: a URL with one is refused, so it cannot end up
/// in a shell history, a process list or a log line; it comes from the environment or a file
/// (`configuration(password:)`).
///
/// `sslmode` is libpq's: `disable`, `prefer` (the default: TLS when the server offers it, its
/// certificate not checked, as libpq does), `require` (TLS, certificate not checked), `verify-full`
/// (TLS, the certificate checked against the system's trust roots and the host name).
public struct PostgresAddress: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var username: String
    public var host: String
    public var port: Int
    public var database: String
    public var tls: TLSMode

    public init(username: String, host: String, port: Int = 5432, database: String, tls: TLSMode = .prefer) {
        self.username = username
        self.host = host
        self.port = port
        self.database = database
        self.tls = tls
    }

    /// The longest address accepted, in bytes.
    public static let textBytesMax = 1_024
    /// PostgreSQL's own limit on a name (user, database), in bytes.
    public static let nameBytesMax = 63

    /// The address without secrets, as a person would type it (log lines, status).
    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(Self.escaped(username))@\(shownHost):\(port)/\(Self.escaped(database))" + (tls == .prefer ? "" : "?sslmode=\(tls.rawValue)")
    }

    /// `name` with every byte outside A-Z a-z 0-9 - . _ ~ as a %-escape, so the address reads back the same.
    private static func escaped(_ name: String) -> String {
        var text = ""
        for byte in name.utf8 {
            if byte.isASCIIAlphanumeric || [UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~")].contains(byte) {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                text += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return text
    }

    /// Parses `text`, or says precisely what is wrong with it (code `invalid_store`).
    public static func parse(_ text: String) throws(PostgresAddressError) -> PostgresAddress {
        guard text.utf8.count <= textBytesMax else { throw .init("the store address is longer than \(textBytesMax) bytes") }
        var rest = Substring(text)
        guard let scheme = ["postgres://", "postgresql://"].first(where: { rest.hasPrefix($0) }) else {
            throw .init("the store address must start with postgres:// (postgres://USER@HOST:PORT/DATABASE), not \(quoted(text))")
        }
        rest = rest.dropFirst(scheme.count)
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard let slash = rest.firstIndex(of: "/") else { throw .init("the store address names no database: postgres://USER@HOST:PORT/DATABASE") }
        let authority = rest[..<slash]
        let path = rest[rest.index(after: slash)...]
        guard let at = authority.lastIndex(of: "@") else { throw .init("the store address names no user: postgres://USER@HOST:PORT/DATABASE") }
        let userInfo = authority[..<at]
        guard !userInfo.contains(":") else {
            throw .init("the store address carries a password; give it in LOCKSTEP_STORE_PASSWORD or a file (--store-password-file, LOCKSTEP_STORE_PASSWORD_FILE), never in the address")
        }
        let username = try name(userInfo, "user")
        var hostPort = authority[authority.index(after: at)...]
        var host: Substring
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw .init("the store address has an unclosed [ in its host") }
            host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            hostPort = hostPort[hostPort.index(after: close)...]
            guard hostPort.isEmpty || hostPort.hasPrefix(":") else { throw .init("the store address has text after its [host]") }
        } else {
            host = hostPort.prefix(while: { $0 != ":" })
            hostPort = hostPort[host.endIndex...]
        }
        guard !host.isEmpty, host.utf8.count <= 253,
              host.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":") }) else {
            throw .init("the store address's host must be a name or an IP address, not \(quoted(String(host)))")
        }
        var port = 5432
        if hostPort.hasPrefix(":") {
            let digits = hostPort.dropFirst()
            guard !digits.isEmpty, digits.count <= 5, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let value = Int(digits), (1...65_535).contains(value) else {
                throw .init("the store address's port must be 1...65535, not \(quoted(String(digits)))")
            }
            port = value
        }
        let database = try name(path, "database")
        var tls = TLSMode.prefer
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0] == "sslmode" else {
                throw .init("the store address's only parameter is sslmode (\(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))), not \(quoted(String(pair)))")
            }
            guard let mode = TLSMode(rawValue: String(parts[1])) else {
                throw .init("sslmode must be one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", ")), not \(quoted(String(parts[1])))")
            }
            tls = mode
        }
        return PostgresAddress(username: username, host: String(host), port: port, database: database, tls: tls)
    }

    /// A user or database name: percent-decoded, 1...63 bytes, no control characters.
    private static func name(_ raw: Substring, _ what: String) throws(PostgresAddressError) -> String {
        var bytes: [UInt8] = []
        var index = raw.utf8.startIndex
        let utf8 = raw.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let first = utf8.index(after: index)
                guard first < utf8.endIndex, utf8.index(after: first) < utf8.endIndex,
                      let high = hexValue(utf8[first]), let low = hexValue(utf8[utf8.index(after: first)]) else {
                    throw .init("the store address's \(what) has a bad %-escape")
                }
                bytes.append(high << 4 | low)
                index = utf8.index(first, offsetBy: 2)
            } else {
                guard byte != UInt8(ascii: "/"), byte != UInt8(ascii: "@") else { throw .init("the store address's \(what) may not contain / or @ unescaped") }
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        guard !bytes.isEmpty else { throw .init("the store address names no \(what): postgres://USER@HOST:PORT/DATABASE") }
        guard bytes.count <= nameBytesMax else { throw .init("the store address's \(what) is longer than \(nameBytesMax) bytes") }
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }), let value = String(validating: bytes, as: UTF8.self) else {
            throw .init("the store address's \(what) must be UTF-8 without control characters")
        }
        return value
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func quoted(_ text: String) -> String {
        let shown = text.unicodeScalars.prefix(80).map { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7F ? String($0) : "?" }.joined()
        return "\"\(shown)\(text.unicodeScalars.count > 80 ? "…" : "")\""
    }

    /// The client configuration for this address, with `password` (nil: none, or trust authentication),
    /// its connections started with the log's session settings (`PostgresEventLog.sessionParameters`).
    public func configuration(password: String?) -> PostgresClient.Configuration {
        let mode: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: mode = .disable
        case .prefer, .require:
            var unverified = TLSConfiguration.makeClientConfiguration()
            unverified.certificateVerification = .none
            mode = tls == .prefer ? .prefer(unverified) : .require(unverified)
        case .verifyFull: mode = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: mode)
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = PostgresEventLog.sessionParameters()
        return configuration
    }
}

/// A store address that cannot be used, in words; its stable code is `invalid_store`.
public struct PostgresAddressError: Error, CustomStringConvertible, Equatable {
    public static let code = "invalid_store"
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

private extension UInt8 {
    var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
