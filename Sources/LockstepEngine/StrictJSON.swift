import Foundation
import LockstepCore

/// A JSON object from outside, read as Foundation's `JSONSerialization` reads it, less what that parser
/// would read wrongly without a word: an object holding a key twice (it keeps the last copy; see
/// `JSONKeys`). Every JSON file and line Lockstep reads goes through here: the auth config, the console's
/// sign-in, the checkpoint keys and checkpoint lines, archive segments, history bundles' lines, the
/// webhook cursor file. A bundle's or segment's header line is read by `HistoryBundle.Header`, which
/// takes it only when it is its own canonical form (a key given twice never is); the API's bodies,
/// decoded by swift-protobuf, are checked by `JSONKeys` itself, with field names compared as fields.
public enum StrictJSON {
    /// Why bytes are not a JSON object this reads; its description is a predicate ("is not JSON").
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// Not JSON: the parser's explanation.
        case notJSON(String)
        /// JSON, but not an object.
        case notAnObject
        /// An object in it holds `key` twice.
        case repeated(key: String)

        public var description: String {
            switch self {
            case .notJSON: "is not JSON"
            case .notAnObject: "is not a JSON object"
            case .repeated(let key): "names \"\(key.quotable)\" twice in one object"
            }
        }
    }

    /// The object `bytes` hold, or why they hold none.
    public static func object(_ bytes: some Collection<UInt8>) throws(Refusal) -> [String: Any] {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw .notJSON(error.localizedDescription)
        }
        guard let object = root as? [String: Any] else { throw .notAnObject }
        // After the parse: the scan follows a document's structure and does not check it.
        if let key = JSONKeys.firstRepeated(in: bytes) { throw .repeated(key: key) }
        return object
    }
}
