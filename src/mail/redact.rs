//! Card numbers out of stored text.
//!
//! Customers paste payment card numbers into support mail; a helpdesk must not keep them (PCI DSS, and every
//! privacy law's data minimisation). [`mask_card_numbers`] finds runs of 13–19 digits that pass the Luhn
//! check and replaces every digit but the last four with `*`, keeping the separators the writer typed:
//!
//! ```text
//! 4111 1111 1111 1111   ->  **** **** **** 1111
//! 4111-1111-1111-1111   ->  ****-****-****-1111
//! 378282246310005       ->  ***********0005
//! ```
//!
//! What counts as a card number:
//! - digits (ASCII or full-width `０`–`９`, as Japanese and Chinese input methods type them), optionally in
//!   groups separated by one space or one dash;
//! - 13 to 19 digits in all, first digit 2–6 (the major industry identifiers of Mastercard, Amex, JCB, Diners,
//!   Visa, Discover and UnionPay: this spares most order and account numbers, which would pass the Luhn
//!   check one time in ten), and a valid Luhn check digit;
//! - not glued to Latin letters (`INV4111111111111111` is an identifier, not a card; `番号は4111…です` is a
//!   card number in a Japanese sentence).
//!
//! A longer run of groups (a phone number typed right before a card number) is searched for a window of
//! whole groups that is a card number. Dates, phone numbers and short numbers are never touched. The
//! function is pure and total: any input, no panic, and text without a card number comes back borrowed.

use std::borrow::Cow;

/// The digit value of an ASCII or full-width digit.
fn digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        '０'..='９' => Some(c as u32 - '０' as u32),
        _ => None,
    }
}

/// The Luhn check over digits, most significant first.
pub fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if !i.is_multiple_of(2) {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Latin letters glued to digits make an identifier (`INV4111…`); CJK text glued to them does not, as
/// CJK writing puts no spaces between words.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// The most digits a card number has.
const MAX_DIGITS: usize = 19;

fn looks_like_card(digits: &[u32]) -> bool {
    (13..=MAX_DIGITS).contains(&digits.len())
        && matches!(digits.first(), Some(2..=6))
        && luhn_valid(digits)
}

/// A group of digits: its chars' positions (indexes into the char vector) and values.
struct Group {
    start: usize,
    end: usize, // exclusive
    digits: Vec<u32>,
}

/// Mask every card number in `text` (see the module docs). Borrowed when nothing was masked.
pub fn mask_card_numbers(text: &str) -> Cow<'_, str> {
    // Fast path: most text has no run of 13 digits at all.
    if text.chars().filter(|c| digit(*c).is_some()).count() < 13 {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut masked: Vec<bool> = vec![false; chars.len()];
    let mut any = false;
    let mut i = 0;
    while i < chars.len() {
        if digit(chars[i]).is_none() {
            i += 1;
            continue;
        }
        // A run: groups of digits separated by exactly one ' ' or '-'.
        let glued_before = i > 0 && is_word_char(chars[i - 1]);
        let mut groups: Vec<Group> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            let mut digits = Vec::new();
            while j < chars.len() {
                match digit(chars[j]) {
                    Some(d) => digits.push(d),
                    None => break,
                }
                j += 1;
            }
            groups.push(Group {
                start,
                end: j,
                digits,
            });
            let continues = j + 1 < chars.len()
                && matches!(chars[j], ' ' | '-')
                && digit(chars[j + 1]).is_some();
            if !continues {
                break;
            }
            j += 1;
        }
        let glued_after = j < chars.len() && is_word_char(chars[j]);
        // Windows of whole groups, longest first from each start. A card has at most 19 digits, so only
        // the windows that short are tried: at most 19 per start, and the run costs time linear in its
        // length (trying every window was cubic in a long run of one-digit groups).
        let mut g = 0;
        while g < groups.len() {
            let mut found = None;
            let mut last = g;
            let mut total = groups[g].digits.len();
            while last + 1 < groups.len() && total + groups[last + 1].digits.len() <= MAX_DIGITS {
                last += 1;
                total += groups[last].digits.len();
            }
            for h in (g..=last).rev() {
                let touches_letters =
                    (g == 0 && glued_before) || (h == groups.len() - 1 && glued_after);
                if touches_letters {
                    continue;
                }
                let digits: Vec<u32> = groups[g..=h]
                    .iter()
                    .flat_map(|x| x.digits.iter().copied())
                    .collect();
                if looks_like_card(&digits) {
                    found = Some((h, digits.len()));
                    break;
                }
            }
            match found {
                Some((h, total)) => {
                    let mut seen = 0;
                    for group in &groups[g..=h] {
                        for flag in &mut masked[group.start..group.end] {
                            if seen < total - 4 {
                                *flag = true;
                            }
                            seen += 1;
                        }
                    }
                    any = true;
                    g = h + 1;
                }
                None => g += 1,
            }
        }
        i = j.max(i + 1);
    }
    if !any {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        chars
            .iter()
            .zip(&masked)
            .map(|(&c, &m)| if m { '*' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_card_numbers_are_masked_keeping_the_last_four() {
        // Visa, Mastercard, Mastercard 2-series, Amex, JCB, Discover test numbers.
        for (card, want) in [
            ("4111111111111111", "************1111"),
            ("4111 1111 1111 1111", "**** **** **** 1111"),
            ("5555-5555-5555-4444", "****-****-****-4444"),
            ("2223003122003222", "************3222"),
            ("3782 822463 10005", "**** ****** *0005"),
            ("3530111333300000", "************0000"),
            ("6011111111111117", "************1117"),
            ("4222222222222", "*********2222"),
        ] {
            assert_eq!(mask_card_numbers(card), want, "{card}");
            let sentence = format!("my card is {card}, please refund");
            assert_eq!(
                mask_card_numbers(&sentence),
                format!("my card is {want}, please refund")
            );
        }
    }

    #[test]
    fn numbers_in_cjk_text_are_masked_full_width_too() {
        assert_eq!(
            mask_card_numbers("カード番号は4111111111111111です。"),
            "カード番号は************1111です。"
        );
        assert_eq!(
            mask_card_numbers("卡号：４１１１ １１１１ １１１１ １１１１，谢谢"),
            "卡号：**** **** **** １１１１，谢谢"
        );
        assert_eq!(
            mask_card_numbers("카드 5555555555554444 로 결제했습니다"),
            "카드 ************4444 로 결제했습니다"
        );
    }

    #[test]
    fn other_numbers_are_untouched() {
        for text in [
            "4111111111111112",               // Luhn fails
            "order 1234567890123456 shipped", // Luhn fails
            "order 1000000000000009",         // Luhn passes, but no card starts with 1
            "call 090-1234-5678 or +81 3 1234 5678",
            "on 2026-11-20 at 10:30",
            "invoice INV4111111111111111",
            "ref 4111111111111111X",
            "12345",
            "4111 1111 1111 111",      // 15 digits, Luhn fails
            "41111111111111111111111", // too long, no group structure
        ] {
            assert!(
                matches!(mask_card_numbers(text), Cow::Borrowed(_)),
                "{text} -> {}",
                mask_card_numbers(text)
            );
        }
    }

    #[test]
    fn a_card_right_after_a_phone_number_is_found() {
        assert_eq!(
            mask_card_numbers("tel 03 1234 5678 4111 1111 1111 1111"),
            "tel 03 1234 5678 **** **** **** 1111"
        );
    }

    #[test]
    fn a_long_run_of_digit_groups_is_masked_in_linear_time() {
        // Every window of groups was collected and checked: cubic in the run's length.
        let run = "1 ".repeat(20_000);
        let text = format!("{run}4111 1111 1111 1111 {run}");
        let started = std::time::Instant::now();
        let out = mask_card_numbers(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(
            out.contains("**** **** **** 1111"),
            "the card is still found"
        );
        assert_eq!(out.chars().count(), text.chars().count());
        let digits = "1-".repeat(200_000);
        let started = std::time::Instant::now();
        assert!(matches!(mask_card_numbers(&digits), Cow::Borrowed(_)));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut seed = 0x1234_5678_u64;
        let alphabet: Vec<char> = "0123456789０１２３４ -a漢\n\u{0}é".chars().collect();
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let out = mask_card_numbers(&s);
            assert_eq!(out.chars().count(), s.chars().count());
        }
    }
}
