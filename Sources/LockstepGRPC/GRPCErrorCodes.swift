import GRPCCore
import LockstepService

/// Every gRPC error leaves with a stable code in its `lockstep-error-code` trailing metadata, also those
/// raised outside Lockstep's handlers: a request that does not decode (grpc-swift's own error names a
/// Swift type and carries no code) is `malformed_request` with a sentence naming the proto message.
package struct GRPCErrorCodes: ServerInterceptor {
    package init() {}

    package func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let response: StreamingServerResponse<Output>
        do {
            response = try await next(request, context)
        } catch let error as RPCError {
            throw Self.coded(error, method: context.descriptor)
        }
        if case .failure(let error) = response.accepted {
            return StreamingServerResponse(error: Self.coded(error, method: context.descriptor))
        }
        return response
    }

    /// `error` with a code in its metadata: its own if it has one, else one for its status.
    package static func coded(_ error: RPCError, method: MethodDescriptor) -> RPCError {
        guard error.metadata[stringValues: "lockstep-error-code"].first(where: { _ in true }) == nil else { return error }
        let code: String
        var message = error.message
        switch error.code {
        case .invalidArgument:
            code = "malformed_request"
            if message.hasPrefix("Can't deserialize") {
                message = "the request to \(method.fullyQualifiedMethod) is not a valid protobuf message of its request type"
            }
        case .cancelled: code = "cancelled"
        case .deadlineExceeded: code = "deadline_exceeded"
        case .resourceExhausted: code = "overloaded"
        case .unavailable: code = "unavailable"
        case .unimplemented: code = "unimplemented"
        default: code = "internal"
        }
        var metadata = error.metadata
        metadata.addString(code, forKey: "lockstep-error-code")
        return RPCError(code: error.code, message: "\(code): \(message)", metadata: metadata)
    }
}
