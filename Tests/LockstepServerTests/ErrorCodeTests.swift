import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
@testable import LockstepServer
import LockstepStore
import Testing
@testable import LockstepService
@testable import LockstepHTTP

/// One list of error codes, shared by server, client and agent: the docs' table says what the code
/// says (HTTP and gRPC status), every code the server sends is documented, and the transient ones are
/// the ones the docs call transient.
@Suite struct ErrorCodeTests {
    static let apiDoc = DocExamplesTests.repository.appendingPathComponent("docs/api.md")

    /// Every answer's sentence writes what it quotes of a request with its control characters escaped
    /// (docs/api.md, "Errors"): once, where an `APIError` is made, not at each place that quotes.
    @Test func anErrorsSentenceQuotesControlCharactersEscaped() {
        #expect(APIError(.invalidArgument, "lease_id \"a\u{1B}[2J\nb\" is not MIGRATION/NODE").message == #"lease_id "a\u{1B}[2J\u{A}b" is not MIGRATION/NODE"#)
        #expect(APIError.invalid("x\u{202E}y").body.message == #"x\u{202E}y"#)
    }

    /// The rows of docs/api.md's error table: (HTTP status, gRPC status or nil, the codes it names).
    static func documentedRows() throws -> [(http: Int, grpc: String?, codes: [String])] {
        let text = try String(contentsOf: apiDoc, encoding: .utf8)
        guard let section = text.components(separatedBy: "\n## Errors\n").dropFirst().first?.components(separatedBy: "\n## ").first else {
            Issue.record("docs/api.md has no Errors section"); return []
        }
        return section.split(separator: "\n").compactMap { line -> (Int, String?, [String])? in
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4, let http = Int(cells[1]) else { return nil }
            let grpc = cells[2].hasPrefix("`") ? cells[2].trimmingCharacters(in: ["`"]) : nil
            return (http, grpc, backticked(cells[3]))
        }
    }

    static func backticked(_ text: some StringProtocol) -> [String] {
        text.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    @Test func theDocumentedTableSaysWhatEachCodeSays() throws {
        let rows = try Self.documentedRows()
        #expect(rows.count >= 10)
        var documented = Set<ErrorCode>()
        for row in rows {
            for name in row.codes where name.contains("_") || ErrorCode(rawValue: name) != nil {
                guard let code = ErrorCode(rawValue: name), name == name.lowercased() else {
                    if name == name.lowercased() && !name.contains("-") && !name.contains("/") { Issue.record("docs/api.md names \(name), which is no ErrorCode") }
                    continue
                }
                documented.insert(code)
                let kind = APIError.Kind(code)
                #expect(kind.httpStatus == row.http, "\(name) is documented as HTTP \(row.http); the server answers \(kind.httpStatus)")
                if let grpc = row.grpc {
                    let answered = LockstepClientError.transportCode(kind.rpcCode).rawValue.uppercased()
                    #expect(answered == grpc, "\(name) is documented as gRPC \(grpc); the server answers \(answered)")
                }
            }
        }
        // Every code the server can send is in the table (`invalid_request` never leaves it: it becomes invalid_argument).
        let sendable = ErrorCode.allCases.filter { !$0.isTransportOnly && $0 != .invalidRequest }
        let missing = sendable.filter { !documented.contains($0) }.map(\.rawValue)
        #expect(missing.isEmpty, "codes the server sends that docs/api.md does not list: \(missing)")
    }

    @Test func theTransientCodesAreTheDocumentedOnes() throws {
        let text = try String(contentsOf: Self.apiDoc, encoding: .utf8)
        guard let paragraph = text.components(separatedBy: "**Transient codes**").dropFirst().first?.components(separatedBy: "\n\n").first else {
            Issue.record("docs/api.md does not list the transient codes"); return
        }
        let listed = Set(Self.backticked(paragraph).compactMap(ErrorCode.init(rawValue:)).filter { $0 != .staleFencingToken })
        #expect(listed == Set(ErrorCode.allCases.filter(\.isTransient)))
        // The client reads them the same way, whoever made the code up.
        #expect(LockstepClientError(code: "deadline_exceeded", message: "").isTransient)
        #expect(LockstepClientError(code: "storage_busy", message: "").isTransient)
        #expect(!LockstepClientError(code: "stale_fencing_token", message: "").isTransient)
        #expect(!LockstepClientError(code: "a_code_from_a_newer_server", message: "").isTransient)
    }

    /// A gRPC status without a Lockstep code is named in snake case: the agent's retry of a deadline
    /// never matched before (Swift spells the status `deadlineExceeded`, lowercased `deadlineexceeded`).
    @Test func theClientNamesTransportFailuresAsTheProtocolDoes() {
        #expect(LockstepClientError.transportCode(.deadlineExceeded) == .deadlineExceeded)
        #expect(LockstepClientError.transportCode(.deadlineExceeded).rawValue == "deadline_exceeded")
        #expect(LockstepClientError.transportCode(.unavailable).isTransient)
        #expect(LockstepClientError.transportCode(.resourceExhausted).rawValue == "resource_exhausted")
        #expect(LockstepClientError.transportCode(.internalError).rawValue == "internal")
    }

    /// The log spells its codes itself (it knows nothing of the API); they are the shared list's.
    @Test func theLogsCodesAreInTheSharedList() {
        let errors: [EventLogError] = [
            .versionConflict(stream: "s", expected: 1, actual: 2), .corrupted(position: 1, reason: "r"), .writesStopped(reason: "r"),
            .outcomeUnknown(reason: "r"), .overloaded("r"), .storageFull, .busy, .invalidRequest("r"), .unavailable("r"),
        ]
        for error in errors { #expect(error.errorCode.rawValue == error.code) }
        #expect(CommandError.overloaded(stream: "migration/m", waitingMax: 1).errorCode == .migrationOverloaded)
        // Every refusal of the core is FAILED_PRECONDITION unless the docs' table says otherwise.
        #expect(APIError(CommandError.storage(.invalidRequest("too big"))).errorCode == .invalidArgument)
    }
}
