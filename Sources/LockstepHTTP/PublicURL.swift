import Foundation

/// The address browsers reach the JSON/HTTP listener at when it is not the listener's own
/// (`--public-url`, docs/console.md): a proxy in front that ends TLS, or a name the server does not know
/// itself by. Console sign-in links and webhook links are made under it; under `https` the console's
/// session cookie is `Secure` (and `__Host-`) though the listener itself speaks plain HTTP; and a
/// browser's `Origin` equal to it is the console's own.
package struct PublicURL: Sendable, Equatable {
    /// `scheme://host[:port]`, scheme and host in lower case, no path: what a browser sends as `Origin`.
    package let origin: String
    package let isHTTPS: Bool

    /// Longest accepted, in bytes.
    package static let lengthMax = 512

    /// Parses `http://HOST[:PORT]` or `https://HOST[:PORT]`, with at most a trailing `/`, into the origin
    /// a browser sends: scheme and host in lower case, the port as a number and left out when it is the
    /// scheme's own (443, 80). The console's pages and the API live at the root (`/ui`, `/v1/…`), so a
    /// path prefix cannot be served and is refused, as are user info, a query, a fragment and any byte
    /// outside printable ASCII (an internationalized name goes in its `xn--` form). Throws what is
    /// wrong, in words.
    package init(parsing text: String) throws(PublicURLProblem) {
        guard text.utf8.count <= Self.lengthMax else { throw PublicURLProblem("it is longer than \(Self.lengthMax) bytes") }
        guard text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw PublicURLProblem("it has a space, a control character or a character outside ASCII (write an international name in its xn-- form)")
        }
        let lowered = text.lowercased()
        let rest: Substring
        if lowered.hasPrefix("https://") {
            isHTTPS = true
            rest = lowered.dropFirst("https://".count)
        } else if lowered.hasPrefix("http://") {
            isHTTPS = false
            rest = lowered.dropFirst("http://".count)
        } else {
            throw PublicURLProblem("it must start with https:// or http://")
        }
        let authority = rest.hasSuffix("/") ? rest.dropLast() : rest
        guard !authority.contains("/") else {
            throw PublicURLProblem("it has a path: the console and the API are served at the root (/ui, /v1/…), so the proxy must pass them there")
        }
        guard authority.allSatisfy({ "abcdefghijklmnopqrstuvwxyz0123456789.-:[]".contains($0) }) else {
            throw PublicURLProblem("it has user info, a query, a fragment or a character no host name has")
        }
        // HOST, HOST:PORT, [V6] or [V6]:PORT.
        var host: String
        let port: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw PublicURLProblem("an IPv6 address must be closed with ]") }
            let address = authority[authority.index(after: authority.startIndex)..<close]
            // As a browser writes it in an Origin (zeros compressed, lower case): the system's own form.
            guard let canonical = Self.canonical(String(address), family: AF_INET6) else {
                throw PublicURLProblem("[\(address)] is not an IPv6 address")
            }
            host = "[" + canonical + "]"
            let after = authority[authority.index(after: close)...]
            guard after.isEmpty || after.hasPrefix(":") else { throw PublicURLProblem("only :PORT may follow an IPv6 address") }
            port = after.isEmpty ? nil : after.dropFirst()
        } else {
            let parts = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            host = String(parts[0])
            port = parts.count == 2 ? parts[1] : nil
            guard !host.isEmpty, !host.hasPrefix("."), !host.hasPrefix("-") else { throw PublicURLProblem("it names no host") }
            guard !host.contains("["), !host.contains("]") else { throw PublicURLProblem("only an IPv6 address goes in brackets") }
            // A name whose last label is a number is an IPv4 address to a browser, which writes it as four
            // decimal numbers (`127.1` is `127.0.0.1`): only that form is taken, as it is.
            let last = host.split(separator: ".").last.map(String.init) ?? host
            if last.allSatisfy(\.isASCIIDigit) || last.hasPrefix("0x") {
                guard let canonical = Self.canonical(host, family: AF_INET), canonical == host else {
                    throw PublicURLProblem("\(host) is not an IPv4 address in four decimal numbers (0 to 255, no leading zeros)")
                }
            }
        }
        var number: Int?
        if let port {
            guard !port.isEmpty, port.count <= 5, port.allSatisfy(\.isASCIIDigit), let value = Int(port), (1...65_535).contains(value) else {
                throw PublicURLProblem("its port must be 1...65535")
            }
            number = value
        }
        // A browser leaves the scheme's own port out of the Origin it sends.
        let https = isHTTPS
        let shown = number.flatMap { $0 == (https ? 443 : 80) ? nil : ":\($0)" } ?? ""
        origin = (https ? "https://" : "http://") + host + shown
    }

    /// `address` in the system's presentation form for `family` (inet_pton, then inet_ntop), if it is one.
    private static func canonical(_ address: String, family: Int32) -> String? {
        var bytes = [UInt8](repeating: 0, count: 16)
        guard inet_pton(family, address, &bytes) == 1 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family, bytes, &text, socklen_t(text.count)) != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// What is wrong with a `--public-url`, in words.
package struct PublicURLProblem: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
