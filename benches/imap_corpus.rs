//! The benchmarks' corpus: deterministic customer mail, 2 KB of text in Japanese (ISO-2022-JP), Korean
//! (EUC-KR) or English (UTF-8), one in ten with a 50 KB attachment.
#![allow(dead_code)]

/// A deterministic mixed corpus.
/// The corpus as a stream, so that a benchmark never holds all of it in memory.
pub fn corpus_iter(n: usize, to: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    corpus_iter_from(n, to, |i| format!("c{i}@example.net"))
}

/// The same corpus with the customers' addresses given by `sender` (a benchmark whose acknowledgements go
/// through a real mail server needs addresses it delivers to).
pub fn corpus_iter_from<'a>(
    n: usize,
    to: &'a str,
    sender: impl Fn(usize) -> String + 'a,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let ja = "お世話になっております。先日注文した商品がまだ届いておりません。配送状況をご確認いただけますでしょうか。";
    let ko = "안녕하세요. 지난주에 주문한 상품이 아직 도착하지 않았습니다. 배송 상황을 확인해 주시겠습니까?";
    let en = "Hello, the order I placed last week has not arrived yet. Could you please check the delivery status? ";
    let attachment: String = {
        let bytes: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let b64 = base64_encode(&bytes);
        b64.as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    (0..n)
        .map(move |i| {
            let (charset, body): (&str, Vec<u8>) = match i % 3 {
                0 => ("ISO-2022-JP", encoding_rs::ISO_2022_JP.encode(&ja.repeat(14)).0.into_owned()),
                1 => ("EUC-KR", encoding_rs::EUC_KR.encode(&ko.repeat(14)).0.into_owned()),
                _ => ("UTF-8", en.repeat(20).into_bytes()),
            };
            let from = sender(i);
            let head = format!(
                "Return-Path: <{from}>\r\nReceived: from mx.example.net by mail.example.com; Sat, 21 Nov 2026 09:00:00 +0000\r\nFrom: Customer {i} <{from}>\r\nTo: {to}\r\nSubject: order {i}\r\nMessage-ID: <bench{i}@example.net>\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            );
            let mut raw = head.into_bytes();
            if i % 10 == 0 {
                raw.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset={charset}\r\n\r\n").as_bytes());
                raw.extend_from_slice(&body);
                raw.extend_from_slice(format!("\r\n--b{i}\r\nContent-Type: application/octet-stream; name=\"log{i}.bin\"\r\nContent-Disposition: attachment; filename=\"log{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b{i}--\r\n").as_bytes());
            } else {
                raw.extend_from_slice(format!("Content-Type: text/plain; charset={charset}\r\n\r\n").as_bytes());
                raw.extend_from_slice(&body);
                raw.extend_from_slice(b"\r\n");
            }
            raw
        })
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The whole corpus in memory.
pub fn corpus(n: usize, to: &str) -> Vec<Vec<u8>> {
    corpus_iter(n, to).collect()
}
