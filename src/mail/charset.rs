//! Charset labels and charset detection: what a label really means, and what unlabelled bytes are.
//!
//! mail-parser trusts the `charset=` label and knows only the standard names. Real mail lies in well-known
//! ways, all common in Japan, Korea and China: labels no standard lists (`x-sjis`, `cp932`, `ks_c_5601`,
//! Python's own `eucgb2312_cn`, `unicode-1-1-utf-7`), no label at all, `unknown-8bit`, UTF-8 bytes labelled
//! ISO-2022-JP, and raw 8-bit header and file-name bytes in the sender's legacy charset. [`lookup`] maps a
//! label to a WHATWG encoding (encoding_rs) through an alias table; [`decode`] decodes bytes under a label
//! and, when the label is missing, unknown or plainly wrong, detects the charset with chardetng (the
//! detector Firefox uses), saying what it guessed so the ticket can record it.

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{
    Encoding, BIG5, EUC_JP, EUC_KR, GB18030, GBK, ISO_2022_JP, REPLACEMENT, SHIFT_JIS, UTF_8,
};

use crate::types::Locale;

/// Escape sequences that only ISO-2022-JP text contains (JIS X 0208-1978/1983, JIS X 0212, JIS X 0201 Roman).
const JIS_ESCAPES: [&[u8]; 5] = [b"\x1b$B", b"\x1b$@", b"\x1b$(D", b"\x1b(J", b"\x1b(I"];

/// Whether 7-bit bytes carry ISO-2022-JP escape sequences.
pub fn looks_like_iso2022jp(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b)
        && JIS_ESCAPES
            .iter()
            .any(|esc| bytes.windows(esc.len()).any(|w| w == *esc))
}

/// Whether a label names ISO-2022-JP (or one of its variants).
pub fn is_iso2022jp_label(label: &str) -> bool {
    matches!(lookup(label), Charset::Known(e) if e == ISO_2022_JP)
}

/// Whether a label is missing or says nothing more than ASCII/UTF-8 (so a better guess may be made).
pub fn is_weak_label(label: Option<&str>) -> bool {
    match label {
        None => true,
        Some(l) => {
            let l = l.trim().to_ascii_lowercase();
            l.is_empty()
                || l == "us-ascii"
                || l == "ascii"
                || l == "utf-8"
                || l == "utf8"
                || l == "unknown-8bit"
                || l == "x-unknown"
        }
    }
}

/// What a charset label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    Known(&'static Encoding),
    /// RFC 2152 UTF-7 (Outlook Express's "Unicode (UTF-7)"): encoding_rs has none; mail-parser's decoder is used.
    Utf7,
    /// No usable label (`unknown-8bit`, `x-unknown`, a name nobody knows): the bytes are detected.
    Unknown,
}

/// Labels real mail software writes that the WHATWG list (`Encoding::for_label`) does not know, or maps in a
/// way that is wrong for mail. Matched after lower-casing and trimming.
const ALIASES: &[(&str, Option<&Encoding>)] = &[
    // Python's email package writes `eucgb2312_cn` for GB2312; EUC-CN is GB2312 is a subset of GBK.
    ("eucgb2312_cn", Some(GBK)),
    ("euc-cn", Some(GBK)),
    ("euccn", Some(GBK)),
    ("x-euc-cn", Some(GBK)),
    ("gb_2312", Some(GBK)),
    ("gb-2312", Some(GBK)),
    ("gb2312-80", Some(GBK)),
    ("cp936", Some(GBK)),
    ("ms936", Some(GBK)),
    ("windows-936", Some(GBK)),
    ("gb-18030", Some(GB18030)),
    ("cp54936", Some(GB18030)),
    ("windows-54936", Some(GB18030)),
    // Shift_JIS as Windows (CP932) and old Macs and Java write it.
    ("cp932", Some(SHIFT_JIS)),
    ("ms932", Some(SHIFT_JIS)),
    ("x-ms-cp932", Some(SHIFT_JIS)),
    ("windows-932", Some(SHIFT_JIS)),
    ("cp943", Some(SHIFT_JIS)),
    ("cp943c", Some(SHIFT_JIS)),
    ("ibm-943", Some(SHIFT_JIS)),
    ("shift_jisx0213", Some(SHIFT_JIS)),
    ("shift_jis-2004", Some(SHIFT_JIS)),
    ("x-mac-japanese", Some(SHIFT_JIS)),
    ("eucjp", Some(EUC_JP)),
    ("eucjp-ms", Some(EUC_JP)),
    ("euc-jp-ms", Some(EUC_JP)),
    ("euc-jisx0213", Some(EUC_JP)),
    ("ujis", Some(EUC_JP)),
    ("x-euc", Some(EUC_JP)),
    // Every ISO-2022-JP variant mail carries; encoding_rs decodes the common subset of all of them.
    ("iso-2022-jp-1", Some(ISO_2022_JP)),
    ("iso-2022-jp-2", Some(ISO_2022_JP)),
    ("iso-2022-jp-3", Some(ISO_2022_JP)),
    ("iso-2022-jp-2004", Some(ISO_2022_JP)),
    ("iso-2022-jp-ms", Some(ISO_2022_JP)),
    ("x-iso-2022-jp", Some(ISO_2022_JP)),
    ("iso2022jp", Some(ISO_2022_JP)),
    ("jis", Some(ISO_2022_JP)),
    ("cp50220", Some(ISO_2022_JP)),
    ("cp50221", Some(ISO_2022_JP)),
    ("cp50222", Some(ISO_2022_JP)),
    ("x-cp50220", Some(ISO_2022_JP)),
    ("x-cp50221", Some(ISO_2022_JP)),
    ("x-cp50222", Some(ISO_2022_JP)),
    // Korean: the Unified Hangul Code of Windows (CP949) is what encoding_rs's EUC-KR decodes.
    ("ks_c_5601", Some(EUC_KR)),
    ("ks_c_5601-1989", Some(EUC_KR)),
    ("x-windows-949", Some(EUC_KR)),
    ("windows-949", Some(EUC_KR)),
    ("cp949", Some(EUC_KR)),
    ("ms949", Some(EUC_KR)),
    ("uhc", Some(EUC_KR)),
    ("x-uhc", Some(EUC_KR)),
    ("euckr", Some(EUC_KR)),
    ("x-euc-kr", Some(EUC_KR)),
    ("cp950", Some(BIG5)),
    ("ms950", Some(BIG5)),
    ("windows-950", Some(BIG5)),
    ("big5hkscs", Some(BIG5)),
    ("x-big5", Some(BIG5)),
    ("utf8", Some(UTF_8)),
    ("x-utf8", Some(UTF_8)),
    ("utf-8-sig", Some(UTF_8)),
    // Labels that say nothing: detect.
    ("unknown-8bit", None),
    ("x-unknown", None),
    ("unknown", None),
    ("8bit", None),
    ("default", None),
    ("none", None),
];

const UTF7_LABELS: &[&str] = &[
    "utf-7",
    "utf7",
    "csutf7",
    "unicode-1-1-utf-7",
    "unicode-2-0-utf-7",
    "x-unicode-2-0-utf-7",
];

/// What `label` names: the WHATWG encoding, an alias real software writes, UTF-7, or nothing known.
pub fn lookup(label: &str) -> Charset {
    let l = label.trim().trim_matches(['"', '\'']).trim();
    if l.is_empty() || l.len() > 64 {
        return Charset::Unknown;
    }
    // The common case first, without an allocation: a WHATWG label (matched case-insensitively). No alias
    // below means something else than WHATWG's reading of the same label.
    if let Some(e) = Encoding::for_label_no_replacement(l.as_bytes()) {
        return Charset::Known(e);
    }
    let l = l.to_ascii_lowercase();
    if UTF7_LABELS.contains(&l.as_str()) {
        return Charset::Utf7;
    }
    let alias = |l: &str| ALIASES.iter().find(|(name, _)| *name == l).map(|(_, e)| *e);
    let whatwg = |l: &str| Encoding::for_label_no_replacement(l.as_bytes());
    let found = alias(&l).or_else(|| whatwg(&l).map(Some)).or_else(|| {
        // `iso_8859-1`, `iso8859_15`, `shift-jis`: the same names with `_` and `-` swapped.
        let swapped = l.replace('_', "-");
        alias(&swapped)
            .or_else(|| whatwg(&swapped).map(Some))
            .or_else(|| whatwg(&l.replace('-', "_")).map(Some))
            .or_else(|| {
                swapped
                    .strip_prefix("iso")
                    .filter(|r| r.starts_with("8859"))
                    .and_then(|r| whatwg(&format!("iso-{r}")).map(Some))
            })
    });
    match found {
        Some(Some(e)) if e != REPLACEMENT => Charset::Known(e),
        _ => Charset::Unknown,
    }
}

/// The top-level domain chardetng takes as its hint for a language (see [`detect`]).
pub fn tld_of_locale(locale: Locale) -> Option<&'static [u8]> {
    match locale {
        Locale::Ja => Some(b"jp"),
        Locale::Ko => Some(b"kr"),
        Locale::Zh => Some(b"cn"),
        Locale::En => None,
    }
}

/// The language a declared charset implies, as a chardetng hint: a mail whose body is declared
/// ISO-2022-JP was written on a Japanese system, so its raw 8-bit file name is most likely Shift_JIS.
pub fn tld_of_label(label: &str) -> Option<&'static [u8]> {
    match lookup(label) {
        Charset::Known(e) if e == ISO_2022_JP || e == SHIFT_JIS || e == EUC_JP => Some(b"jp"),
        Charset::Known(e) if e == EUC_KR => Some(b"kr"),
        Charset::Known(e) if e == GBK || e == GB18030 => Some(b"cn"),
        Charset::Known(e) if e == BIG5 => Some(b"tw"),
        _ => None,
    }
}

/// What the detector may lean on when the bytes alone do not decide: the language the mail itself implies
/// (its declared CJK charsets), else the region's. Never more than a tie-breaker (see [`detect`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hint {
    pub tld: Option<&'static [u8]>,
}

impl Hint {
    pub fn of_locale(locale: Locale) -> Hint {
        Hint {
            tld: tld_of_locale(locale),
        }
    }
}

/// Below this many non-ASCII bytes the detector's own guess is not trusted over the hint's (see [`detect`]).
const SHORT_INPUT: usize = 32;

/// The charset of unlabelled 8-bit bytes, by chardetng.
///
/// chardetng is fed the whole input and asked twice: without a TLD (its generic guess) and, when the hint
/// has one, with the hint's TLD. They agree on most text. They disagree on short input: on a file name of
/// 10–20 bytes the generic guess is often wrong (GBK `附件.zip` comes out EUC-KR, GBK `見積書.xlsx`
/// windows-1252, EUC-JP `附件.zip` windows-1255), while the TLD guess picks the region's own encoding for
/// anything that decodes in it (a GBK sentence at a `jp` desk becomes Shift_JIS). So the hint is a
/// tie-breaker: with [`SHORT_INPUT`] non-ASCII bytes or more, or when the TLD guess does not decode the
/// bytes cleanly, the generic guess stands; below that the TLD guess wins, unless the generic guess is a
/// Latin charset and the bytes look Latin (a lone 8-bit byte between ASCII letters, as in `r\xe9sum\xe9`),
/// which double-byte text never does in practice.
pub fn detect(bytes: &[u8], hint: Hint) -> &'static Encoding {
    if std::str::from_utf8(bytes).is_ok() {
        return if bytes.is_ascii() && looks_like_iso2022jp(bytes) {
            ISO_2022_JP
        } else {
            UTF_8
        };
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Allow);
    detector.feed(bytes, true);
    let generic = detector.guess(None, Utf8Detection::Allow);
    let Some(tld) = hint.tld else {
        return generic;
    };
    let regional = detector.guess(Some(tld), Utf8Detection::Allow);
    if regional == generic {
        return generic;
    }
    let non_ascii = bytes.iter().filter(|b| !b.is_ascii()).count();
    if non_ascii >= SHORT_INPUT || decode_strict(regional, bytes).is_none() {
        return generic;
    }
    if generic.is_single_byte() && lone_high_byte_between_letters(bytes) {
        return generic;
    }
    regional
}

fn lone_high_byte_between_letters(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w[0].is_ascii_alphabetic() && !w[1].is_ascii() && w[2].is_ascii_alphabetic())
}

/// Decode `bytes` with `encoding`, returning `None` when any byte sequence is malformed for it.
fn decode_strict(encoding: &'static Encoding, bytes: &[u8]) -> Option<String> {
    let bytes = jis_normalised(encoding, bytes);
    encoding
        .decode_without_bom_handling_and_without_replacement(&bytes)
        .map(|c| c.into_owned())
}

fn decode_lenient(encoding: &'static Encoding, bytes: &[u8]) -> String {
    let bytes = jis_normalised(encoding, bytes);
    encoding.decode_without_bom_handling(&bytes).0.into_owned()
}

/// ISO-2022-JP without escape sequences that another one follows at once. The WHATWG decoder reports
/// such a pair as an error (U+FFFD), and mail has it wherever two encoded words are joined (each ends in
/// ASCII, `ESC ( B`, and the next starts with `ESC $ B`) and wherever a client switched state twice.
fn jis_normalised<'a>(encoding: &'static Encoding, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if encoding != ISO_2022_JP || !bytes.contains(&0x1b) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let escape_len = |at: &[u8]| -> usize {
        match at {
            [0x1b, b'$', b'(', b'D', ..] => 4,
            [0x1b, b'(', b'B' | b'J' | b'I', ..] | [0x1b, b'$', b'@' | b'B', ..] => 3,
            _ => 0,
        }
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let n = escape_len(&bytes[i..]);
        if n > 0 && bytes.get(i + n) == Some(&0x1b) && escape_len(&bytes[i + n..]) > 0 {
            i += n;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Decode ISO-2022-JP bytes, leniently.
pub fn decode_iso2022jp(bytes: &[u8]) -> String {
    decode_lenient(ISO_2022_JP, bytes)
}

fn decode_utf7(bytes: &[u8]) -> String {
    match mail_parser::decoders::charsets::map::charset_decoder(b"utf-7") {
        Some(decoder) => decoder(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Guess the charset of unlabelled (or mislabelled) 8-bit text with [`detect`], the region's language as the
/// tie-breaker. Returns the text and the name of the charset used.
pub fn guess_decode(bytes: &[u8], hint: Locale) -> (String, &'static str) {
    let encoding = detect(bytes, Hint::of_locale(hint));
    (decode_lenient(encoding, bytes), encoding.name())
}

/// Text decoded under a label, and what was guessed on the way (for `damage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    /// Set when the label was not used as it stands: missing, unknown, or wrong for the bytes.
    pub guess: Option<String>,
}

/// Decode `bytes` as the `label` says, or, when it says nothing usable or the bytes are malformed for it,
/// as [`detect`] finds. Linear in the input (one strict decode, at most one detection and one more decode).
pub fn decode(label: Option<&str>, bytes: &[u8], hint: Hint) -> Decoded {
    let clean = |text: String| Decoded { text, guess: None };
    let weak = label.is_none_or(|l| {
        let l = l.trim().to_ascii_lowercase();
        l.is_empty() || l == "us-ascii" || l == "ascii"
    });
    let charset = label.map(lookup).unwrap_or(Charset::Unknown);
    if bytes.is_ascii() && !(bytes.contains(&0x1b) && looks_like_iso2022jp(bytes)) {
        return match charset {
            Charset::Utf7 => clean(decode_utf7(bytes)),
            // UTF-16 is the one label under which ASCII-range bytes are not ASCII text.
            Charset::Known(e) if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE => {
                clean(e.decode(bytes).0.into_owned())
            }
            _ => clean(String::from_utf8_lossy(bytes).into_owned()),
        };
    }
    let detected = |why: String| {
        let e = detect(bytes, hint);
        Decoded {
            text: decode_lenient(e, bytes),
            guess: Some(format!("{} ({why})", e.name())),
        }
    };
    let shown = |l: Option<&str>| {
        let l: String = l.unwrap_or("").chars().take(40).collect();
        format!("{l:?}")
    };
    // Past the early return above, 7-bit bytes are ISO-2022-JP escapes.
    let jis = bytes.is_ascii();
    let e = match charset {
        // Valid UTF-8 under no label or an ASCII one is UTF-8 (RFC 6532), not a guess.
        _ if weak && !jis && std::str::from_utf8(bytes).is_ok() => {
            return clean(String::from_utf8_lossy(bytes).into_owned())
        }
        // Raw ISO-2022-JP under a UTF-8 label (old webmail) is ISO-2022-JP: its escapes say so.
        _ if weak || (jis && charset == Charset::Known(UTF_8)) => {
            return detected(match label {
                None => "no charset declared".into(),
                Some(_) => format!("declared {} but 8-bit", shown(label)),
            })
        }
        Charset::Utf7 => return clean(decode_utf7(bytes)),
        Charset::Unknown => return detected(format!("unknown charset label {}", shown(label))),
        Charset::Known(e) => e,
    };
    // Latin-1 text is practically never valid multi-byte UTF-8 by accident; UTF-8 labelled Latin-1 (or
    // ISO-2022-JP: broken webmail) is common.
    if (e.is_single_byte() || e == ISO_2022_JP) && e != UTF_8 && !bytes.is_ascii() {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return Decoded {
                text: s.to_string(),
                guess: Some(format!("UTF-8 (labelled {} but was UTF-8)", e.name())),
            };
        }
    }
    if let Some(text) = decode_strict(e, bytes) {
        return clean(text);
    }
    // A few bad sequences under a label that fits the rest (base64 cut inside a character, one stray
    // byte) are damage to the text, not a wrong label.
    let lenient = decode_lenient(e, bytes);
    let bad = lenient.matches('\u{FFFD}').count();
    let non_ascii = bytes.iter().filter(|b| !b.is_ascii()).count().max(1);
    if bad * 50 <= non_ascii {
        return clean(lenient);
    }
    let found = detect(bytes, hint);
    match (found != e).then(|| decode_strict(found, bytes)).flatten() {
        Some(text) => Decoded {
            text,
            guess: Some(format!(
                "{} (labelled {} but not valid {})",
                found.name(),
                shown(label),
                e.name()
            )),
        },
        None => clean(lenient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::WINDOWS_1252;

    #[test]
    fn detects_jis_escapes() {
        let (bytes, _, _) = ISO_2022_JP.encode("日本語のテキスト");
        assert!(looks_like_iso2022jp(&bytes));
        assert!(!looks_like_iso2022jp(b"plain ascii \x1b[0m colour code"));
        assert_eq!(decode_iso2022jp(&bytes), "日本語のテキスト");
    }

    #[test]
    fn guesses_by_region_hint() {
        let (sjis, _, _) = SHIFT_JIS.encode("お問い合わせ");
        assert_eq!(
            guess_decode(&sjis, Locale::Ja),
            ("お問い合わせ".to_string(), "Shift_JIS")
        );
        let (euckr, _, _) = EUC_KR.encode("문의드립니다");
        assert_eq!(guess_decode(&euckr, Locale::Ko).0, "문의드립니다");
        let (gb, _, _) = GB18030.encode("您好，我的订单");
        assert_eq!(guess_decode(&gb, Locale::Zh).0, "您好，我的订单");
        assert_eq!(guess_decode("déjà".as_bytes(), Locale::En).1, "UTF-8");
    }

    /// Issue 15 (3): a GBK body at a desk whose locale is `en` was read as EUC-KR by the locale-ordered loop.
    #[test]
    fn a_gbk_body_at_an_english_desk_is_detected_as_gbk_not_euc_kr() {
        let text = "您好，我的订单还没有到，请帮我查一下物流信息。谢谢！";
        let (gbk, _, _) = GBK.encode(text);
        for locale in [Locale::En, Locale::Ja, Locale::Ko, Locale::Zh] {
            let (s, cs) = guess_decode(&gbk, locale);
            assert_eq!((s.as_str(), cs), (text, "GBK"), "{locale:?}");
        }
    }

    /// What chardetng does on a file name's few bytes: the generic guess alone is wrong for some; the hint
    /// decides there, and never overrides Latin-looking bytes.
    #[test]
    fn short_inputs_use_the_hint_only_as_a_tie_breaker() {
        let jp = Hint { tld: Some(b"jp") };
        let cn = Hint { tld: Some(b"cn") };
        let none = Hint::default();
        let (sjis, _, _) = SHIFT_JIS.encode("見積書.xlsx");
        assert_eq!(detect(&sjis, none), SHIFT_JIS);
        assert_eq!(detect(&sjis, jp), SHIFT_JIS);
        let (gbk, _, _) = GBK.encode("附件.zip");
        assert_eq!(detect(&gbk, cn), GBK);
        let (eucjp, _, _) = EUC_JP.encode("附件.zip");
        assert_eq!(detect(&eucjp, jp), EUC_JP);
        let (latin, _, _) = WINDOWS_1252.encode("résumé.pdf");
        for hint in [none, jp, cn] {
            assert_eq!(detect(&latin, hint), WINDOWS_1252);
        }
        let (latin, _, _) = WINDOWS_1252.encode("Grüße aus München");
        assert_eq!(detect(&latin, jp), WINDOWS_1252);
    }

    #[test]
    fn weak_labels() {
        assert!(is_weak_label(None));
        assert!(is_weak_label(Some("US-ASCII")));
        assert!(!is_weak_label(Some("Shift_JIS")));
        assert!(is_iso2022jp_label("ISO-2022-JP"));
        assert!(is_iso2022jp_label("iso-2022-jp-2"));
        assert!(is_iso2022jp_label("csISO2022JP"));
    }

    /// Issue 15 (2): labels real software writes, outside the standard list, were decoded as Latin-1.
    #[test]
    fn charset_labels_outside_the_standard_list_map_to_their_encodings() {
        for (label, want) in [
            ("eucgb2312_cn", GBK),
            ("x-sjis", SHIFT_JIS),
            ("x-euc-jp", EUC_JP),
            ("cp932", SHIFT_JIS),
            ("MS932", SHIFT_JIS),
            ("x-windows-949", EUC_KR),
            ("ks_c_5601", EUC_KR),
            ("ks_c_5601-1987", EUC_KR),
            ("gb_2312-80", GBK),
            ("x-gbk", GBK),
            ("csISO2022JP", ISO_2022_JP),
            ("\"iso_8859-1\"", WINDOWS_1252),
            ("iso8859_15", encoding_rs::ISO_8859_15),
        ] {
            assert_eq!(lookup(label), Charset::Known(want), "{label}");
        }
        assert_eq!(lookup("unicode-1-1-utf-7"), Charset::Utf7);
        assert_eq!(lookup("UTF-7"), Charset::Utf7);
        for unknown in ["unknown-8bit", "x-unknown", "klingon", "iso-2022-kr", ""] {
            assert_eq!(lookup(unknown), Charset::Unknown, "{unknown}");
        }
        let (gb, _, _) = GBK.encode("增值税专用发票的开具问题，请尽快回复。");
        let d = decode(Some("eucgb2312_cn"), &gb, Hint::default());
        assert_eq!(d.text, "增值税专用发票的开具问题，请尽快回复。");
        assert_eq!(d.guess, None);
        let d = decode(Some("unknown-8bit"), &gb, Hint::default());
        assert_eq!(d.text, "增值税专用发票的开具问题，请尽快回复。");
        assert!(d.guess.unwrap().starts_with("GBK"));
        assert_eq!(
            decode(Some("unicode-1-1-utf-7"), b"+ZeVnLIqe-", Hint::default()).text,
            "日本語"
        );
    }

    #[test]
    fn no_alias_shadows_a_whatwg_label() {
        for (alias, ours) in ALIASES {
            let whatwg = Encoding::for_label_no_replacement(alias.as_bytes());
            assert!(whatwg.is_none() || whatwg == *ours, "{alias}");
        }
    }

    #[test]
    fn a_wrong_label_is_corrected_and_said() {
        let d = decode(
            Some("iso-2022-jp"),
            "お世話になります".as_bytes(),
            Hint::default(),
        );
        assert_eq!(d.text, "お世話になります");
        assert!(d.guess.unwrap().contains("was UTF-8"));
        let (sjis, _, _) = SHIFT_JIS.encode("お世話になっております。よろしくお願いします。");
        let d = decode(Some("iso-2022-jp"), &sjis, Hint::default());
        assert_eq!(d.text, "お世話になっております。よろしくお願いします。");
        assert!(d.guess.unwrap().starts_with("Shift_JIS"));
        let (jis, _, _) = ISO_2022_JP.encode("お世話になります");
        let d = decode(Some("utf-8"), &jis, Hint::default());
        assert_eq!(d.text, "お世話になります");
        assert!(d.guess.unwrap().starts_with("ISO-2022-JP"));
        // A right label stays unremarked.
        let d = decode(Some("shift_jis"), &sjis, Hint::default());
        assert_eq!(d.guess, None);
    }
}
