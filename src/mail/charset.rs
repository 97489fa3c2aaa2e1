//! Second opinions on charsets, for the cases mail-parser (even with `full_encoding`) gets wrong.
//!
//! mail-parser trusts the `charset=` label. Real mail lies in a few well-known ways, all common in Japan,
//! Korea and China: ISO-2022-JP text with no label at all (old feature phones, some mailing-list software),
//! UTF-8 bytes labelled ISO-2022-JP (broken webmail), and unlabelled 8-bit text in a legacy charset. These
//! functions look at the bytes and, where the label is missing or plainly wrong, decode them again with
//! `encoding_rs`, saying what they guessed so the ticket can record it.

use encoding_rs::{
    Encoding, BIG5, EUC_JP, EUC_KR, GB18030, ISO_2022_JP, SHIFT_JIS, UTF_8, WINDOWS_1252,
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
    let l = label.trim().to_ascii_lowercase();
    l.starts_with("iso-2022-jp") || l == "csiso2022jp"
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

/// Decode `bytes` with `encoding`, returning `None` when any byte sequence is malformed for it.
fn decode_strict(encoding: &'static Encoding, bytes: &[u8]) -> Option<String> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|c| c.into_owned())
}

/// Decode ISO-2022-JP bytes, leniently.
pub fn decode_iso2022jp(bytes: &[u8]) -> String {
    ISO_2022_JP
        .decode_without_bom_handling(bytes)
        .0
        .into_owned()
}

/// Guess the charset of unlabelled (or mislabelled) 8-bit text. Candidates are tried in an order that
/// favours the region's language, since the same bytes can be valid in several East Asian charsets.
/// Returns the text and the name of the charset used.
pub fn guess_decode(bytes: &[u8], hint: Locale) -> (String, &'static str) {
    if looks_like_iso2022jp(bytes) {
        return (decode_iso2022jp(bytes), "ISO-2022-JP");
    }
    if let Some(s) = decode_strict(UTF_8, bytes) {
        return (s, "UTF-8");
    }
    let order: &[&'static Encoding] = match hint {
        Locale::Ja => &[SHIFT_JIS, EUC_JP, EUC_KR, GB18030, BIG5],
        Locale::Ko => &[EUC_KR, SHIFT_JIS, EUC_JP, GB18030, BIG5],
        Locale::Zh => &[GB18030, BIG5, SHIFT_JIS, EUC_JP, EUC_KR],
        Locale::En => &[SHIFT_JIS, EUC_KR, GB18030, EUC_JP, BIG5],
    };
    for enc in order {
        if let Some(s) = decode_strict(enc, bytes) {
            return (s, enc.name());
        }
    }
    // windows-1252 decodes every byte, so this always ends the search.
    (
        WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
        "windows-1252",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn weak_labels() {
        assert!(is_weak_label(None));
        assert!(is_weak_label(Some("US-ASCII")));
        assert!(!is_weak_label(Some("Shift_JIS")));
        assert!(is_iso2022jp_label("ISO-2022-JP"));
        assert!(is_iso2022jp_label("iso-2022-jp-2"));
    }
}
