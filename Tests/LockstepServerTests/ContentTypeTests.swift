@testable import LockstepHTTP
import Testing

/// The content type every JSON request with a body must carry (`HTTPRoutes.isJSON`, read in place on
/// every request): one that begins with `application/json`, its ASCII letters in any case; no byte
/// that only looks like one of them.
@Suite struct ContentTypeTests {
    @Test(arguments: [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("Application/JSON", true),
        ("APPLICATION/JSON;charset=UTF-8", true),
        ("application/jsonx", true),  // a prefix, as the route has always read it
        ("application/js", false),
        ("", false),
        ("text/plain", false),
        (" application/json", false),
        ("application\u{0F}json", false),  // a control byte one bit from "/"
        ("applicAtion/json\u{0}", true),
        ("\u{FF21}pplication/json", false),  // a full-width A
        ("application/x-www-form-urlencoded", false),
    ])
    func onlyJSONIsJSON(type: String, json: Bool) {
        #expect(HTTPRoutes.isJSON(type) == json, "\(type.debugDescription)")
        #expect(((try? HTTPRoutes.checkContentType(type)) != nil) == json)
    }
}
