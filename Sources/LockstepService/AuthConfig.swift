import Crypto
import Foundation
import LockstepCore
import LockstepEngine

/// Who may call the API: principals with roles, each known by the SHA-256 of its bearer token (the
/// tokens themselves are never stored). Read from a JSON file; anything unexpected is an error that
/// names where it is, and the server does not start.
///
/// ```json
/// {"principals": [
///   {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "64 hex digits"},
///   {"name": "alice", "roles": ["operator"], "token_sha256": "…"},
///   {"name": "bob", "roles": ["approver"], "owner_groups": ["ledger-team"], "token_sha256": "…"}
/// ]}
/// ```
public struct AuthConfig: Sendable {
    /// Principals by the hex SHA-256 of their token.
    package let byTokenHash: [String: Principal]
    /// Principals by the hex SHA-256 of their client certificate (DER), for mutual TLS.
    package let byCertificateHash: [String: Principal]

    /// Largest config file, in bytes.
    public static let fileBytesMax = 1 << 20
    /// Most principals in one config.
    public static let principalsMax = 10_000
    /// Shortest token `lockstep auth hash-token` accepts, in bytes.
    public static let tokenBytesMin = 16

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public init(json: [UInt8]) throws(Invalid) {
        guard json.count <= Self.fileBytesMax else { throw Invalid(description: "the config is \(json.count) bytes; the limit is \(Self.fileBytesMax) bytes") }
        let object: [String: Any]
        do throws(StrictJSON.Refusal) { object = try StrictJSON.object(json) } catch {
            switch error {
            case .notJSON(let why): throw Invalid(description: "the config is not valid JSON: \(why)")
            case .notAnObject: throw Invalid(description: "the config must be a JSON object with \"principals\"")
            case .repeated: throw Invalid(description: "the config \(error): which one is meant?")
            }
        }
        try Self.onlyKeys(object, ["principals"], at: "the config")
        guard let list = object["principals"] as? [Any] else { throw Invalid(description: "\"principals\" must be a list") }
        guard list.count <= Self.principalsMax else { throw Invalid(description: "\(list.count) principals; the limit is \(Self.principalsMax)") }
        var byHash: [String: Principal] = [:]
        var byCertificate: [String: Principal] = [:]
        var names: Set<String> = []
        for (index, entry) in list.enumerated() {
            let at = "principals[\(index)]"
            guard let fields = entry as? [String: Any] else { throw Invalid(description: "\(at) must be an object") }
            try Self.onlyKeys(fields, ["name", "roles", "services", "owner_groups", "token_sha256", "client_certificate_sha256"], at: at)
            guard let name = fields["name"] as? String, !name.isEmpty, name.utf8.count <= CoreLimits.identifierBytesMax else {
                throw Invalid(description: "\(at).name must be a non-empty string of at most \(CoreLimits.identifierBytesMax) bytes")
            }
            guard names.insert(name).inserted else { throw Invalid(description: "\(at): a second principal named \(name)") }
            let roleNames = try Self.strings(fields["roles"], at: "\(at).roles")
            var roles: Set<Principal.Role> = []
            for role in roleNames {
                guard let known = Principal.Role(rawValue: role) else {
                    throw Invalid(description: "\(at).roles: unknown role \"\(role.quotable)\" (known: \(Principal.Role.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                roles.insert(known)
            }
            if roles.isEmpty { throw Invalid(description: "\(at) (\(name)) has no roles: it could do nothing") }
            let services = try Self.strings(fields["services"], at: "\(at).services")
            if roles.contains(.agent) && services.isEmpty { throw Invalid(description: "\(at) (\(name)) is an agent of no service: name its services") }
            let groups = try Self.strings(fields["owner_groups"], at: "\(at).owner_groups")
            if roles.contains(.approver) && groups.isEmpty { throw Invalid(description: "\(at) (\(name)) is an approver for no owner group: name its owner_groups") }
            let principal = Principal(name: name, roles: roles, services: Set(services), ownerGroups: Set(groups))
            let token = fields["token_sha256"]
            let certificate = fields["client_certificate_sha256"]
            if token == nil && certificate == nil {
                throw Invalid(description: "\(at) (\(name)) has neither token_sha256 nor client_certificate_sha256: nobody could be it")
            }
            if let token {
                let hash = try Self.digest(token, at: "\(at).token_sha256", hint: "lockstep auth hash-token prints it")
                guard byHash[hash] == nil else { throw Invalid(description: "\(at) (\(name)) has the same token as \(byHash[hash]!.name)") }
                byHash[hash] = principal
            }
            if let certificate {
                let hash = try Self.digest(certificate, at: "\(at).client_certificate_sha256", hint: "openssl x509 -outform der | sha256sum")
                guard byCertificate[hash] == nil else {
                    throw Invalid(description: "\(at) (\(name)) has the same client certificate as \(byCertificate[hash]!.name)")
                }
                byCertificate[hash] = principal
            }
        }
        byTokenHash = byHash
        byCertificateHash = byCertificate
    }

    /// The principal a verified client certificate (its hex SHA-256) or an `Authorization` header
    /// (`Bearer TOKEN`) names, the certificate first; or `unauthenticated`.
    public func authenticate(_ header: String?, clientCertificate: String? = nil) throws(APIError) -> Principal {
        if let clientCertificate {
            if let principal = byCertificateHash[clientCertificate] { return principal }
            if header == nil {
                throw APIError(.unauthenticated, "the client certificate (SHA-256 \(clientCertificate)) is not known to this server")
            }
        }
        guard let header else {
            throw APIError(.unauthenticated, "this server needs a bearer token: send Authorization: Bearer TOKEN")
        }
        // Read in place: every authenticated request comes through here, so nothing is copied or lowercased.
        let bytes = header.utf8
        guard bytes.count > Self.bearer.count, zip(bytes, Self.bearer).allSatisfy({ Self.asciiLowercased($0) == $1 }),
              let principal = byTokenHash[Self.hash(utf8: bytes.dropFirst(Self.bearer.count))] else {
            throw APIError(.unauthenticated, "the bearer token is not known to this server")
        }
        return principal
    }

    /// `bearer ` in lowercase: the scheme's name is case-insensitive.
    private static let bearer: [UInt8] = Array("bearer ".utf8)

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte | 0x20 : byte }

    /// The principal a bearer token belongs to, if any.
    public func principal(forToken token: String) -> Principal? { byTokenHash[Self.hash(token)] }

    /// The hex SHA-256 of a token, as the config stores it.
    public static func hash(_ token: String) -> String { hash(utf8: token.utf8[...]) }

    /// The hex SHA-256 of `bytes` (a certificate's DER, for `client_certificate_sha256`).
    public static func hash(bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

    private static func hash(utf8: Substring.UTF8View) -> String {
        var hasher = SHA256()
        var text = Substring(utf8)
        text.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        return hex(hasher.finalize())
    }

    /// A digest in lowercase hex, written into the string's own storage: one allocation, where a string
    /// per byte, joined, made dozens on every authenticated request.
    private static func hex(_ digest: SHA256.Digest) -> String {
        String(unsafeUninitializedCapacity: SHA256.byteCount * 2) { buffer in
            let digits: StaticString = "0123456789abcdef"
            var index = 0
            digest.withUnsafeBytes { bytes in
                for byte in bytes {
                    buffer[index] = digits.utf8Start[Int(byte >> 4)]
                    buffer[index + 1] = digits.utf8Start[Int(byte & 0x0f)]
                    index += 2
                }
            }
            return index
        }
    }

    /// A hex SHA-256 (64 hex digits, any case), lowercased; or an error naming the field and how to make one.
    private static func digest(_ value: Any, at: String, hint: String) throws(Invalid) -> String {
        guard let hash = (value as? String)?.lowercased(), hash.count == 64, hash.allSatisfy(\.isHexDigit) else {
            throw Invalid(description: "\(at) must be 64 hex digits (\(hint))")
        }
        return hash
    }

    private static func onlyKeys(_ object: [String: Any], _ allowed: Set<String>, at: String) throws(Invalid) {
        if let unknown = object.keys.filter({ !allowed.contains($0) }).sorted().first {
            throw Invalid(description: "\(at): unknown key \"\(unknown.quotable)\" (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    private static func strings(_ value: Any?, at: String) throws(Invalid) -> [String] {
        guard let value else { return [] }
        guard let list = value as? [Any] else { throw Invalid(description: "\(at) must be a list of strings") }
        return try list.map { (item: Any) throws(Invalid) -> String in
            guard let text = item as? String, !text.isEmpty, text.utf8.count <= CoreLimits.identifierBytesMax else {
                throw Invalid(description: "\(at) must hold non-empty strings of at most \(CoreLimits.identifierBytesMax) bytes")
            }
            return text
        }
    }
}

extension String {
    /// Padded on the left with zeros to `length` characters.
    package func leftPadded(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}
