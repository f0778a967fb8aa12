import GRPCCore
@testable import LockstepClient
import Testing

/// Which failed writes may have been carried out (`LockstepClient.mayHaveRun`): what decides whether the
/// CLI may run a command again on the next server. The end-to-end cases are in `CLIEndToEndTests`.
@Suite struct ClientEffectsTests {
    func answered(_ code: String) -> RPCError {
        RPCError(code: .failedPrecondition, message: "\(code): …", metadata: ["lockstep-error-code": .string(code)])
    }

    @Test func aServersAnswerSaysWhetherTheWriteMayHaveRun() {
        // Refused before or instead of running it.
        for code in ["not_writer", "shutting_down", "storage_unavailable", "writes_stopped", "no_active_lease", "permission_denied", "invalid_argument"] {
            #expect(!LockstepClient.mayHaveRun(answered(code)), "\(code)")
        }
        // The outcome left open: the commit's outcome unknown; the server's deadline passed while the
        // work went on; an answer that could not be encoded after the work was done.
        for code in ["commit_outcome_unknown", "deadline_exceeded", "internal", "unknown", "cancelled"] {
            #expect(LockstepClient.mayHaveRun(answered(code)), "\(code)")
        }
    }

    @Test func onlyATransportFailureBeforeTheRequestLeftRulesItOut() {
        // As grpc-swift-nio-transport words a call that never left…
        for message in ["Could not establish a connection to [ipv4]127.0.0.1:1.",
                        "Channel is in a transient failure state and 'wait for ready' isn't enabled.",
                        "Channel isn't ready, no subchannel available.", "Transport is shut down."] {
            #expect(!LockstepClient.mayHaveRun(RPCError(code: .unavailable, message: message)), "\(message)")
        }
        // …and one lost on the way: the request may have been carried out.
        for message in ["The TCP connection was dropped unexpectedly.", "Stream unexpectedly closed.", "connection closed"] {
            #expect(LockstepClient.mayHaveRun(RPCError(code: .unavailable, message: message)), "\(message)")
        }
        // A deadline the client set, with no answer at all.
        #expect(LockstepClient.mayHaveRun(RPCError(code: .deadlineExceeded, message: "Timed out waiting for response")))
    }
}
