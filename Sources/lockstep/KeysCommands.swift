import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine

// `lockstep keys` (issue 21, docs/history.md): the Ed25519 key a coordinator signs checkpoints with, and
// the keys-file entry verifiers check them against.

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make and show checkpoint signing keys (docs/history.md, Signed checkpoints).",
        subcommands: [Generate.self, Show.self]
    )
}

extension KeysCommand {
    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new signing key (mode 0600) and print its entry for a keys file.",
            discussion: """
                The entry is what `history verify --public-key FILE` reads: {"keys": [ENTRY, ...]}. To rotate, \
                give the old entry a valid_until_ms and add the new one with --valid-from then.
                """)

        @Option(help: "Where to write the private key (refused if it exists).") var privateKey: String
        @Option(help: "From when the key is valid (ISO 8601; default: now).") var validFrom: InstantArgument?

        func run() async throws {
            let signer = CheckpointSigner.generate()
            try await reportingFailures {
                do { try signer.write(to: privateKey) } catch {
                    throw CommandFailure(message: "\(error)", exitCode: "\(error)".contains("never overwritten") ? 1 : 2)
                }
            }
            let from = validFrom.map { Instant(millisecondsSinceEpoch: $0.millis == 0 ? WallClock.now().millisecondsSinceEpoch : $0.millis) } ?? WallClock.now()
            print(CheckpointKeys(keys: [.init(publicKey: signer.publicKey, validFrom: from)]).json)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the keys-file entry of a signing key: its id and public key.")

        @Option(help: "The private key file.") var privateKey: String
        @Option(help: "From when the key is valid (ISO 8601; default: the epoch).") var validFrom: InstantArgument?
        @Option(help: "Until when the key is valid (ISO 8601; default: still valid).") var validUntil: InstantArgument?

        func run() async throws {
            let signer = try await reportingFailures {
                do { return try CheckpointSigner(file: privateKey) } catch {
                    // 66 for a file that cannot be read; one read that is no key is refused (1).
                    throw CommandFailure(message: "\(error)", exitCode: FileManager.default.isReadableFile(atPath: privateKey) ? 1 : 66)
                }
            }
            let from = Instant(millisecondsSinceEpoch: validFrom?.millis ?? 0)
            let until = validUntil.map { Instant(millisecondsSinceEpoch: $0.millis) }
            if let until, until <= from { throw ValidationError("--valid-until must be after --valid-from") }
            print(CheckpointKeys(keys: [.init(publicKey: signer.publicKey, validFrom: from, validUntil: until)]).json)
        }
    }
}
