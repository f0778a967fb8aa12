import LockstepEngine
import Testing

/// `StrictJSON`: a JSON object as `JSONSerialization` reads it, refused when one of its objects (at any
/// depth) holds a key twice, or when it is not JSON or not an object; each refusal says which.
@Suite struct StrictJSONTests {
    @Test func anObjectIsReadAndWhatIsNotOneIsRefusedSayingWhy() throws {
        let object = try StrictJSON.object(Array(#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#.utf8))
        #expect(object.keys.sorted() == ["a", "b", "c"])
        #expect(throws: StrictJSON.Refusal.notAnObject) { try StrictJSON.object(Array("[1, 2]".utf8)) }
        let notJSON = #expect(throws: StrictJSON.Refusal.self) { try StrictJSON.object(Array(#"{"a": "#.utf8)) }
        guard case .notJSON = notJSON else { Issue.record("\(String(describing: notJSON))"); return }
        #expect(notJSON?.description == "is not JSON")
    }

    @Test(arguments: [
        (#"{"roles": ["auditor"], "roles": ["admin"]}"#, "roles"),
        (#"{"outer": {"k": 1, "\u006b": 2}}"#, "k"),
        (#"{"list": [{"x": 1}, {"y": 1, "y": 2}]}"#, "y"),
    ])
    func aKeyGivenTwiceAnywhereIsRefusedByName(_ json: String, _ key: String) {
        #expect(throws: StrictJSON.Refusal.repeated(key: key)) { try StrictJSON.object(Array(json.utf8)) }
        #expect(StrictJSON.Refusal.repeated(key: key).description == "names \"\(key)\" twice in one object")
    }
}
