import LockstepPostgres
import LockstepTestSupport
import Testing

/// `--store postgres://…`: what is accepted, and a specific refusal for everything else.
struct PostgresAddressTests {
    @Test func aFullAddressIsReadPartByPart() throws {
        let address = try PostgresAddress.parse("postgresql://lock%40step@db.internal:6543/lockstep_prod?sslmode=verify-full")
        #expect(address == PostgresAddress(username: "lock@step", host: "db.internal", port: 6543, database: "lockstep_prod", tls: .verifyFull))
        #expect(address.description == "postgres://lock%40step@db.internal:6543/lockstep_prod?sslmode=verify-full")
        let short = try PostgresAddress.parse("postgres://app@10.0.0.7/events")
        #expect(short.port == 5432 && short.tls == .prefer && short.description == "postgres://app@10.0.0.7:5432/events")
        let v6 = try PostgresAddress.parse("postgres://app@[::1]:5433/events?sslmode=disable")
        #expect(v6.host == "::1" && v6.port == 5433 && v6.tls == .disable && v6.description == "postgres://app@[::1]:5433/events?sslmode=disable")
    }

    @Test(arguments: [
        ("postgres://app:secret@db/events", "carries a password"),
        ("postgres://app:@db/events", "carries a password"),
        ("mysql://app@db/events", "must start with postgres://"),
        ("db:5432/events", "must start with postgres://"),
        ("postgres://app@db", "names no database"),
        ("postgres://app@db/", "names no database"),
        ("postgres://db/events", "names no user"),
        ("postgres://@db/events", "names no user"),
        ("postgres://app@/events", "host must be a name or an IP address"),
        ("postgres://app@db host/events", "host must be a name or an IP address"),
        ("postgres://app@db:0/events", "port must be 1...65535"),
        ("postgres://app@db:65536/events", "port must be 1...65535"),
        ("postgres://app@db:+5432/events", "port must be 1...65535"),
        ("postgres://app@db:/events", "port must be 1...65535"),
        ("postgres://app@db:99999999999999999999/events", "port must be 1...65535"),
        ("postgres://app@[::1/events", "unclosed ["),
        ("postgres://app@[::1]x:5432/events", "text after its [host]"),
        ("postgres://app@db/events?sslmode=maybe", "sslmode must be one of"),
        ("postgres://app@db/events?application_name=x", "only parameter is sslmode"),
        ("postgres://app@db/events/more", "may not contain / or @"),
        ("postgres://app@db/ev%zzents", "bad %-escape"),
        ("postgres://app@db/ev%0aents", "without control characters"),
        ("postgres://app@db/ev%ffents", "without control characters"),
        ("postgres://app@db/" + String(repeating: "d", count: 64), "longer than 63 bytes"),
        ("postgres://app@db/" + String(repeating: "d", count: 1_100), "longer than 1024 bytes"),
    ])
    func aBadAddressIsRefusedSayingWhy(text: String, reason: String) {
        #expect(throws: PostgresAddressError.self) { try PostgresAddress.parse(text) }
        do {
            _ = try PostgresAddress.parse(text)
        } catch {
            #expect(error.message.contains(reason), "\(text): \(error.message)")
            #expect(!error.message.contains("secret"), "a refusal must not repeat the password")
        }
    }

    /// Seeded mutations of valid addresses: every one parses or is refused; none traps.
    @Test func mutatedAddressesNeverTrap() async throws {
        var random = SeededGenerator(seed: 0x57_08E)
        let seeds = ["postgres://app@db.internal:6543/events?sslmode=require", "postgresql://a%20b@[fe80::1]:5432/x", "postgres://u@h/d"]
        let alphabet = Array("%:@/[]?&=0123456789abcdefABCDEF.-_ \u{0}\u{7F}é".unicodeScalars)
        var accepted = 0
        for round in 0..<20_000 {
            if round % 500 == 0 { await yieldToOtherTests() }
            var scalars = Array(seeds[round % seeds.count].unicodeScalars)
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: 0...scalars.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: scalars.insert(alphabet.randomElement(using: &random)!, at: position)
                case 1: if position < scalars.count { scalars.remove(at: position) }
                default: if position < scalars.count { scalars[position] = alphabet.randomElement(using: &random)! }
                }
            }
            var text = ""
            text.unicodeScalars.append(contentsOf: scalars)
            if let address = try? PostgresAddress.parse(text) {
                accepted += 1
                // What is accepted reads back to itself.
                #expect(try PostgresAddress.parse(address.description) == address, "\(text)")
            }
        }
        #expect(accepted > 100 && accepted < 20_000)
    }
}
