import Foundation
import LockstepCore
import Testing

/// `JSONKeys.firstRepeated`: a key an object holds twice is found however it is written, and nothing
/// else is taken for one.
@Suite struct JSONKeysTests {
    func repeated(_ json: String) -> String? { JSONKeys.firstRepeated(in: Array(json.utf8)) }

    @Test func aKeyWrittenTwiceInOneObjectIsFound() {
        #expect(repeated(#"{"a": 1, "a": 2}"#) == "a")
        #expect(repeated(#"{"roles": ["agent"], "name": "x", "roles": ["admin"]}"#) == "roles")
        #expect(repeated(#"{"principals": [{"name": "a"}, {"name": "b", "token_sha256": "1", "token_sha256": "2"}]}"#) == "token_sha256")
        #expect(repeated(#"{"outer": {"inner": {"a": 1, "b": {}, "a": [1, {"a": 2}]}}}"#) == "a")
    }

    @Test func aKeyIsComparedByTheTextItStandsFor() {
        #expect(repeated(#"{"a": 1, "\u0061": 2}"#) == "a")
        #expect(repeated(#"{"tab\t": 1, "tab\u0009": 2}"#) == "tab\t")
        #expect(repeated(#"{"\ud83d\ude00": 1, "😀": 2}"#) == "😀")
        #expect(repeated(#"{"a\/b": 1, "a/b": 2}"#) == "a/b")
        // As a [String: Any] compares them: canonically equivalent keys are one key.
        #expect(repeated(#"{"é": 1, "e\u0301": 2}"#) == "é")
        // Lone surrogates stand for U+FFFD: the same key twice.
        #expect(repeated(#"{"\ud800": 1, "\udc00": 2}"#) == "\u{FFFD}")
    }

    @Test func nothingElseIsTakenForARepeatedKey() {
        #expect(repeated(#"{"a": 1, "b": {"a": 2}, "c": [{"a": 1}, {"a": 2}]}"#) == nil)
        #expect(repeated(#"{"a": "a", "b": "a", "c": ["a", "a"]}"#) == nil)
        #expect(repeated(#"{"a": "x\", \"a\": {", "b": "\\", "c": 1}"#) == nil)
        #expect(repeated(#"[{"a": 1}, {"a": 1}, "a", "a"]"#) == nil)
        #expect(repeated(#"{"A": 1, "a": 2, "a ": 3, "\u00e9": 4, "e": 5}"#) == nil)
        #expect(repeated(#""a""#) == nil)
    }

    @Test func asProtobufFieldsAProtoNameAndItsJSONNameAreOneKey() {
        func field(_ json: String) -> String? { JSONKeys.firstRepeated(in: Array(json.utf8), protobufFields: true) }
        #expect(field(#"{"lease_id": "a", "leaseId": "b"}"#) == "leaseId")
        #expect(field(#"{"fencing_token": "1", "lease_id": "a", "fencing_token": "2"}"#) == "fencingToken")
        #expect(field(#"{"step": {"wait_ms": 1, "waitMs": 2}}"#) == "waitMs")
        #expect(field(#"{"lease\u005fid": "a", "leaseId": "b"}"#) == "leaseId")
        #expect(field(#"{"lease_id": "a", "fencing_token": "b", "leaseid": "c"}"#) == nil)
        #expect(field(#"{"a_1": 1, "a1": 2}"#) == "a1")
        // As text they are different keys.
        #expect(repeated(#"{"lease_id": "a", "leaseId": "b"}"#) == nil)
    }

    @Test func anObjectOfManyKeysIsCheckedWhole() {
        // 50,000 keys (a 1 MiB body holds about that many): sorted per object, not compared pairwise.
        let keys = (0..<50_000).map { #""k\#($0)": 1"# }
        #expect(repeated("{" + keys.joined(separator: ", ") + "}") == nil)
        #expect(repeated("{" + (keys + [#""k31337": 2"#]).joined(separator: ", ") + "}") == "k31337")
        // A key with an escape anywhere: the whole document is read as text, with the same answer.
        #expect(repeated("{" + (keys + [#""k31337": 2"#, #""\u00e9": 3"#]).joined(separator: ", ") + "}") == "k31337")
    }

    @Test func anyBytesAreAnsweredWithoutATrap() {
        // Not JSON: followed as far as it goes, never trapping (deep nesting included: no recursion).
        for text in [#"{"a"#, #"{"a": "\u"#, #"{"a": "\ud83d"#, "}}]]", String(repeating: "[{", count: 100_000), #"{"\"#] {
            _ = repeated(text)
        }
        // Bytes drawn from JSON's punctuation (a fixed xorshift sequence: the same run everywhere).
        let alphabet = [UInt8](#"{}[]",:\u0d8_a"#.utf8)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2_000 {
            let bytes = (0..<64).map { _ -> UInt8 in
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                return alphabet[Int(state % UInt64(alphabet.count))]
            }
            _ = JSONKeys.firstRepeated(in: bytes)
            _ = JSONKeys.firstRepeated(in: bytes, protobufFields: true)
        }
    }

    @Test func everyJSONThatFoundationParsesWithoutARepeatedKeyIsPassed() throws {
        // Foundation's output never repeats a key: round trips of nested values come back nil.
        let values: [Any] = [["a": 1, "b": ["a": [1, 2, ["a": "\"}"]]], "c\u{0}": "x"], [["k": 1], ["k": 2]], ["😀": ["é": true]]]
        for value in values {
            #expect(JSONKeys.firstRepeated(in: [UInt8](try JSONSerialization.data(withJSONObject: value))) == nil)
        }
    }
}

/// The API bodies' duplicate check compares keys as protobuf field names (`protobufFields`), which is
/// right only while every key of a request is a field name: no map field (its keys are free text, and
/// `a_b` and `aB` would be two keys taken for one) and no custom `json_name` (a third name for a field).
@Suite struct RequestProtosTests {
    @Test func theProtosHaveNoMapFieldsAndNoCustomJSONNames() throws {
        let protos = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Protos").standardized
        let files = try #require(FileManager.default.enumerator(atPath: protos.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".proto") }
        #expect(files.count >= 2, "the protos were not found at \(protos.path)")
        for file in files {
            let text = try String(contentsOf: protos.appendingPathComponent(file), encoding: .utf8)
            for kind in ["map<", "json_name", "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.Any"] {
                #expect(!text.contains(kind), "\(file) uses \(kind): JSONKeys.firstRepeated(protobufFields:) would misjudge its keys")
            }
        }
    }
}
