/// The header block being decoded, counted as RFC 9113 §6.5.2 counts a header list (each field's name
/// and value octets as libnghttp2 decoded them, plus 32) before any of it becomes a String.
///
/// HPACK lets a few bytes of input name a large entry of the dynamic table again and again (a
/// 4,000-byte value inserted once, then referenced by one byte per field), so the bytes received do not
/// bound the work a block costs: this does. Within `H2Limits.headerListBytesMax` and `headerFieldsMax` a
/// field is kept; past them it is dropped without becoming a String (the request is answered 431, as the
/// state machine would answer it); past `abuseFactor` times them the block is abuse: the connection is
/// closed with GOAWAY ENHANCE_YOUR_CALM (a client told SETTINGS_MAX_HEADER_LIST_SIZE has no reason to
/// send it), and libnghttp2 skips its checks and callbacks for the rest of the block (it still decodes
/// its HPACK, as it must to keep the table in step, until the connection closes).
package struct H2HeaderBudget: Equatable {
    package enum Verdict: Equatable {
        case keep, drop, abusive
    }

    package static let abuseFactor = 4
    package private(set) var bytes = 0
    package private(set) var fields = 0

    package init() {}

    /// A new header block (a HEADERS frame) begins.
    mutating func reset() {
        bytes = 0
        fields = 0
    }

    /// Counts one field of `nameBytes` and `valueBytes` octets; what to do with it.
    package mutating func count(nameBytes: Int, valueBytes: Int, limits: H2Limits) -> Verdict {
        bytes = bytes.addingSaturating(nameBytes).addingSaturating(valueBytes).addingSaturating(32)
        fields = fields.addingSaturating(1)
        if bytes <= limits.headerListBytesMax && fields <= limits.headerFieldsMax { return .keep }
        let (bytesCeiling, bytesOver) = limits.headerListBytesMax.multipliedReportingOverflow(by: Self.abuseFactor)
        let (fieldsCeiling, fieldsOver) = limits.headerFieldsMax.multipliedReportingOverflow(by: Self.abuseFactor)
        if (bytesOver || bytes <= bytesCeiling) && (fieldsOver || fields <= fieldsCeiling) { return .drop }
        return .abusive
    }
}
